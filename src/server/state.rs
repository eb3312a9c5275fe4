//! What every request shares: the policy in force (swapped by the reloader), the metrics,
//! readiness, the limits and the body budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use super::budget::BodyBudget;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::policy_source::ActivePolicy;

/// Shared by every request.
pub struct AppState {
    pub(super) policy: ArcSwap<ActivePolicy>,
    pub(super) metrics: Metrics,
    pub(super) ready: AtomicBool,
    pub(super) limits: Limits,
    pub(super) budget: BodyBudget,
    pub(super) large_reviews: tokio::sync::Semaphore,
}

/// Reviews of bodies larger than this run one at a time.
pub(super) const LARGE_REVIEW: usize = 1024 * 1024;

impl AppState {
    /// State for a policy, with metrics registered into a fresh registry.
    pub fn new(policy: ActivePolicy, limits: Limits) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            policy: ArcSwap::from_pointee(policy),
            metrics: Metrics::new(prometheus::Registry::new())?,
            ready: AtomicBool::new(false),
            limits,
            budget: BodyBudget::new(limits.body_budget, limits.body_budget_wait),
            large_reviews: tokio::sync::Semaphore::new(1),
        }))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}
