//! The engine's tests: one target, through `dhi_policy`'s public API only. What they
//! share (building engines and objects, the one way to ask for a decision, and the
//! generators of the property tests) lives in `support`.

mod support;

mod catalog_facts;
mod engine;
mod engine_cluster;
mod engine_props;
mod fuzz_regressions;
mod hostile_specs;
mod no_bypass;
mod reference_oracle;
mod scope_props;
mod warn_mode;
