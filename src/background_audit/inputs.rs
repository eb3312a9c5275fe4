//! The engine the audit judges with: the policy file and the catalog, polled for changes
//! as the server polls them (a Secret or ConfigMap volume's `..data` swap escapes
//! per-file watches), and the runtime's port start detected from the nodes.
//!
//! A new version applies only once it parses; a broken one is logged once and the last
//! good engine stays in force, as in `server::reload`.

use std::path::PathBuf;
use std::sync::Arc;

use dhi_policy::catalog::Snapshot;
use dhi_policy::{Engine, Mode, PolicyFile};

use super::metrics::PortStartSource;
use super::runtime::Detection;
use crate::policy_source::{
    ActivePolicy, Fingerprint, Input, PolicyArgs, SourceError, parse_catalog, read,
};

/// Where the policy and the catalog come from: `--config`, `--catalog` and `--mode`.
#[derive(Debug, Clone)]
pub(crate) struct Sources(pub(crate) PolicyArgs);

/// One read of the files.
#[derive(Debug)]
pub(crate) struct Files {
    policy: Option<Vec<u8>>,
    catalog: Option<Vec<u8>>,
}

impl Files {
    /// What these contents are recognised by.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of([self.policy.as_deref(), self.catalog.as_deref()])
    }
}

/// The parsed inputs, before the runtime detection is applied.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The policy file as written.
    pub(crate) policy: PolicyFile,
    /// The mode the reports judge in.
    pub(crate) mode: Mode,
    /// The catalog snapshot, if a file replaces the compiled-in one.
    pub(crate) snapshot: Option<Arc<Snapshot>>,
}

impl Sources {
    /// Reads both files, bounded, without parsing them.
    pub(crate) fn read(&self) -> Result<Files, SourceError> {
        let args = &self.0;
        let read_if = |path: &Option<PathBuf>, input| {
            path.as_deref().map(|path| read(input, path)).transpose()
        };
        Ok(Files {
            policy: read_if(&args.config, Input::Policy)?,
            catalog: read_if(&args.catalog, Input::Catalog)?,
        })
    }

    /// Parses what [`Sources::read`] returned.
    pub(crate) fn parse(&self, files: &Files) -> Result<Loaded, SourceError> {
        let args = &self.0;
        let active = match (&args.config, &files.policy) {
            (Some(path), Some(bytes)) => ActivePolicy::from_bytes(path, bytes, args.mode)?,
            _ => ActivePolicy::new(PolicyFile::default(), args.mode),
        };
        let snapshot = match (&args.catalog, &files.catalog) {
            (Some(path), Some(bytes)) => Some(parse_catalog(path, bytes)?),
            _ => None,
        };
        Ok(Loaded {
            policy: active.engine.policy_file().clone(),
            mode: active.mode,
            snapshot,
        })
    }

    /// Reads and parses; the first load, where an error is fatal.
    pub(crate) fn load(&self) -> Result<(Loaded, Fingerprint), SourceError> {
        let files = self.read()?;
        Ok((self.parse(&files)?, files.fingerprint()))
    }
}

/// The engine for the loaded inputs and the runtime detection (when enabled), and where
/// the port start it judges with comes from. The policy's own
/// `runtime.unprivilegedPortStart` wins over the detection: the admin said so.
pub(super) fn build_engine(
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
        let sources = Sources(PolicyArgs {
            config: Some(path.clone()),
            ..PolicyArgs::default()
        });
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
