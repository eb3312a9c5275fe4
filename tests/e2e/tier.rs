//! What the end-to-end tiers share (the control plane in tests/e2e/cluster.rs, the node in
//! tests/node.rs): whether a tier runs, and starting its script.
//!
//! `DHI_E2E=1` runs a tier and fails what cannot start; `DHI_E2E=0` skips it; unset, it
//! runs where its binaries are built (and its other needs met), else each test passes
//! after one line on stderr.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

/// One tier's script (`build`, `bin-dir`, `start DIR`, `stop DIR`).
pub struct Tier {
    /// For messages: `e2e`, `node`.
    pub name: &'static str,
    /// The script, relative to the repository.
    pub script: &'static str,
    /// How to make it run, for the skip line.
    pub how: &'static str,
}

impl Tier {
    pub fn script(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(self.script)
    }

    /// Whether the tier runs; `unmet` says what it lacks, when `DHI_E2E` leaves it to the
    /// machine. Says once (through `notice`) why it does not.
    pub fn runs(&self, notice: &Once, unmet: impl FnOnce() -> Option<&'static str>) -> bool {
        let why = match std::env::var("DHI_E2E").unwrap_or_default().as_str() {
            "1" => None,
            "0" => Some("DHI_E2E=0"),
            _ if !self.built() => Some("not built"),
            _ => unmet(),
        };
        let Some(why) = why else {
            return true;
        };
        notice.call_once(|| {
            // Straight to the file descriptor: libtest captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "{}: skipped ({why}): {}",
                self.name,
                self.how
            );
        });
        false
    }

    fn built(&self) -> bool {
        Command::new("bash")
            .arg(self.script())
            .arg("bin-dir")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `script start DIR`, stopped by itself when this process exits; the variables of the
    /// DIR/env it writes.
    pub fn start(&self, dir: &Path) -> Result<BTreeMap<String, String>, String> {
        let _ = std::fs::remove_dir_all(dir);
        let out = Command::new("bash")
            .arg(self.script())
            .arg("start")
            .arg(dir)
            .env("DHI_E2E_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", self.script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "`{} start` failed ({}):\n{}{}",
                self.script,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = dir.join("env");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

/// A variable of a tier's env file.
pub fn var(env: &BTreeMap<String, String>, key: &str) -> Result<String, String> {
    env.get(key)
        .cloned()
        .ok_or_else(|| format!("{key} missing from the env file"))
}

/// Removes the run directories of test binaries that are gone, once `running` (a file a
/// started tier keeps while it runs) is gone too: their tier stopped with them.
pub fn remove_stale_runs(runs: &Path, running: &str) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<u32>();
        let alive = pid.is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive && !entry.path().join(running).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs kubectl with `args` (bounded by a request timeout), feeding it `stdin`.
pub fn run_kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[String],
    stdin: Option<String>,
) -> Kubectl {
    let mut child = Command::new(kubectl)
        .args(args)
        .arg("--request-timeout=30s")
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out: Output = child.wait_with_output().unwrap();
    Kubectl {
        args: args.join(" "),
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Kubectl {
    pub args: String,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok, "kubectl {} failed:\n{}", self.args, self.stderr);
        self
    }

    /// Asserts that what it printed on stderr satisfies `pred`, showing it otherwise.
    #[track_caller]
    pub fn assert_stderr(&self, pred: impl Fn(&str) -> bool) -> &Self {
        assert!(pred(&self.stderr), "{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(
            !self.ok,
            "kubectl {} succeeded, expected a failure:\n{}{}",
            self.args, self.stdout, self.stderr
        );
        self
    }
}
