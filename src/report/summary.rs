//! The counts at the end of a scan: per namespace, then for the cluster.

use std::collections::BTreeMap;

use serde::Serialize;

use dhi_policy::Equivalent;

use super::{Verdict, WorkloadReport};

/// Workloads by verdict, and their upstream images by what the catalog offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Workloads reported (pods reported through their owner are not counted again).
    pub workloads: usize,
    /// Running pods, whether reported on their own or through their owner.
    pub pods: usize,
    /// Every image hardened, nothing to patch.
    pub already_hardened: usize,
    /// Enforcing admits them (patched by the webhook where needed).
    pub ready_to_enforce: usize,
    /// Violations, admitted today because the namespace audits or warns.
    pub needs_fix: usize,
    /// Violations in an enforcing namespace: their next pods are refused.
    pub denied: usize,
    /// Not looked at (exempt, or `dhi.io/mode: off`).
    pub not_reviewed: usize,
    /// Upstream images (one per container) whose exact hardened equivalent the catalog lists.
    pub has_equivalent: usize,
    /// Upstream images whose repository the catalog has, but not their tag.
    pub equivalent_other_tag: usize,
    /// Upstream images with no hardened equivalent.
    pub no_equivalent: usize,
}

impl Counts {
    fn add(&mut self, report: &WorkloadReport) {
        self.workloads += 1;
        self.pods += report.pods;
        match report.verdict {
            Verdict::Hardened => self.already_hardened += 1,
            Verdict::Ready => self.ready_to_enforce += 1,
            Verdict::NeedsFix => self.needs_fix += 1,
            Verdict::Denied => self.denied += 1,
            Verdict::NotReviewed => self.not_reviewed += 1,
        }
        for image in &report.images {
            match image.equivalent {
                Equivalent::Exact { .. } => self.has_equivalent += 1,
                Equivalent::OtherTags { .. } => self.equivalent_other_tag += 1,
                Equivalent::None => self.no_equivalent += 1,
                // Not in a report: `judge` keeps upstream images only.
                Equivalent::Hardened | Equivalent::NotAnImage => {}
            }
        }
    }

    fn merge(&mut self, other: &Counts) {
        let Counts {
            workloads,
            pods,
            already_hardened,
            ready_to_enforce,
            needs_fix,
            denied,
            not_reviewed,
            has_equivalent,
            equivalent_other_tag,
            no_equivalent,
        } = other;
        self.workloads += workloads;
        self.pods += pods;
        self.already_hardened += already_hardened;
        self.ready_to_enforce += ready_to_enforce;
        self.needs_fix += needs_fix;
        self.denied += denied;
        self.not_reviewed += not_reviewed;
        self.has_equivalent += has_equivalent;
        self.equivalent_other_tag += equivalent_other_tag;
        self.no_equivalent += no_equivalent;
    }
}

/// The counts per namespace (sorted by name) and for the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Per namespace.
    pub namespaces: BTreeMap<String, Counts>,
    /// Every namespace together.
    pub cluster: Counts,
}

impl Summary {
    /// Counts the reports.
    pub fn of<'r>(reports: impl IntoIterator<Item = &'r WorkloadReport>) -> Self {
        let mut namespaces: BTreeMap<String, Counts> = BTreeMap::new();
        for report in reports {
            match namespaces.get_mut(&report.namespace) {
                Some(counts) => counts.add(report),
                None => {
                    let mut counts = Counts::default();
                    counts.add(report);
                    namespaces.insert(report.namespace.clone(), counts);
                }
            }
        }
        let mut cluster = Counts::default();
        for counts in namespaces.values() {
            cluster.merge(counts);
        }
        Self {
            namespaces,
            cluster,
        }
    }
}
