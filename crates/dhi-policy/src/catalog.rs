//! The catalog of hardened images: which user each repository and tag runs as.
//!
//! Built-in facts come from `catalog/builtin.jsonl`, a compact form of the public DHI
//! catalog export written by `tools/gen_catalog.py` and expanded once at first use; a
//! file in the export's format can replace them (`--catalog`), and the policy file can
//! add repositories or override them. Look-ups are binary searches over sorted tags and
//! variant families (plus one hash probe for overrides): nothing on the request path
//! allocates or scales with the size of the catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde::Deserialize;

mod compact;

/// The compiled-in snapshot, in the compact form `compact` reads.
const BUILTIN_JSONL: &str = include_str!("catalog/builtin.jsonl");

/// The nonroot account almost every runtime image uses, and the default for unknown ones.
pub const NONROOT: Ids = Ids {
    uid: 65532,
    gid: 65532,
};

/// Node agents whose charts run them as root (host CNI files, nsenter): root is their job.
pub const ROOT_BY_DESIGN: &[&str] = &["cilium-startup-script", "istio-install-cni"];

/// A numeric user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Ids {
    /// The user id the image runs as.
    pub uid: i64,
    /// The primary group id.
    pub gid: i64,
}

/// Which kind of variant a tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Production images: nonroot, no shell, no package manager.
    Runtime,
    /// Build-stage images (`-dev` tags): root, shell, package manager.
    Dev,
}

/// How the catalog came to its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The tag is listed (or the policy file names the repository or tag).
    Listed,
    /// An unlisted tag of a known repository, resolved within its variant family
    /// (`-compat`, `-sdk`, `-dev`, a distro suffix...) or else the default variant.
    UnknownTag,
    /// A repository the catalog does not have: nonroot 65532 (root for dev tags).
    UnknownRepository,
}

/// What the catalog knows about one hardened image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageUser {
    /// The account the image runs as when the pod does not say otherwise.
    pub ids: Ids,
    /// Runtime or dev variant.
    pub variant: Variant,
    /// Running this image as root is by design, not a mistake.
    pub root_allowed: bool,
    /// Whether the tag was listed, guessed within a known repository, or not known at all.
    pub resolution: Resolution,
}

/// A repository added or overridden by the policy file (`catalog:` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepoOverride {
    /// User and group of the runtime variant (and of unknown tags).
    pub uid: Option<i64>,
    /// Primary group of the runtime variant; defaults to `uid`.
    pub gid: Option<i64>,
    /// Allow this repository to run as root.
    #[serde(default)]
    pub allow_root: bool,
    /// Exact tags with their own user: `{"2.1-dev": {uid: 0, gid: 0}}`.
    #[serde(default)]
    pub tags: HashMap<String, Ids>,
}

/// A catalog snapshot: every repository with its variants and tags. The compiled-in
/// one, or one loaded from a file in the format of the DHI catalog export
/// (`images.json`) to follow the catalog without a rebuild.
#[derive(Debug)]
pub struct Snapshot {
    source: String,
    date: String,
    origin: String,
    /// Sorted by name.
    repos: Vec<Repo>,
    /// Repositories whose own guide's Kubernetes examples run them with `runAsUser: 0`,
    /// with where the guide says so (`image/clamav/guides.md:201`).
    root_by_guide: BTreeMap<String, String>,
    /// Repositories with a binary that has the file capability cap_net_bind_service,
    /// with which definition sets it.
    bind_by_file_cap: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Repo {
    name: String,
    variants: Vec<VariantInfo>,
    runtime: Option<usize>,
    dev: Option<usize>,
    /// Sorted by tag; the index points into `variants`.
    tags: Vec<(String, usize)>,
    /// The variant of the first listed tag of each family, by [`family_key`]: what an
    /// unlisted tag of that family resolves to. Sorted by key.
    families: Vec<(Box<[u8]>, usize)>,
    /// The same by flavor (the family without its distro), for a distro the
    /// repository does not have.
    flavors: Vec<(Box<[u8]>, usize)>,
}

impl Repo {
    /// A repository from its variants and its tags (each naming a variant).
    fn new(name: String, variants: Vec<VariantInfo>, tags: BTreeMap<String, usize>) -> Self {
        let tags: Vec<(String, usize)> = tags.into_iter().collect();
        let index = |tokens: fn(&str) -> Tokens<'_>| {
            // This runs for 18,000 tags when the binary starts: one key buffer, and
            // an allocation only for a new family.
            let mut first: BTreeMap<Box<[u8]>, usize> = BTreeMap::new();
            let mut key = Vec::new();
            for (tag, i) in &tags {
                key.clear();
                for token in tokens(tag) {
                    key.push(b'-');
                    key.extend_from_slice(token.as_bytes());
                }
                if !first.contains_key(key.as_slice()) {
                    first.insert(key.as_slice().into(), *i);
                }
            }
            first.into_iter().collect::<Vec<_>>()
        };
        let families = index(family_tokens);
        let flavors = index(flavor_tokens);
        Self {
            runtime: default_variant(&variants, false),
            dev: default_variant(&variants, true),
            name,
            variants,
            tags,
            families,
            flavors,
        }
    }

