//! dhi-admission: a Kubernetes admission webhook that makes workloads run on Docker
//! Hardened Images, rejecting what cannot and patching what can.
//!
//! The binary is a thin shell over this library: the `dhi-policy` crate is the one engine that
//! the server ([`server`]), the `check` command ([`check`]) and the tests share.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Each module exports what its callers use: `pub` only where the crate root reaches.
#![warn(unreachable_pub)]

pub mod background_audit;
pub mod catalog;
pub mod certs;
pub mod check;
pub mod config;
pub mod exit;
pub mod install;
pub mod kube_client;
pub mod metrics;
pub mod policy_source;
pub mod report;
pub mod scan;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod webhooks;
