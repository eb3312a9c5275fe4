//! Where the engine comes from: the policy file and the catalog file, named by one set of
//! flags ([`PolicyArgs`], shared by `serve`, `audit`, `check`, `scan` and `catalog`), read
//! by one bounded function ([`read`]), parsed with typed errors, and recognised across
//! polls by a [`Fingerprint`] that the server's reloader and the audit's poller both keep
//! in [`Versions`].

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dhi_policy::catalog::{Snapshot, SnapshotError};
use dhi_policy::policy_file::PolicyFileError;
use dhi_policy::{Engine, Mode, PolicyFile};

/// Policy files larger than this are refused: a policy is a few kilobytes.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Catalog files larger than this are refused: the DHI export of 2026-08-22 is
/// 1,087,294 bytes, so this leaves room for about four times the catalog.
pub const MAX_CATALOG_BYTES: u64 = 4 * 1024 * 1024;

/// The policy and catalog flags: the policy file, the mode and the catalog, read the same
/// way by every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Policy file (YAML), as given to the webhook; the built-in policy when absent.
    /// `serve` and `audit` poll it: a new valid version applies, an invalid one is
    /// refused and the last good one stays.
    #[arg(long, visible_alias = "policy", value_name = "FILE")]
    #[arg(env = "DHI_CONFIG")]
    pub config: Option<PathBuf>,
    /// The webhook's mode; wins over the policy file's `mode` [default: enforce]. `scan`
    /// applies it to namespaces without a `dhi.io/mode` label.
    #[arg(long, value_name = "enforce|warn|audit", env = "DHI_MODE")]
    pub mode: Option<Mode>,
    /// A catalog file in the format of the DHI catalog export (`images.json`), in place
    /// of the compiled-in snapshot; polled like the policy file.
    #[arg(long, value_name = "FILE", env = "DHI_CATALOG")]
    pub catalog: Option<PathBuf>,
}

impl PolicyArgs {
    /// The engine and mode these flags describe.
    pub fn load(&self) -> Result<ActivePolicy, SourceError> {
        let policy = match &self.config {
            Some(path) => ActivePolicy::from_bytes(path, &read(Input::Policy, path)?, self.mode)?,
            None => ActivePolicy::new(PolicyFile::default(), self.mode),
        };
        Ok(match &self.catalog {
            Some(path) => policy.on_catalog(load_snapshot(path)?),
            None => policy,
        })
    }
}

/// The policy in force: the engine built from the policy file, and the server-wide mode.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    /// The engine built from the policy file.
    pub engine: Engine,
    /// The server-wide mode (`/mutate`, `/validate`).
    pub mode: Mode,
}

impl ActivePolicy {
    /// The policy from a policy file's contents; `mode` (the command line) wins over the file.
    pub fn from_bytes(path: &Path, bytes: &[u8], mode: Option<Mode>) -> Result<Self, SourceError> {
        Ok(Self::new(parse_policy(path, bytes)?, mode))
    }

    /// The policy of a parsed policy file, on the compiled-in catalog snapshot.
    pub fn new(file: PolicyFile, mode: Option<Mode>) -> Self {
        Self::with_snapshot(file, mode, Snapshot::builtin())
    }

    /// The policy of a parsed policy file, on a catalog snapshot: the engine is the
    /// policy and the catalog together, and either can be replaced alone.
    pub fn with_snapshot(file: PolicyFile, mode: Option<Mode>, snapshot: Arc<Snapshot>) -> Self {
        let mode = mode.or(file.mode).unwrap_or_default();
        Self {
            engine: Engine::with_snapshot(file, snapshot),
            mode,
        }
    }

    /// The same policy and mode on another catalog snapshot.
    pub fn on_catalog(&self, snapshot: Arc<Snapshot>) -> Self {
        Self {
            engine: Engine::with_snapshot(self.engine.policy_file().clone(), snapshot),
            mode: self.mode,
        }
    }
}

/// Which of the two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The policy file (`--config`).
    Policy,
    /// The catalog file (`--catalog`).
    Catalog,
}

impl Input {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Catalog => "catalog",
        }
    }

    /// The most bytes read of it.
    pub fn cap(self) -> u64 {
        match self {
            Self::Policy => MAX_POLICY_BYTES,
            Self::Catalog => MAX_CATALOG_BYTES,
        }
    }
}

/// Why a policy or catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Unreadable.
    #[error("cannot read {} {}", input.name(), path.display())]
    Read {
        /// Which file.
        input: Input,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Over the file's cap ([`MAX_POLICY_BYTES`], [`MAX_CATALOG_BYTES`]).
    #[error("{} {} is larger than {} bytes", input.name(), path.display(), input.cap())]
    TooLarge {
        /// Which file.
        input: Input,
        /// Its path.
        path: PathBuf,
    },
    /// Not text.
    #[error("{} {} is not UTF-8", input.name(), path.display())]
    NotUtf8 {
        /// Which file.
        input: Input,
        /// Its path.
        path: PathBuf,
        /// Where the text breaks.
        #[source]
        source: std::str::Utf8Error,
    },
    /// Not a valid policy.
    #[error("policy {}", path.display())]
    Policy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: PolicyFileError,
    },
    /// Not a catalog export, or one the engine cannot decide with.
    #[error("catalog {}", path.display())]
    Catalog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SnapshotError,
    },
}