    fn tag(&self, tag: &str) -> Option<usize> {
        self.tags
            .binary_search_by(|(t, _)| t.as_str().cmp(tag))
            .ok()
            .map(|i| self.tags[i].1)
    }

    /// The variant of an unlisted tag's family, else of its flavor: two binary
    /// searches for the tag's key, written on the stack (no allocation).
    fn family_variant(&self, tag: &str) -> Option<usize> {
        let find = |index: &[(Box<[u8]>, usize)], tokens: Tokens<'_>| {
            let found = match StackKey::new(tokens.clone()) {
                Some(key) => index.binary_search_by(|(k, _)| (**k).cmp(key.as_slice())),
                // Longer than any valid tag: compared as the tokens are split.
                None => index
                    .binary_search_by(|(k, _)| k.iter().copied().cmp(family_key(tokens.clone()))),
            };
            found.ok().map(|i| index[i].1)
        };
        find(&self.families, family_tokens(tag)).or_else(|| find(&self.flavors, flavor_tokens(tag)))
    }
}

#[derive(Debug, PartialEq, Eq)]
struct VariantInfo {
    dev: bool,
    uid: i64,
    gid: i64,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not JSON in the export's shape.
    #[error("not a DHI catalog export: {0}")]
    Format(#[source] serde_json::Error),
    /// Something the engine could not decide with.
    #[error("invalid catalog: {0}")]
    Invalid(String),
}

/// The export's shape (`../shared/dhi-catalog/images.json`); other fields are ignored.
#[derive(Deserialize)]
struct Export {
    source: String,
    images: BTreeMap<String, ExportRepo>,
}

#[derive(Deserialize)]
struct ExportRepo {
    variants: Vec<ExportVariant>,
}

#[derive(Deserialize)]
struct ExportVariant {
    variant: String,
    tags: Vec<String>,
    uid: i64,
    gid: i64,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
}

static BUILTIN: LazyLock<Arc<Snapshot>> = LazyLock::new(|| {
    // The data is generated and checked by tests (`tests/policy/catalog_facts.rs`).
    let snapshot = compact::decode(BUILTIN_JSONL, "compiled in")
        .expect("the compiled-in catalog is well formed: regenerate it with tools/gen_catalog.py");
    Arc::new(snapshot)
});

impl Snapshot {
    /// The snapshot compiled into the binary.
    pub fn builtin() -> Arc<Self> {
        BUILTIN.clone()
    }

    /// A snapshot from a file in the format of the DHI catalog export; `origin` says
    /// where it came from (its path). The same rules as `tools/gen_catalog.py`: a tag
    /// listed with two different users is refused.
    pub fn from_export(json: &str, origin: &str) -> Result<Self, SnapshotError> {
        let export: Export = serde_json::from_str(json).map_err(SnapshotError::Format)?;
        let mut repos = Vec::with_capacity(export.images.len());
        for (name, repo) in export.images {
            let mut variants: Vec<VariantInfo> = Vec::new();
            let mut tags: BTreeMap<String, usize> = BTreeMap::new();
            for v in repo.variants {
                let dev = match v.variant.as_str() {
                    "dev" => true,
                    "runtime" => false,
                    other => {
                        return Err(SnapshotError::Invalid(format!(
                            "{name}: variant {other:?} is neither runtime nor dev"
                        )));
                    }
                };
                let info = VariantInfo {
                    dev,
                    uid: v.uid,
                    gid: v.gid,
                    entrypoint: v.entrypoint,
                    cmd: v.cmd,
                };
                let i = match variants.iter().position(|x| *x == info) {
                    Some(i) => i,
                    None => {
                        variants.push(info);
                        variants.len() - 1
                    }
                };
                for tag in v.tags {
                    let at = *tags.entry(tag.clone()).or_insert(i);
                    let (a, b) = (&variants[at], &variants[i]);
                    if (a.dev, a.uid, a.gid) != (b.dev, b.uid, b.gid) {
                        return Err(SnapshotError::Invalid(format!(
                            "{name}:{tag} is listed with two different users"
                        )));
                    }
                }
            }
            repos.push(Repo::new(name, variants, tags));
        }
        let mut snapshot = Self::new(export.source, origin, repos)?;
        // The export says nothing of the guides: their facts stay those compiled in.
        let builtin = Self::builtin();
        snapshot.root_by_guide = builtin.root_by_guide.clone();
        snapshot.bind_by_file_cap = builtin.bind_by_file_cap.clone();
        Ok(snapshot)
    }

