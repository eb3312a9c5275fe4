//! The one way the tests run the `dhi-admission` command line: the binary under test,
//! kept away from any real cluster, with its exit code and output as text. Standalone,
//! so the CLI tests include it by path without the server harness around it.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The binary under test: the one Cargo built for this test run, or the one named by
/// `DHI_ADMISSION_BIN` (to soak a release build: `cargo build --release`, then
/// `DHI_ADMISSION_BIN=target/release/dhi-admission DHI_SOAK_SECONDS=600 cargo test --test soak`).
pub fn binary_path() -> PathBuf {
    match std::env::var_os("DHI_ADMISSION_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_dhi-admission")),
    }
}

/// `dhi-admission ARGS`, without the environment that would point it at a cluster
/// (a test that wants one passes `--kubeconfig` or sets the variable again).
pub fn dhi(args: &[&str]) -> Command {
    let mut command = Command::new(binary_path());
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    command
}

/// Runs `command` with `stdin` on its standard input, to the end.
pub fn output_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dhi-admission runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A finished run: its exit code and its output, which must be UTF-8.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Standard output as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("{err}: {}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output
                .status
                .code()
                .expect("exited, not killed by a signal"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}
