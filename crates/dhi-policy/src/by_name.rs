//! Look-ups by name into a pod spec, built on first use.
//!
//! A review may carry tens of thousands of containers, volumes and mounts (4 MiB of
//! them is a few hundred thousand). Scanning the volumes for every mount, or the old
//! pod for every container, would be quadratic: seconds of CPU for one hostile request.
//! Each index is built once per evaluation, and only if a rule asks.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use crate::patch::ContainerList;
use crate::spec::{ContainerView, SpecView};

/// The indexes over one pod spec (and the pod before an UPDATE).
pub(crate) struct ByName<'s> {
    spec: &'s SpecView<'s>,
    old: Option<&'s SpecView<'s>>,
    host_path_volumes: OnceCell<HashSet<&'s str>>,
    old_images: OnceCell<OldImages<'s>>,
}

/// The old pod's images by container name, one map per list; the first of a repeated
/// name wins, as a scan would find it.
#[derive(Default)]
struct OldImages<'s> {
    init: HashMap<&'s str, Option<&'s str>>,
    regular: HashMap<&'s str, Option<&'s str>>,
    ephemeral: HashSet<&'s str>,
}

impl<'s> ByName<'s> {
    pub(crate) fn new(spec: &'s SpecView<'s>, old: Option<&'s SpecView<'s>>) -> Self {
        Self {
            spec,
            old,
            host_path_volumes: OnceCell::new(),
            old_images: OnceCell::new(),
        }
    }

    /// Whether the container mounts a host path without `readOnly`.
    pub(crate) fn writes_host_path(&self, c: &ContainerView<'_>) -> bool {
        let writable = || {
            c.volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.read_only != Some(true))
        };
        if writable().next().is_none() {
            return false;
        }
        let host_paths = self.host_path_volumes.get_or_init(|| {
            self.spec
                .volumes
                .iter()
                .flatten()
                .filter(|v| v.host_path.is_some())
                .map(|v| v.name.as_ref())
                .collect()
        });
        writable().any(|m| host_paths.contains(m.name.as_ref()))
    }

    /// On an UPDATE of a pod, whether this container's image is not the one it had.
    pub(crate) fn switched_image(&self, c: &ContainerView<'_>, list: ContainerList) -> bool {
        let Some(old) = self.old_images() else {
            return false;
        };
        let before = match list {
            ContainerList::Init => &old.init,
            ContainerList::Regular => &old.regular,
            ContainerList::Ephemeral => return false,
        };
        before
            .get(c.name.as_ref())
            .is_some_and(|&image| image != c.image.as_deref())
    }

    /// An ephemeral container the pod already had before this UPDATE (by name, which the
    /// API server keeps unique and immutable).
    pub(crate) fn existed(&self, c: &ContainerView<'_>) -> bool {
        self.old_images()
            .is_some_and(|old| old.ephemeral.contains(c.name.as_ref()))
    }

    fn old_images(&self) -> Option<&OldImages<'s>> {
        let old = self.old?;
        Some(self.old_images.get_or_init(|| {
            let images = |list: &'s Option<Vec<ContainerView<'s>>>| {
                let mut by_name = HashMap::new();
                for c in list.iter().flatten() {
                    by_name
                        .entry(c.name.as_ref())
                        .or_insert_with(|| c.image.as_deref());
                }
                by_name
            };
            OldImages {
                init: images(&old.init_containers),
                regular: images(&old.containers),
                ephemeral: old
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| c.name.as_ref())
                    .collect(),
            }
        }))
    }
}