    /// A snapshot of these repositories; its date is the last one its source names.
    fn new(source: String, origin: &str, mut repos: Vec<Repo>) -> Result<Self, SnapshotError> {
        let date = snapshot_date(&source).ok_or_else(|| {
            SnapshotError::Invalid(format!("source {source:?} names no date (YYYY-MM-DD)"))
        })?;
        if repos.is_empty() {
            return Err(SnapshotError::Invalid("no repositories".to_owned()));
        }
        repos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            source,
            date,
            origin: origin.to_owned(),
            repos,
            root_by_guide: BTreeMap::new(),
            bind_by_file_cap: BTreeMap::new(),
        })
    }

    fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.repos[i])
    }
}

/// The date written last in a snapshot's source line: `... (2026-08-22)`.
fn snapshot_date(source: &str) -> Option<String> {
    let b = source.as_bytes();
    (0..b.len().saturating_sub(9)).rev().find_map(|i| {
        let w = &b[i..i + 10];
        let shape = w.iter().enumerate().all(|(k, c)| match k {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
        shape.then(|| source[i..i + 10].to_owned())
    })
}

/// The variant an unknown tag falls back to when its family does not decide: the most
/// common (uid, gid) of that kind, ties going to the non-root one (the safer guess for
/// injection). As `default_variant` in `tools/gen_catalog.py`.
fn default_variant(variants: &[VariantInfo], dev: bool) -> Option<usize> {
    let of_kind = || variants.iter().filter(|v| v.dev == dev);
    let count = |ids: (i64, i64)| of_kind().filter(|v| (v.uid, v.gid) == ids).count();
    let best = of_kind()
        .map(|v| (v.uid, v.gid))
        .max_by_key(|&ids| (count(ids), ids.0 != 0))?;
    // Python's max keeps the first of equal keys; Rust's the last: take the first again.
    let key = (count(best), best.0 != 0);
    let first = of_kind()
        .map(|v| (v.uid, v.gid))
        .find(|&ids| (count(ids), ids.0 != 0) == key)?;
    variants
        .iter()
        .position(|v| v.dev == dev && (v.uid, v.gid) == first)
}

/// One repository as the catalog lists it, for `dhi-admission catalog show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFacts<'c> {
    /// The DHI repository name.
    pub name: &'c str,
    /// Its variants, each with the tags that name it (sorted).
    pub variants: Vec<VariantFacts<'c>>,
}

/// One variant of a repository: who it runs as, how it starts, which tags name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantFacts<'c> {
    /// Runtime or dev.
    pub variant: Variant,
    /// The user and group it runs as.
    pub ids: Ids,
    /// The image's entrypoint (empty when the catalog gives none).
    pub entrypoint: &'c [String],
    /// The image's default command.
    pub cmd: &'c [String],
    /// The tags that name it.
    pub tags: Vec<&'c str>,
}

/// Counts of what the catalog snapshot lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogCounts {
    /// Repositories.
    pub repositories: usize,
    /// Tags, over all repositories.
    pub tags: usize,
}

/// A catalog snapshot (the compiled-in one unless a file replaces it) plus the policy
/// file's overrides.
#[derive(Debug, Clone)]
pub struct Catalog {
    overrides: HashMap<String, RepoOverride>,
    snapshot: Arc<Snapshot>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}

impl Catalog {
    /// The catalog with the policy file's repositories layered over the built-in ones.
    pub fn new(overrides: HashMap<String, RepoOverride>) -> Self {
        Self::with_snapshot(overrides, Snapshot::builtin())
    }

