//! The stand-in API server of `bench/scan.sh`: a generated cluster (bench/standin.rs)
//! served on a loopback port, and a kubeconfig for it.
//!
//! ```text
//! cargo run --release --example scan_standin -- \
//!     --namespaces 100 --workloads 20 --pods 5 --kubeconfig target/standin.kubeconfig
//! ```
//!
//! Prints `ready http://127.0.0.1:PORT` once it serves, and runs until killed.

#[path = "../bench/standin.rs"]
mod standin;

use anyhow::{Context as _, bail};
use standin::{Cluster, Shape};

fn main() -> anyhow::Result<()> {
    let mut shape = Shape {
        namespaces: 100,
        workloads: 20,
        pods: 5,
    };
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--namespaces" => shape.namespaces = value.parse()?,
            "--workloads" => shape.workloads = value.parse()?,
            "--pods" => shape.pods = value.parse()?,
            "--kubeconfig" => kubeconfig = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    let kubeconfig = kubeconfig.context("--kubeconfig FILE is required")?;
    let cluster = Cluster::generate(shape);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        std::fs::write(&kubeconfig, standin::kubeconfig(addr))
            .with_context(|| format!("writing {kubeconfig}"))?;
        println!("ready http://{addr}");
        cluster.serve(listener).await?;
        Ok(())
    })
}
