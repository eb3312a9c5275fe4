//! `dhi-admission`: serve the admission webhook, check manifests offline, manage certificates.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use dhi_admission::{
    background_audit, catalog, certs, check, config, install, scan, server, webhooks,
};

// mimalloc: the allocator is a large share of the request path's CPU. Built with
// `no_thp` (Cargo.toml): transparent huge pages raise idle RSS and buy no CPU here.
// Figures in bench/README.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes admission webhook for Docker Hardened Images"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DHI_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(
        long,
        global = true,
        default_value = "info,rustls=error",
        env = "DHI_LOG"
    )]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the admission webhook server.
    Serve(config::ServeArgs),
    /// Evaluate manifests offline, with the same verdicts as the webhook.
    Check(check::CheckArgs),
    /// Judge the workloads running in a cluster, as the webhook would: verdicts, fixes,
    /// patches and hardened equivalents.
    Scan(scan::ScanArgs),
    /// Keep PolicyReports of the cluster's running workloads current (background audit).
    Audit(background_audit::BackgroundAuditArgs),
    /// Certificates for development and for in-cluster bootstrap.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The catalog of hardened images: which user each repository and tag runs as.
    Catalog {
        #[command(subcommand)]
        command: catalog::CatalogCommand,
    },
    /// Print the webhooks' matchConditions (CEL) generated from a policy.
    Webhooks(webhooks::WebhooksArgs),
    /// Print a shell completion script: `source <(dhi-admission completions bash)`,
    /// or save it where the shell loads completions (see the README).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Generate a CA and a serving certificate.
    Generate(certs::GenerateArgs),
    /// Create or renew the serving Secret and patch the webhook CA bundles (init container).
    Bootstrap(install::BootstrapArgs),
    /// Switch the webhook entries to the failure policy their configurations declare,
    /// Fail only once a replica is ready (sidecar).
    Arm(install::ArmArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|err| err.exit());
    init_tracing(cli.log_format, &cli.log_level);
    // Exactly one rustls provider: ring (no OpenSSL, no aws-lc build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `serve` reports through its logs (JSON in clusters); the other commands talk to a
    // person at a terminal. Either way a fatal error is printed once.
    let serving = matches!(cli.command, Command::Serve(_) | Command::Audit(_));
    let result = match cli.command {
        Command::Check(args) => return check::run(args),
        Command::Scan(args) => return scan::run(args),
        Command::Webhooks(args) => webhooks::run(args),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(server::run(args))),
        Command::Audit(args) => runtime().and_then(|rt| rt.block_on(background_audit::run(args))),
        Command::Catalog { command } => catalog::run(command),
        Command::Completions { shell } => completions(shell),
        Command::Certs { command } => match command {
            CertsCommand::Generate(args) => certs::generate(args),
            CertsCommand::Bootstrap(args) => {
                runtime().and_then(|rt| rt.block_on(install::bootstrap(args)))
            }
            CertsCommand::Arm(args) => runtime().and_then(|rt| rt.block_on(install::arm(args))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = error_chain(&err);
            if serving {
                tracing::error!(error = %message, "exiting");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The command line, with a `--version` that names the build: the version, the git
/// commit (build.rs) and the catalog snapshot the decisions come from.
fn command() -> clap::Command {
    let version = format!(
        "{} (commit {}, catalog snapshot {})",
        env!("CARGO_PKG_VERSION"),
        env!("DHI_GIT_COMMIT"),
        dhi_policy::Catalog::default().snapshot_date()
    );
    Cli::command().version(version.leak() as &str)
}

/// Writes the completion script for `shell` to standard output. Generated into memory
/// first: clap_complete panics when its writer fails, and `| head` closes the pipe.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "dhi-admission", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// The error and its causes, joined by `: `, leaving out a cause that its parent's
/// message already spells out (kube's errors include their source in their own text).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read an environment variable: {0}")]
    struct Outer(#[source] std::env::VarError);

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let err = anyhow::Error::new(Outer(std::env::VarError::NotPresent))
            .context("loading the Kubernetes client configuration");
        assert_eq!(
            error_chain(&err),
            "loading the Kubernetes client configuration: failed to read an environment \
             variable: environment variable not found"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