    /// The policy file's repositories layered over a snapshot.
    pub fn with_snapshot(
        overrides: HashMap<String, RepoOverride>,
        snapshot: Arc<Snapshot>,
    ) -> Self {
        Self {
            overrides,
            snapshot,
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    fn builtin(&self, repo: &str) -> Option<&Repo> {
        self.snapshot.repo(repo)
    }

    /// Where the repository's own guide runs it with `runAsUser: 0`
    /// (`image/clamav/guides.md:201`), if it does: root by design for that image.
    pub fn root_by_guide(&self, repo: &str) -> Option<&str> {
        self.snapshot.root_by_guide.get(repo).map(String::as_str)
    }

    /// Which definition gives a binary of the repository the file capability
    /// cap_net_bind_service, if one does: the only way its nonroot process can bind a
    /// port below 1024 under Kubernetes, which sets no ambient capabilities.
    pub fn bind_by_file_cap(&self, repo: &str) -> Option<&str> {
        self.snapshot.bind_by_file_cap.get(repo).map(String::as_str)
    }

    /// Whether the catalog (built-in or extended) has this repository.
    pub fn contains(&self, repo: &str) -> bool {
        self.overrides.contains_key(repo) || self.builtin(repo).is_some()
    }

    /// The user `dhi.io/<repo>:<tag>` runs as. Every hardened repository has an answer:
    /// an exact tag picks its variant; an unknown tag the variant of its family (the
    /// tags with the same non-version tokens, `0.20.1-compat` those of `0-compat`; else
    /// the same tokens but the distro, `1.30-debian12-dev` those of `1.30-dev`); else a
    /// `dev` token means the dev variant, and anything else the runtime one. Unknown
    /// repositories run as nonroot 65532 (dev tags as root).
    pub fn lookup(&self, repo: &str, tag: &str) -> ImageUser {
        let by_design = ROOT_BY_DESIGN.contains(&repo);
        let dev = is_dev_tag(tag);
        if let Some(over) = self.overrides.get(repo) {
            if let Some(ids) = over.tags.get(tag) {
                return image_user(*ids, dev, by_design || over.allow_root, Resolution::Listed);
            }
            if let Some(uid) = over.uid.filter(|_| !dev) {
                let ids = Ids {
                    uid,
                    gid: over.gid.unwrap_or(uid),
                };
                return image_user(ids, false, by_design || over.allow_root, Resolution::Listed);
            }
            if over.allow_root {
                let mut user = self.builtin_lookup(repo, tag, dev);
                user.root_allowed = true;
                return user;
            }
        }
        let mut user = self.builtin_lookup(repo, tag, dev);
        user.root_allowed |= by_design;
        if user.resolution == Resolution::UnknownRepository && self.overrides.contains_key(repo) {
            // The policy file names it: known, whatever it says about it.
            user.resolution = Resolution::UnknownTag;
        }
        user
    }

    fn builtin_lookup(&self, repo: &str, tag: &str, dev: bool) -> ImageUser {
        let Some(data) = self.builtin(repo) else {
            // Unknown hardened repositories: dev tags are root, the rest nonroot.
            let ids = if dev { Ids { uid: 0, gid: 0 } } else { NONROOT };
            return image_user(ids, dev, false, Resolution::UnknownRepository);
        };
        let exact = data.tag(tag);
        let resolution = if exact.is_some() {
            Resolution::Listed
        } else {
            Resolution::UnknownTag
        };
        let guessed = || {
            data.family_variant(tag).or(if dev {
                data.dev.or(data.runtime)
            } else {
                data.runtime.or(data.dev)
            })
        };
        match exact.or_else(guessed).map(|i| &data.variants[i]) {
            Some(v) => {
                let ids = Ids {
                    uid: v.uid,
                    gid: v.gid,
                };
                image_user(ids, v.dev, false, resolution)
            }
            None => image_user(NONROOT, false, false, resolution),
        }
    }

    /// Whether the catalog lists `repo:tag`, so that a rewrite to it can be pulled.
    /// A repository the policy file adds without listing tags vouches for any tag.
    pub fn has_tag(&self, repo: &str, tag: &str) -> bool {
        if let Some(over) = self.overrides.get(repo) {
            if over.tags.contains_key(tag) {
                return true;
            }
            if self.builtin(repo).is_none() {
                return over.tags.is_empty();
            }
        }
        self.builtin(repo)
            .is_some_and(|data| data.tag(tag).is_some())
    }

    /// The version lines (`1.20`) the catalog lists for a repository nearest to `tag`,
    /// at most three, in version order: in the tag's own family if it has any there
    /// (`1.18-compat` for `1.16.5-compat`), else among the plain version tags. For a
    /// message, when a rewrite target does not exist.
    pub fn nearest_lines(&self, repo: &str, tag: &str) -> Vec<String> {
        let Some(data) = self.builtin(repo) else {
            return Vec::new();
        };
        let lines = |family: bool| -> Vec<(u64, u64, &str)> {
            let mut out: Vec<_> = data
                .tags
                .iter()
                .filter(|(t, _)| {
                    if family {
                        family_tokens(t).eq(family_tokens(tag))
                    } else {
                        family_tokens(t).next().is_none()
                    }
                })
                .filter_map(|(t, _)| line_of(t).map(|(major, minor)| (major, minor, t.as_str())))
                .collect();
            out.sort_unstable();
            out.dedup_by_key(|l| (l.0, l.1));
            out
        };
        let mut found = lines(true);
        if found.is_empty() {
            found = lines(false);
        }
        let (major, minor) = version_of(tag).unwrap_or((u64::MAX, u64::MAX));
        let distance = |l: &(u64, u64, &str)| (l.0.abs_diff(major), l.1.abs_diff(minor));
        found.sort_by_key(|l| distance(l));
        found.truncate(3);
        found.sort_unstable();
        found
            .into_iter()
            .map(|(major, minor, t)| {
                let rest = &t[t.find('-').unwrap_or(t.len())..];
                format!("{major}.{minor}{rest}")
            })
            .collect()
    }

    /// What the snapshot lists, as the catalog knows it (without the policy's additions).
    pub fn repository(&self, name: &str) -> Option<RepoFacts<'_>> {
        let data = self.builtin(name)?;
        let variants = data
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| VariantFacts {
                variant: if v.dev {
                    Variant::Dev
                } else {
                    Variant::Runtime
                },
                ids: Ids {
                    uid: v.uid,
                    gid: v.gid,
                },
                entrypoint: &v.entrypoint,
                cmd: &v.cmd,
                tags: data
                    .tags
                    .iter()
                    .filter(|(_, at)| *at == i)
                    .map(|(t, _)| t.as_str())
                    .collect(),
            })
            .collect();
        Some(RepoFacts {
            name: &data.name,
            variants,
        })
    }

