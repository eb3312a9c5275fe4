//! The one policy engine of dhi-admission: for any object carrying a pod spec, the JSON
//! Patch that makes it run on Docker Hardened Images and whether it must be rejected.
//!
//! No HTTP and no cluster access here; the crate's dependencies enforce it. The
//! admission server and the `check` command (and the tests) ask the same [`Engine`]
//! through one [`Request`] model.
//!
//! # The pipeline
//!
//! ```text
//! Request ──route──▶ Route ──read──▶ Subject ──evaluate──▶ Evaluation ──review──▶ Decision ──▶ answer
//!                                                                       └──find──▶ Finding   (check)
//! ```
//!
//! - **Routing** ([`Engine::route`]) decides from the request alone whether a webhook
//!   looks at the object, and at which containers, so bypassed requests cost no decoding.
//! - **Evaluation** ([`Engine::evaluate`], [`Evaluation`]) plans the patch and judges the
//!   pod spec as it will run after it: violations, warnings, mutations. It knows no mode
//!   and no webhook.
//! - **Decision** ([`Engine::review`], [`Decision`]) is one webhook's answer in one mode:
//!   allowed or not, the patch to return, warnings and audit annotations.
//! - **Answer** ([`answer::handle`]) reads an AdmissionReview body and turns the decision
//!   into the AdmissionReview (or `metav1.Status`) the server sends back.
//! - **Finding** ([`Engine::find`], [`Finding`]) is `check`'s view: both webhooks'
//!   decisions, and the whole patch whoever applies it.
//!
//! [`Engine::admit`] runs routing, reading and decision for the server; [`Engine::find`]
//! does the same for `check`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
mod by_name;
pub mod catalog;
mod context;
mod decision;
mod engine;
pub mod glob;
pub mod image_ref;
pub mod model;
pub mod patch;
pub mod policy_file;
pub mod reference;
mod request;
mod rewrite;
pub mod rules;
pub mod scope;
pub mod spec;
pub mod workload;

pub use catalog::Catalog;
pub use decision::{
    Decision, Finding, MAX_LISTED, PatchedBy, WARNING_CUT, WARNINGS_TOTAL, as_api_server_sends,
};
pub use engine::{Admission, Bypass, Engine, RequestInfo, Route, Subject};
pub use model::{
    Action, Mode, MutationKind, Operation, RuleId, Scope, SkipReason, Violation, Warning, Webhook,
};
pub use policy_file::PolicyFile;
pub use request::{DecodeError, GroupKind, ObjectSource, Request, RequestError, decode_object};
pub use rewrite::Equivalent;
pub use rules::Evaluation;
pub use spec::ObjectView;
pub use workload::WorkloadKind;
