//! Build identity: the git commit that `dhi-admission --version` prints, as the
//! compile-time variable `DHI_GIT_COMMIT`.
//!
//! - `DHI_GIT_COMMIT` in the build's environment wins: image builds have no `.git` (the
//!   Dockerfile passes it as a build argument).
//! - Else `git rev-parse --short=12 HEAD` in this package's own repository, with `-dirty`
//!   when tracked files differ from HEAD (untracked files do not count, as for
//!   `git describe --dirty`).
//! - Else `unknown`: no git, no repository, or the package sits inside some other
//!   repository (a vendored copy must not report its host's commit).
//!
//! The script reruns when HEAD moves (a checkout, or a commit on the branch), not on
//! every edit: it watches `HEAD`, the branch's ref and `packed-refs`, found with
//! `git rev-parse --git-path` so that worktrees (where `.git` is a file) work. So the
//! `-dirty` marker says how the tree was when HEAD last moved; release builds come from
//! clean checkouts or set `DHI_GIT_COMMIT`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DHI_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = match std::env::var("DHI_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git_commit(&dir).unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo::rustc-env=DHI_GIT_COMMIT={commit}");
}

/// The commit of `dir`'s repository, if `dir` is its top level; watches what moves HEAD.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !same_dir(Path::new(&top), dir) {
        return None;
    }
    for watched in watched_files(dir) {
        println!("cargo::rerun-if-changed={}", watched.display());
    }
    let hash = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    Some(if status.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    })
}

/// `HEAD`, the ref it points at (absent on a detached HEAD) and `packed-refs`, where git
/// keeps refs it has packed. Only existing files: cargo reruns a script every build
/// while a watched path is missing.
fn watched_files(dir: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    names.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    names
        .iter()
        .filter_map(|name| git(dir, &["rev-parse", "--git-path", name]))
        .map(|path| dir.join(path))
        .filter(|path| path.is_file())
        .collect()
}

/// `git ARGS` in `dir`: its trimmed standard output, if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
