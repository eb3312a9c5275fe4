//! `dhi-admission scan`: the webhook's verdicts on what already runs in a cluster.
//!
//! Lists Pods and every workload kind the engine reads, page by page, and judges each
//! owner once with the same engine, policy file and catalog as `serve`, in the mode
//! each namespace's `dhi.io/mode` label routes it to ([`crate::report`] has the model).
//! Prints a table, JSON, or the `wgpolicyk8s.io` PolicyReports.
//!
//! Exit status as `check`'s: 0 when nothing would be denied, 1 when a workload in an
//! enforcing namespace breaks a rule, 2 for bad usage or when the cluster cannot be read.

mod cluster;
mod inventory;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::ValueEnum;
use serde::Serialize;

use crate::exit::Exit;
use crate::kube_client::Fallback;
use crate::policy_source::PolicyArgs;
use crate::report::summary::Summary;
use crate::report::{self, WorkloadReport, policyreport};
use cluster::Where;
use inventory::{Inventory, LIST_ORDER};

/// Arguments of `dhi-admission scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Kubeconfig file (its current context) [default: $KUBECONFIG, ~/.kube/config, else
    /// the in-cluster service account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Scan this namespace [default: the kubeconfig context's namespace].
    #[arg(long, short = 'n', value_name = "NAME")]
    #[arg(conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Scan every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// The policy file, mode and catalog.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = ScanOutput::Text)]
    pub output: ScanOutput,
    /// Objects per list request (`limit`).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanOutput {
    /// A table of workloads, then the summary.
    Text,
    /// One JSON document: mode, workloads, summary, errors.
    Json,
    /// PolicyReports (one per namespace) and a ClusterPolicyReport, as a YAML stream.
    Policyreport,
}

/// `--output json`.
#[derive(Serialize)]
struct JsonReport<'r> {
    /// The server-wide mode.
    mode: &'static str,
    workloads: &'r [WorkloadReport],
    summary: &'r Summary,
    errors: &'r [String],
}

/// Runs the command and returns its exit status.
pub fn run(args: ScanArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(scan(&args)));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            Exit::Error.into()
        }
    }
}

async fn scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    if let Some(ns) = &args.namespace {
        anyhow::ensure!(
            cluster::valid_namespace(ns),
            "-n {ns:?}: not a namespace name (lower-case letters, digits and '-', at most 63)"
        );
    }
    let policy = args.policy.load()?;
    let (client, default_namespace) =
        crate::kube_client::connect(args.kubeconfig.as_deref(), Fallback::Infer).await?;
    let at = match (&args.namespace, args.all_namespaces) {
        (_, true) => Where::All,
        (Some(ns), false) => Where::Namespace(ns.clone()),
        (None, false) => Where::Namespace(default_namespace),
    };
    let mut inventory = Inventory::new(&policy.engine, policy.mode);
    read_namespaces(&client, &at, args.page_size, policy.mode, &mut inventory).await?;
    list_workloads(&client, &at, args.page_size, &mut inventory).await?;
    let (reports, errors) = inventory.finish();
    for err in &errors {
        eprintln!("error: cannot judge {err}");
    }
    let summary = Summary::of(&reports);
    write(args.output, policy.mode, &reports, &summary, &errors)?;
    Ok(Exit::of(errors.len(), summary.cluster.denied).into())
}

/// The namespaces' mode labels: of the one namespace, or of all.
async fn read_namespaces(
    client: &kube::Client,
    at: &Where,
    page_size: u32,
    mode: dhi_policy::Mode,
    inventory: &mut Inventory<'_>,
) -> anyhow::Result<()> {
    match at {
        Where::Namespace(ns) => {
            match cluster::get_labels(client, &format!("/api/v1/namespaces/{ns}")).await {
                Ok(labels) => {
                    inventory.namespace(ns, labels.get(report::MODE_LABEL).map(String::as_str))
                }
                // A namespace's own users may list its workloads without reading the
                // Namespace object: judge it in the server's mode, and say so.
                Err(err)
                    if err
                        .downcast_ref::<cluster::Refused>()
                        .is_some_and(|r| r.status == http::StatusCode::FORBIDDEN) =>
                {
                    eprintln!(
                        "warning: cannot read namespace {ns} ({err}); its {} label is not \
                         known: judged in the server's mode ({})",
                        report::MODE_LABEL,
                        mode
                    );
                }
                Err(err) => return Err(err.context(format!("reading namespace {ns}"))),
            }
        }
        Where::All => {
            cluster::list_each(client, "/api/v1/namespaces", page_size, |raw| {
                inventory.add_namespace(raw)
            })
            .await
            .context("listing namespaces")?;
        }
    }
    Ok(())
}

/// Every workload kind's objects, page by page, into the inventory.
async fn list_workloads(
    client: &kube::Client,
    at: &Where,
    page_size: u32,
    inventory: &mut Inventory<'_>,
) -> anyhow::Result<()> {
    let mut progress = Progress::new(io::stderr().is_terminal());
    for kind in LIST_ORDER {
        let path = cluster::collection(kind, at);
        let mut seen = 0usize;
        cluster::list_each(client, &path, page_size, |raw| {
            inventory.add(kind, raw);
            seen += 1;
            if seen.is_multiple_of(500) {
                progress.show(kind.as_str(), seen);
            }
        })
        .await
        .with_context(|| format!("listing {kind}s"))?;
    }
    progress.clear();
    Ok(())
}

/// The reports on standard output, in the format asked for.
fn write(
    format: ScanOutput,
    mode: dhi_policy::Mode,
    reports: &[WorkloadReport],
    summary: &Summary,
    errors: &[String],
) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match format {
        ScanOutput::Text => report::text::write(&mut out, reports, summary)?,
        ScanOutput::Json => {
            let json = JsonReport {
                mode: mode.as_str(),
                workloads: reports,
                summary,
                errors,
            };
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
        ScanOutput::Policyreport => {
            let mut objects = policyreport::namespace_reports(reports);
            objects.push(policyreport::cluster_report(summary));
            for object in &objects {
                let yaml = serde_saphyr::to_string(object)
                    .map_err(|err| anyhow!("cannot write the PolicyReports as YAML: {err}"))?;
                writeln!(out, "---")?;
                out.write_all(yaml.as_bytes())?;
            }
        }
    }
    out.flush().context("cannot write to standard output")
}

/// A one-line count on standard error, only when it is a terminal.
struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            shown: false,
        }
    }

    fn show(&mut self, kind: &str, seen: usize) {
        if self.enabled {
            eprint!("\r\x1b[Kscanning: {seen} {kind}s read");
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }
}