/// Reads a policy or catalog file's bytes, at most its cap: the only place either file
/// is read (the server at start and on reload, the audit's poller, `check`, `scan`,
/// `catalog` and `certs bootstrap --config`).
pub fn read(input: Input, path: &Path) -> Result<Vec<u8>, SourceError> {
    let read_error = |source| SourceError::Read {
        input,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(input.cap() + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > input.cap() {
        return Err(SourceError::TooLarge {
            input,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn text<'b>(input: Input, path: &Path, bytes: &'b [u8]) -> Result<&'b str, SourceError> {
    std::str::from_utf8(bytes).map_err(|source| SourceError::NotUtf8 {
        input,
        path: path.to_owned(),
        source,
    })
}

/// A policy file's contents, parsed.
pub fn parse_policy(path: &Path, bytes: &[u8]) -> Result<PolicyFile, SourceError> {
    PolicyFile::from_yaml(text(Input::Policy, path, bytes)?).map_err(|source| SourceError::Policy {
        path: path.to_owned(),
        source,
    })
}

/// Reads and parses a policy file.
pub fn load_policy(path: &Path) -> Result<PolicyFile, SourceError> {
    parse_policy(path, &read(Input::Policy, path)?)
}

/// The snapshot in a catalog file's contents. Parsing a 1 MiB export takes
/// milliseconds: the server calls this on the blocking pool.
pub fn parse_catalog(path: &Path, bytes: &[u8]) -> Result<Arc<Snapshot>, SourceError> {
    let text = text(Input::Catalog, path, bytes)?;
    let snapshot = Snapshot::from_export(text, &path.display().to_string()).map_err(|source| {
        SourceError::Catalog {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(Arc::new(snapshot))
}

/// Reads and parses a catalog file in the format of the DHI catalog export.
pub fn load_snapshot(path: &Path) -> Result<Arc<Snapshot>, SourceError> {
    parse_catalog(path, &read(Input::Catalog, path)?)
}

/// What a version of the files is recognised by: a digest of their contents (the
/// catalog is about 1 MiB, not worth keeping twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of these contents, taken together (`None` for an absent file).
    pub fn of<'b>(contents: impl IntoIterator<Item = Option<&'b [u8]>>) -> Self {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::hash::DefaultHasher::new();
        for part in contents {
            part.hash(&mut hasher);
        }
        Self(hasher.finish())
    }
}

/// The versions last applied and last refused: a poll acts once per change, and a
/// broken version is refused (and counted) once, while the last good one stays.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    applied: Option<Fingerprint>,
    refused: Option<Fingerprint>,
}

impl Versions {
    /// Starts from the version in force.
    pub fn applied(version: Fingerprint) -> Self {
        Self {
            applied: Some(version),
            refused: None,
        }
    }

    /// True if `current` is new: neither in force nor already refused.
    pub fn is_new(&self, current: Fingerprint) -> bool {
        self.applied != Some(current) && self.refused != Some(current)
    }

    /// Records the outcome of trying `version`.
    pub fn settle(&mut self, version: Fingerprint, applied: bool) {
        if applied {
            self.applied = Some(version);
            self.refused = None;
        } else {
            self.refused = Some(version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_acted_on_once() {
        let v1 = Fingerprint::of([Some(&b"mode: enforce"[..])]);
        let v2 = Fingerprint::of([Some(&b"mode: audit"[..])]);
        let mut versions = Versions::applied(v1);
        assert!(!versions.is_new(v1));
        assert!(versions.is_new(v2));
        versions.settle(v2, false);
        assert!(!versions.is_new(v2), "a refused version is refused once");
        versions.settle(v1, true);
        assert!(
            versions.is_new(v2),
            "after a good version, the broken one is new again"
        );
    }

    #[test]
    fn an_absent_file_differs_from_an_empty_one() {
        assert_ne!(Fingerprint::of([None]), Fingerprint::of([Some(&b""[..])]));
        assert_ne!(
            Fingerprint::of([Some(&b"a"[..]), None]),
            Fingerprint::of([None, Some(&b"a"[..])])
        );
    }

    #[test]
    fn each_file_has_its_cap_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b' '; MAX_POLICY_BYTES as usize + 1]).unwrap();
        let err = read(Input::Policy, &path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("policy {} is larger than 1048576 bytes", path.display())
        );
        assert_eq!(read(Input::Catalog, &path).unwrap().len(), 1024 * 1024 + 1);
    }
}
