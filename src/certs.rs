//! Certificates: generating, inspecting and writing them. Putting them into a cluster
//! (`certs bootstrap`, `certs arm`) is [`crate::install`]'s.
//!
//! # `certs generate`
//!
//! [`generate_pair`] makes a CA (ECDSA P-256, `CA:TRUE`, keyCertSign) and a serving
//! certificate signed by it (ECDSA P-256, serverAuth), covering the names asked for
//! plus always `localhost`, `127.0.0.1` and `::1`. ECDSA P-256 keeps TLS handshakes
//! cheap: the webhook must accept well over a thousand new connections a second on
//! one core. [`write_pair`] writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key`; the
//! `tls.crt` is the chain **leaf first, then the CA**; key files get mode 0600.
//! [`ensure_dev_certificate`] does the same for the server's development mode when
//! neither file exists yet.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

mod error;
mod files;
mod inspect;
mod issue;

#[cfg(test)]
mod tests;

pub use error::RenewReason;
pub use error::{CertError, IntentError, ParseProblem, ValidityProblem};
pub use files::{
    CA_CRT, CA_KEY, TLS_CRT, TLS_KEY, ensure_dev_certificate, write_pair, write_serving_files,
};
pub use inspect::{TlsMaterial, cert_not_after};
pub(crate) use inspect::{Window, assess, merge_bundle};
pub use issue::{
    ALWAYS_DNS, ALWAYS_IPS, GeneratedCerts, Validity, generate_pair, generate_pair_with_validity,
};

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// Arguments of `dhi-admission certs generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Directory to write ca.crt, ca.key, tls.crt (leaf then CA) and tls.key into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS names of the serving certificate (repeatable; localhost is always added).
    #[arg(long = "dns", value_name = "NAME", num_args = 1..)]
    pub dns: Vec<String>,
    /// IP addresses of the serving certificate (repeatable; 127.0.0.1 and ::1 are always added).
    #[arg(long = "ip", value_name = "IP", num_args = 1..)]
    pub ip: Vec<IpAddr>,
    /// Validity of both certificates, in days.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Replace existing files (their keys are lost).
    #[arg(long)]
    pub force: bool,
}

/// `--days` as a validity.
pub(crate) fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)
}

/// Generates development certificates: `dhi-admission certs generate`.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    if !args.force {
        let existing: Vec<&str> = [CA_CRT, CA_KEY, TLS_CRT, TLS_KEY]
            .into_iter()
            .filter(|name| args.out.join(name).exists())
            .collect();
        anyhow::ensure!(
            existing.is_empty(),
            "{} already holds {}: refusing to replace keys; pass --force to overwrite",
            args.out.display(),
            existing.join(", ")
        );
    }
    let certs =
        generate_pair(&args.dns, &args.ip, days(args.days)).context("generating certificates")?;
    write_pair(&args.out, &certs)?;
    let not_after = cert_not_after(&certs.cert_pem)?;
    tracing::info!(
        dir = %args.out.display(),
        names = ?certs.names,
        not_after,
        "wrote {CA_CRT}, {CA_KEY}, {TLS_CRT} (leaf then CA) and {TLS_KEY}"
    );
    println!(
        "wrote {CA_CRT}, {CA_KEY}, {TLS_CRT}, {TLS_KEY} to {}\nnames: {}",
        args.out.display(),
        certs.names.join(", ")
    );
    Ok(())
}
