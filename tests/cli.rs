//! The binary's command line as a newcomer meets it: listen addresses, certificate
//! generation that refuses to destroy keys, fatal errors printed once, the build
//! identity in `--version`, and shell completions.

#[path = "common/cli.rs"]
mod cli;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cli::dhi;

fn bin() -> Command {
    dhi(&[])
}

fn run(args: &[&str]) -> Output {
    dhi(args).output().expect("run dhi-admission")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn certs_generate_refuses_to_overwrite_keys_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = run(&["certs", "generate", "--out", out]);
    assert!(first.status.success(), "{}", stderr(&first));
    let key = std::fs::read(dir.path().join("tls.key")).unwrap();

    let again = run(&["certs", "generate", "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again),
        format!(
            "error: {out} already holds ca.crt, ca.key, tls.crt, tls.key: refusing to replace \
             keys; pass --force to overwrite\n"
        )
    );
    assert_eq!(std::fs::read(dir.path().join("tls.key")).unwrap(), key);

    let forced = run(&["certs", "generate", "--out", out, "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(dir.path().join("tls.key")).unwrap(), key);
}

#[test]
fn fatal_errors_are_printed_once_without_repeated_causes() {
    let output = run(&[
        "certs",
        "bootstrap",
        "--secret",
        "tls",
        "--service",
        "webhook",
        "--webhook-config",
        "webhook",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(
            "error: loading the Kubernetes client configuration from the in-cluster service \
             account (use --kubeconfig outside a cluster): "
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("environment variable not found").count(),
        1,
        "{text}"
    );
}

#[test]
fn listen_addresses_take_the_usual_forms() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert!(run(&["certs", "generate", "--out", out]).status.success());
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    // `localhost:0` and `:0` both bind (port 0: any free port), and the server says where.
    let mut child = bin()
        .args(["serve", "--listen", "localhost:0", "--metrics-listen", ":0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (tx, rx) = mpsc::channel();
    let log = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if line.contains("serving") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("serve logs the addresses it listens on");
    assert!(line.contains("listen=127.0.0.1:"), "{line}");
    assert!(line.contains("metrics=0.0.0.0:"), "{line}");

    let refused = run(&["serve", "--listen", "8443"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("\"8443\": write ADDR:PORT, HOST:PORT or :PORT"),
        "{}",
        stderr(&refused)
    );
}

/// `git ARGS` in the package root, if git and the repository are there.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn version_names_the_release_the_commit_and_the_catalog_snapshot() {
    let output = run(&["--version"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let prefix = format!("dhi-admission {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(", catalog snapshot 2026-08-22)\n"))
        .unwrap_or_else(|| panic!("{text:?}"));
    // Built by this test run, so from this tree: its HEAD (build.rs reruns when HEAD
    // moves), unless the build was given DHI_GIT_COMMIT or sees no repository of its own.
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    let top = git(&["rev-parse", "--show-toplevel"]).map(std::path::PathBuf::from);
    let own_repository = top.is_some_and(|top| {
        top.canonicalize().ok()
            == std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .canonicalize()
                .ok()
    });
    match std::env::var("DHI_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => assert_eq!(commit, given.trim()),
        _ if own_repository => {
            let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap();
            assert_eq!(hash, head, "{text}");
        }
        _ => assert_eq!(commit, "unknown"),
    }
}

#[test]
fn completions_name_every_subcommand_for_each_shell() {
    let subcommands = [
        "serve",
        "check",
        "certs",
        "catalog",
        "webhooks",
        "completions",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(!script.is_empty(), "{shell}");
        for subcommand in subcommands {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
        // Flags of subcommands too: `check --output` completes its formats.
        assert!(
            script.contains("sarif"),
            "{shell} lacks check's output formats"
        );
    }
    let bash = String::from_utf8(run(&["completions", "bash"]).stdout).unwrap();
    assert!(bash.contains("complete -F _dhi__admission"), "{bash}");
    let zsh = String::from_utf8(run(&["completions", "zsh"]).stdout).unwrap();
    assert!(zsh.starts_with("#compdef dhi-admission\n"), "{zsh}");
    let fish = String::from_utf8(run(&["completions", "fish"]).stdout).unwrap();
    assert!(fish.contains("complete -c dhi-admission"), "{fish}");

    let unknown = run(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&unknown)
    );
}