    /// How many repositories and tags the snapshot lists.
    pub fn counts(&self) -> CatalogCounts {
        CatalogCounts {
            repositories: self.snapshot.repos.len(),
            tags: self.snapshot.repos.iter().map(|r| r.tags.len()).sum(),
        }
    }

    /// The date of the catalog snapshot in force (`2026-08-22`).
    pub fn snapshot_date(&self) -> &str {
        &self.snapshot.date
    }

    /// Where the snapshot's data comes from (repository, commit and date).
    pub fn snapshot_source(&self) -> &str {
        &self.snapshot.source
    }

    /// Where the snapshot was loaded from: `compiled in`, or a file's path.
    pub fn snapshot_origin(&self) -> &str {
        &self.snapshot.origin
    }
}

/// A tag's tokens, lazily: a family's or a flavor's.
type Tokens<'t> = std::iter::Filter<std::str::Split<'t, char>, fn(&&str) -> bool>;

/// The tag's non-version tokens: `1.30.3-debian13-dev` is `debian13`, `dev`.
fn family_tokens(tag: &str) -> Tokens<'_> {
    tag.split('-').filter(|t: &&str| !is_version_token(t))
}

/// The family tokens without the distro: `debian13`, `alpine3.22` and the like.
fn flavor_tokens(tag: &str) -> Tokens<'_> {
    tag.split('-')
        .filter(|t| !is_version_token(t) && !is_distro_token(t))
}

