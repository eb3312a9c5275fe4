//! The table `scan --output text` prints: a row per workload with what it needs, then
//! the summary per namespace and for the cluster.

use std::io::{self, Write};

use super::summary::{Counts, Summary};
use super::{Verdict, WorkloadReport};
use dhi_policy::{MAX_LISTED, PatchedBy};

/// Writes the workloads (in the order given) and the summary.
pub fn write(
    out: &mut impl Write,
    reports: &[WorkloadReport],
    summary: &Summary,
) -> io::Result<()> {
    let mut rows = vec![row(&[
        "NAMESPACE",
        "KIND",
        "NAME",
        "MODE",
        "VERDICT",
        "PODS",
    ])];
    let mut details = Vec::with_capacity(reports.len());
    for report in reports {
        let name = match &report.owner {
            Some(owner) => format!("{} (of {} {})", report.name, owner.kind, owner.name),
            None => report.name.clone(),
        };
        rows.push(vec![
            report.namespace.clone(),
            report.kind.to_string(),
            name,
            report.mode.as_str().to_owned(),
            report.verdict.as_str().to_owned(),
            report.pods.to_string(),
        ]);
        details.push(detail(report));
    }
    let widths = widths(&rows);
    for (i, cells) in rows.iter().enumerate() {
        write_row(out, cells, &widths)?;
        if i > 0 {
            for line in &details[i - 1] {
                writeln!(out, "    {line}")?;
            }
        }
    }
    writeln!(out)?;
    write_summary(out, summary)
}

/// The lines under a workload's row: violations with their fixes, the patch, and the
/// hardened equivalent of each upstream image.
fn detail(report: &WorkloadReport) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(reason) = &report.not_reviewed {
        lines.push(format!("not reviewed: {reason}"));
        return lines;
    }
    for v in report.violations.iter().take(MAX_LISTED) {
        lines.push(v.to_string());
    }
    if report.violations.len() > MAX_LISTED {
        lines.push(format!(
            "and {} more violations",
            report.violations.len() - MAX_LISTED
        ));
    }
    if !report.patch.is_empty() {
        let n = report.patch.len();
        let who = match report.patched_by {
            PatchedBy::Object => "applied to it by the webhook",
            PatchedBy::Pods => "applied by the webhook to the pods it creates",
            PatchedBy::None => "not applied by the webhook",
        };
        lines.push(format!(
            "patch: {n} operation{} ({who})",
            if n == 1 { "" } else { "s" }
        ));
    }
    for image in report.images.iter().take(MAX_LISTED) {
        lines.push(format!(
            "image {}: {} -> {}",
            image.container,
            image.image,
            image.equivalent.describe()
        ));
    }
    if report.verdict == Verdict::Hardened {
        lines.clear();
    }
    lines
}

fn write_summary(out: &mut impl Write, summary: &Summary) -> io::Result<()> {
    let mut rows = vec![row(&[
        "NAMESPACE",
        "WORKLOADS",
        "PODS",
        "HARDENED",
        "READY",
        "NEEDS-FIX",
        "DENIED",
        "NOT-REVIEWED",
        "EQUIVALENT",
        "OTHER-TAG",
        "NO-EQUIVALENT",
    ])];
    for (namespace, counts) in &summary.namespaces {
        rows.push(counts_row(namespace, counts));
    }
    rows.push(counts_row("(cluster)", &summary.cluster));
    let widths = widths(&rows);
    for cells in &rows {
        write_row(out, cells, &widths)?;
    }
    Ok(())
}

fn counts_row(name: &str, c: &Counts) -> Vec<String> {
    let mut cells = vec![name.to_owned()];
    cells.extend(
        [
            c.workloads,
            c.pods,
            c.already_hardened,
            c.ready_to_enforce,
            c.needs_fix,
            c.denied,
            c.not_reviewed,
            c.has_equivalent,
            c.equivalent_other_tag,
            c.no_equivalent,
        ]
        .map(|n| n.to_string()),
    );
    cells
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths = Vec::new();
    for cells in rows {
        for (i, cell) in cells.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) if *w < len => *w = len,
                Some(_) => {}
                None => widths.push(len),
            }
        }
    }
    widths
}

fn write_row(out: &mut impl Write, cells: &[String], widths: &[usize]) -> io::Result<()> {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            writeln!(out, "{cell}")?;
        } else {
            write!(out, "{cell:<width$}  ")?;
        }
    }
    Ok(())
}
