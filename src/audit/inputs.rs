//! The engine the audit judges with: the policy file and the catalog, polled for changes
//! as the server polls them (a Secret or ConfigMap volume's `..data` swap escapes
//! per-file watches), and the runtime's port start detected from the nodes.
//!
//! A new version applies only once it parses; a broken one is logged once and the last
//! good engine stays in force, as in `server::reload`.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use dhi_policy::catalog::Snapshot;
use dhi_policy::{Engine, Mode, PolicyFile};

use super::metrics::PortStartSource;
use super::runtime::Detection;
use crate::catalog::MAX_CATALOG_BYTES;
use crate::config::{ActivePolicy, read_policy_bytes};

/// Where the policy and the catalog come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `--config`; the built-in policy when absent.
    pub policy: Option<PathBuf>,
    /// `--catalog`; the compiled-in snapshot when absent.
    pub catalog: Option<PathBuf>,
    /// `--mode`; wins over the policy file's.
    pub mode: Option<Mode>,
}

/// What changed files are recognised by: the policy's bytes (a few KB) and a digest of
/// the catalog's (about 1 MiB, not worth keeping twice).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    policy: Option<Vec<u8>>,
    catalog: Option<u64>,
}

/// One read of the files.
#[derive(Debug)]
pub struct Files {
    policy: Option<Vec<u8>>,
    catalog: Option<String>,
}

impl Files {
    /// What these contents are recognised by.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            policy: self.policy.clone(),
            catalog: self.catalog.as_deref().map(|text| {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(text, &mut h);
                std::hash::Hasher::finish(&h)
            }),
        }
    }
}

/// The parsed inputs, before the runtime detection is applied.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policy file as written.
    pub policy: PolicyFile,
    /// The mode the reports judge in.
    pub mode: Mode,
    /// The catalog snapshot, if a file replaces the compiled-in one.
    pub snapshot: Option<Arc<Snapshot>>,
}

impl Sources {
    /// Reads both files, bounded, without parsing them.
    pub fn read(&self) -> anyhow::Result<Files> {
        let policy = self.policy.as_deref().map(read_policy_bytes).transpose()?;
        let catalog = self
            .catalog
            .as_deref()
            .map(|path| {
                let cannot = |err| anyhow::anyhow!("cannot read catalog {}: {err}", path.display());
                let mut text = String::new();
                std::fs::File::open(path)
                    .map_err(cannot)?
                    .take(MAX_CATALOG_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(cannot)?;
                anyhow::ensure!(
                    text.len() as u64 <= MAX_CATALOG_BYTES,
                    "catalog {} is larger than {MAX_CATALOG_BYTES} bytes",
                    path.display()
                );
                Ok(text)
            })
            .transpose()?;
        Ok(Files { policy, catalog })
    }

    /// Parses what [`Sources::read`] returned.
    pub fn parse(&self, files: &Files) -> anyhow::Result<Loaded> {
        let active = match (&self.policy, &files.policy) {
            (Some(path), Some(bytes)) => ActivePolicy::from_bytes(path, bytes, self.mode)?,
            _ => ActivePolicy::new(PolicyFile::default(), self.mode),
        };
        let snapshot = match (&self.catalog, &files.catalog) {
            (Some(path), Some(text)) => {
                let origin = path.display().to_string();
                let snapshot = Snapshot::from_export(text, &origin)
                    .with_context(|| format!("catalog {origin}"))?;
                Some(Arc::new(snapshot))
            }
            _ => None,
        };
        Ok(Loaded {
            policy: active.engine.policy_file().clone(),
            mode: active.mode,
            snapshot,
        })
    }

    /// Reads and parses; the first load, where an error is fatal.
    pub fn load(&self) -> anyhow::Result<(Loaded, Fingerprint)> {
        let files = self.read()?;
        Ok((self.parse(&files)?, files.fingerprint()))
    }
}

/// The engine for the loaded inputs and the runtime detection (when enabled), and where
/// the port start it judges with comes from. The policy's own
/// `runtime.unprivilegedPortStart` wins over the detection: the admin said so.
pub fn build_engine(
    loaded: &Loaded,
    detection: Option<&Detection>,
) -> (Engine, PortStartSource, u16) {
    let mut policy = loaded.policy.clone();
    let source = match (
        policy.runtime.unprivileged_port_start,
        detection.and_then(Detection::port_start),
    ) {
        (Some(_), _) => PortStartSource::Policy,
        (None, Some(start)) => {
            policy.runtime.unprivileged_port_start = Some(start);
            PortStartSource::Detected
        }
        (None, None) => PortStartSource::Kernel,
    };
    let start = policy.runtime.unprivileged_port_start.unwrap_or(1024);
    let engine = match &loaded.snapshot {
        Some(snapshot) => Engine::with_snapshot(policy, snapshot.clone()),
        None => Engine::new(policy),
    };
    (engine, source, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(yaml: &str) -> Loaded {
        Loaded {
            policy: PolicyFile::from_yaml(yaml).unwrap(),
            mode: Mode::Enforce,
            snapshot: None,
        }
    }

    #[test]
    fn the_detection_feeds_the_policy_setting_unless_the_policy_sets_it() {
        let zero = Detection::Zero { nodes: 3 };
        let kernel = Detection::Kernel {
            reason: "node b runs cri-o://1.31.0".into(),
        };
        let (engine, source, start) = build_engine(&loaded(""), Some(&zero));
        assert_eq!((source, start), (PortStartSource::Detected, 0));
        assert_eq!(
            engine.policy_file().runtime.unprivileged_port_start,
            Some(0)
        );
        let (engine, source, start) = build_engine(&loaded(""), Some(&kernel));
        assert_eq!((source, start), (PortStartSource::Kernel, 1024));
        assert_eq!(engine.policy_file().runtime.unprivileged_port_start, None);
        let (_, source, start) = build_engine(&loaded(""), None);
        assert_eq!((source, start), (PortStartSource::Kernel, 1024));
        let (engine, source, start) = build_engine(
            &loaded("runtime: {unprivilegedPortStart: 1024}"),
            Some(&zero),
        );
        assert_eq!((source, start), (PortStartSource::Policy, 1024));
        assert_eq!(
            engine.policy_file().runtime.unprivileged_port_start,
            Some(1024)
        );
    }

    #[test]
    fn a_broken_policy_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "rules: {run-as-root: maybe}").unwrap();
        let sources = Sources {
            policy: Some(path.clone()),
            catalog: None,
            mode: None,
        };
        let err = sources.load().unwrap_err();
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
        std::fs::write(&path, "mode: audit").unwrap();
        let (loaded, files) = sources.load().unwrap();
        assert_eq!(loaded.mode, Mode::Audit);
        assert_eq!(sources.read().unwrap().fingerprint(), files);
    }
}