/// The bytes of a family's key: `-` before each token (`-debian13-dev`), so that no
/// two token lists share a key (`1-` has the family `[""]`, key `-`; `1` has `[]`, ``).
fn family_key(tokens: Tokens<'_>) -> impl Iterator<Item = u8> + '_ {
    tokens.flat_map(|t| std::iter::once(b'-').chain(t.bytes()))
}

/// A family key on the stack: a valid tag is at most 128 bytes, and its key one more.
struct StackKey {
    bytes: [u8; 160],
    len: usize,
}

impl StackKey {
    /// The key of these tokens, or `None` if it does not fit.
    fn new(tokens: Tokens<'_>) -> Option<Self> {
        let mut key = Self {
            bytes: [0; 160],
            len: 0,
        };
        for token in tokens {
            let end = key.len + 1 + token.len();
            let slot = key.bytes.get_mut(key.len..end)?;
            slot[0] = b'-';
            slot[1..].copy_from_slice(token.as_bytes());
            key.len = end;
        }
        Some(key)
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `1`, `1.30`, `v1.30.3`, `latest`: the version part of a tag.
fn is_version_token(token: &str) -> bool {
    if token == "latest" {
        return true;
    }
    // Dot-separated non-empty runs of digits, in one pass: this runs for every token
    // of every tag when the catalog is indexed.
    let digits = token.strip_prefix('v').unwrap_or(token);
    let mut after_dot = true; // the start counts as a dot: an empty first part fails
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => after_dot = false,
            b'.' if !after_dot => after_dot = true,
            _ => return false,
        }
    }
    !after_dot
}

/// `debian`, `debian13`, `alpine3.22`, `ubuntu24.04`, `bookworm`...
fn is_distro_token(token: &str) -> bool {
    const DISTROS: &[&str] = &["debian", "alpine", "ubuntu", "wolfi", "rhel", "ubi"];
    const CODENAMES: &[&str] = &["bookworm", "bullseye", "trixie", "noble", "jammy"];
    CODENAMES.contains(&token)
        || DISTROS.iter().any(|d| {
            token
                .strip_prefix(d)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        })
}

/// `(major, minor)` of a tag starting with a version (`1.16.5-compat` is 1.16).
fn version_of(tag: &str) -> Option<(u64, u64)> {
    let first = tag.split('-').next()?;
    let first = first.strip_prefix('v').unwrap_or(first);
    let mut parts = first.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// `(major, minor)` of a tag that names a version line exactly (`1.20`, `1.20-compat`).
fn line_of(tag: &str) -> Option<(u64, u64)> {
    let first = tag.split('-').next()?;
    let mut parts = first.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((major, minor))
}

/// Root is by design for a runtime image whose catalog user is root (node agents).
fn image_user(ids: Ids, dev: bool, allow_root: bool, resolution: Resolution) -> ImageUser {
    let variant = if dev { Variant::Dev } else { Variant::Runtime };
    ImageUser {
        ids,
        variant,
        root_allowed: allow_root || (variant == Variant::Runtime && ids.uid == 0),
        resolution,
    }
}

/// A tag names a dev variant when one of its `-`/`.`/`_` separated tokens is `dev`.
pub fn is_dev_tag(tag: &str) -> bool {
    tag.split(['-', '.', '_']).any(|token| token == "dev")
}

/// Every built-in (repository, tag, uid, gid, is_dev) fact, for tests that compare
/// the compiled-in data with a catalog export.
pub fn builtin_facts() -> impl Iterator<Item = (&'static str, &'static str, i64, i64, bool)> {
    let snapshot: &'static Snapshot = &BUILTIN;
    snapshot.repos.iter().flat_map(|repo| {
        repo.tags.iter().map(move |(tag, i)| {
            let v = &repo.variants[*i];
            (repo.name.as_str(), tag.as_str(), v.uid, v.gid, v.dev)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(repo: &str, tag: &str) -> ImageUser {
        Catalog::default().lookup(repo, tag)
    }

    #[test]
    fn exact_tags_pick_their_variant() {
        let u = lookup("istio-proxyv2", "1.30.3");
        assert_eq!(
            u.ids,
            Ids {
                uid: 1337,
                gid: 1337
            }
        );
        assert_eq!(u.variant, Variant::Runtime);
        assert!(!u.root_allowed);
        assert_eq!(lookup("postgres", "17-alpine").ids.uid, 70);
        assert_eq!(lookup("node", "24").ids.uid, 1000);
        let dev = lookup("python", "3.13-debian13-dev");
        assert_eq!((dev.ids.uid, dev.variant), (0, Variant::Dev));
        assert!(!dev.root_allowed);
    }

    #[test]
    fn unknown_tags_follow_the_dev_token() {
        assert_eq!(lookup("istio-pilot", "1.99.0").ids.uid, 1337);
        let dev = lookup("istio-pilot", "1.99.0-dev");
        assert_eq!((dev.ids.uid, dev.variant), (0, Variant::Dev));
        assert_eq!(lookup("nginx", "latest").ids, NONROOT);
    }

    #[test]
    fn unknown_tags_resolve_within_their_family() {
        let ids = |repo, tag| {
            let u = lookup(repo, tag);
            (u.ids.uid, u.variant, u.root_allowed, u.resolution)
        };
        use Resolution::*;
        use Variant::*;
        // The next patch of a root `-compat` family is root by design, like its family.
        assert_eq!(
            ids("k8s-device-plugin", "0.20.0-compat"),
            (0, Runtime, true, Listed)
        );
        assert_eq!(
            ids("k8s-device-plugin", "0.20.1-compat"),
            (0, Runtime, true, UnknownTag)
        );
        assert_eq!(
            ids("k8s-device-plugin", "0.20.1"),
            (65532, Runtime, false, UnknownTag)
        );
        assert_eq!(
            ids("cilium-envoy", "1.20.9-compat"),
            (0, Runtime, true, UnknownTag)
        );
        assert_eq!(
            ids("cilium-envoy", "1.21.0-debian13-compat"),
            (0, Runtime, true, UnknownTag)
        );
        // .NET SDK images run as root; the runtime ones do not.
        assert_eq!(
            ids("dotnet", "10.0.999-sdk-alpine3.22"),
            (0, Runtime, true, UnknownTag)
        );
        assert_eq!(ids("dotnet", "11-sdk"), (0, Runtime, true, UnknownTag));
        assert_eq!(
            ids("dotnet", "11-alpine3.22"),
            (65532, Runtime, false, UnknownTag)
        );
        // A distro the catalog does not have keeps the flavor: dev, else runtime.
        assert_eq!(
            ids("nginx", "1.32-debian11-dev"),
            (0, Dev, false, UnknownTag)
        );
        assert_eq!(
            ids("nginx", "1.32-debian11"),
            (65532, Runtime, false, UnknownTag)
        );
        // Dev-only repositories whose dev variants run as a non-zero UID.
        assert_eq!(
            ids("sbx-templates", "claude-code-9.9"),
            (1000, Dev, false, UnknownTag)
        );
        assert_eq!(
            ids("sbx-templates", "claude-code"),
            (1000, Dev, false, Listed)
        );
        assert_eq!(
            ids("no-such-repo", "1"),
            (65532, Runtime, false, UnknownRepository)
        );
    }

    #[test]
    fn families_of_tags_longer_than_the_stack_key_resolve_alike() {
        let long = "x".repeat(200);
        let export = format!(
            r#"{{"source": "t (2027-01-31)", "images": {{"app": {{"variants": [
                {{"variant": "runtime", "tags": ["1", "1-{long}"], "uid": 7, "gid": 7}},
                {{"variant": "runtime", "tags": ["1-{long}-y"], "uid": 8, "gid": 8}},
                {{"variant": "runtime", "tags": ["1-debian13-y"], "uid": 9, "gid": 9}}]}}}}}}"#
        );
        let snapshot = Snapshot::from_export(&export, "t").unwrap();
        let catalog = Catalog::with_snapshot(HashMap::new(), Arc::new(snapshot));
        let uid = |tag: &str| {
            let user = catalog.lookup("app", tag);
            (user.ids.uid, user.resolution)
        };
        use Resolution::*;
        assert_eq!(uid(&format!("2-{long}")), (7, UnknownTag));
        assert_eq!(uid(&format!("2-{long}-y")), (8, UnknownTag));
        // The flavor of a long tag: its family without the distro.
        assert_eq!(uid(&format!("2-{long}-alpine3.22-y")), (8, UnknownTag));
        assert_eq!(uid("2-alpine3.22-y"), (9, UnknownTag));
        assert_eq!(uid(&format!("1-{long}")), (7, Listed));
    }

    #[test]
    fn tags_are_listed_or_not() {
        let catalog = Catalog::default();
        assert!(catalog.has_tag("hubble-relay", "1.20.1"));
        assert!(!catalog.has_tag("hubble-relay", "1.16.5"));
        for tag in ["1.19.0", "latest", "1.30.3-debug"] {
            assert!(!catalog.has_tag("istio-proxyv2", tag), "{tag}");
        }
        assert!(catalog.has_tag("istio-proxyv2", "1.30.3"));
        assert!(!catalog.has_tag("no-such-repo", "1"));
        let mut overrides = HashMap::new();
        overrides.insert("team-app".to_owned(), RepoOverride::default());
        overrides.insert(
            "nginx".to_owned(),
            RepoOverride {
                tags: [("1.99-custom".to_owned(), NONROOT)].into(),
                ..Default::default()
            },
        );
        let extended = Catalog::new(overrides);
        assert!(extended.has_tag("team-app", "anything"));
        assert!(extended.has_tag("nginx", "1.99-custom"));
        assert!(extended.has_tag("nginx", "1.31"));
        assert!(!extended.has_tag("nginx", "1.99"));
    }

    #[test]
    fn nearest_lines_name_what_exists() {
        let catalog = Catalog::default();
        assert_eq!(
            catalog.nearest_lines("hubble-relay", "1.16.5"),
            ["1.18", "1.19", "1.20"]
        );
        assert_eq!(catalog.nearest_lines("istio-proxyv2", "latest"), ["1.30"]);
        assert_eq!(catalog.nearest_lines("istio-proxyv2", "1.19.0"), ["1.30"]);
        assert_eq!(
            catalog.nearest_lines("cilium-envoy", "1.16.0-compat"),
            ["1.18-compat", "1.19-compat", "1.20-compat"]
        );
        assert!(catalog.nearest_lines("no-such-repo", "1").is_empty());
    }

    #[test]
    fn repository_facts_and_counts() {
        let catalog = Catalog::default();
        let relay = catalog.repository("hubble-relay").unwrap();
        assert_eq!(relay.name, "hubble-relay");
        let runtime: Vec<&VariantFacts> = relay
            .variants
            .iter()
            .filter(|v| v.variant == Variant::Runtime)
            .collect();
        assert_eq!(runtime.len(), 1);
        assert_eq!(runtime[0].ids, NONROOT);
        assert_eq!(runtime[0].entrypoint, ["/usr/bin/hubble-relay"]);
        assert_eq!(runtime[0].cmd, ["serve"]);
        assert!(runtime[0].tags.contains(&"1.20.1"));
        assert!(catalog.repository("no-such-repo").is_none());
        assert_eq!(
            catalog.counts(),
            CatalogCounts {
                repositories: 554,
                tags: 18_095
            }
        );
    }

    #[test]
    fn snapshot_files_are_read_or_refused_with_the_reason() {
        let export = r#"{"source": "test export (2027-01-31)", "images": {
            "app": {"display": "App", "variants": [
                {"variant": "runtime", "distro": "debian-13", "tags": ["2", "2.1"], "uid": 10001, "gid": 10001, "entrypoint": ["/app"]},
                {"variant": "dev", "tags": ["2-dev"], "uid": 0, "gid": 0}]}}}"#;
        let snapshot = Arc::new(Snapshot::from_export(export, "/etc/catalog.json").unwrap());
        let catalog = Catalog::with_snapshot(HashMap::new(), snapshot);
        assert_eq!(catalog.snapshot_date(), "2027-01-31");
        assert_eq!(catalog.snapshot_origin(), "/etc/catalog.json");
        assert_eq!(catalog.lookup("app", "2.1").ids.uid, 10001);
        assert_eq!(catalog.lookup("app", "2.2").ids.uid, 10001);
        assert_eq!(catalog.lookup("app", "2.2-dev").ids.uid, 0);
        assert!(catalog.has_tag("app", "2") && !catalog.has_tag("app", "3"));
        assert!(
            !catalog.contains("nginx"),
            "the file replaces the compiled-in snapshot"
        );
        assert_eq!(
            catalog.repository("app").unwrap().variants[0].entrypoint,
            ["/app"]
        );
        let err = |json: &str| Snapshot::from_export(json, "f").unwrap_err().to_string();
        assert!(
            err("{").starts_with("not a DHI catalog export"),
            "{}",
            err("{")
        );
        assert_eq!(
            err(r#"{"source": "no date", "images": {"a": {"variants": []}}}"#),
            "invalid catalog: source \"no date\" names no date (YYYY-MM-DD)"
        );
        assert_eq!(
            err(r#"{"source": "x (2027-01-31)", "images": {}}"#),
            "invalid catalog: no repositories"
        );
        assert_eq!(
            err(
                r#"{"source": "x (2027-01-31)", "images": {"a": {"variants": [
                {"variant": "debug", "tags": ["1"], "uid": 0, "gid": 0}]}}}"#
            ),
            "invalid catalog: a: variant \"debug\" is neither runtime nor dev"
        );
        assert_eq!(
            err(
                r#"{"source": "x (2027-01-31)", "images": {"a": {"variants": [
                {"variant": "runtime", "tags": ["1"], "uid": 0, "gid": 0},
                {"variant": "runtime", "tags": ["1"], "uid": 1, "gid": 1}]}}}"#
            ),
            "invalid catalog: a:1 is listed with two different users"
        );
    }

    #[test]
    fn unknown_repositories_are_nonroot() {
        assert_eq!(lookup("not-in-catalog", "1").ids, NONROOT);
        assert_eq!(lookup("not-in-catalog", "1-dev").ids.uid, 0);
    }

    #[test]
    fn root_by_design() {
        assert!(lookup("istio-install-cni", "1.30.3").root_allowed);
        assert!(lookup("cilium-startup-script", "0").root_allowed);
        // A runtime image whose catalog user is root: a node agent.
        let falco = lookup("falco", "0");
        assert_eq!(falco.ids.uid, 0);
        assert!(falco.root_allowed);
    }

    #[test]
    fn version_tokens() {
        for token in ["1", "1.30", "v1.30.3", "latest", "0.20.1", "10"] {
            assert!(is_version_token(token), "{token}");
        }
        for token in [
            "", "v", "1.", ".1", "1..2", "v.1", "dev", "1a", "debian13", "vv1", "Latest",
        ] {
            assert!(!is_version_token(token), "{token}");
        }
    }

    #[test]
    fn dev_tokens() {
        for tag in ["1.30-dev", "3.12-debian13-dev", "dev", "1_dev", "dev.1"] {
            assert!(is_dev_tag(tag), "{tag}");
        }
        for tag in ["1.30", "devel", "1-device", "latest", ""] {
            assert!(!is_dev_tag(tag), "{tag}");
        }
    }

    #[test]
    fn overrides_extend_and_replace() {
        let mut overrides = HashMap::new();
        overrides.insert(
            "my-app".to_owned(),
            RepoOverride {
                uid: Some(10001),
                ..Default::default()
            },
        );
        overrides.insert(
            "nginx".to_owned(),
            RepoOverride {
                tags: [("1.31-custom".to_owned(), Ids { uid: 101, gid: 101 })].into(),
                ..Default::default()
            },
        );
        overrides.insert(
            "python".to_owned(),
            RepoOverride {
                allow_root: true,
                ..Default::default()
            },
        );
        let catalog = Catalog::new(overrides);
        assert!(catalog.contains("my-app"));
        assert_eq!(
            catalog.lookup("my-app", "2").ids,
            Ids {
                uid: 10001,
                gid: 10001
            }
        );
        assert_eq!(catalog.lookup("my-app", "2-dev").ids.uid, 0);
        assert_eq!(catalog.lookup("nginx", "1.31-custom").ids.uid, 101);
        assert_eq!(catalog.lookup("nginx", "1.31").ids, NONROOT);
        let py = catalog.lookup("python", "3.13-dev");
        assert!(py.root_allowed && py.ids.uid == 0);
    }
}
