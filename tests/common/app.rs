//! The webhook router driven in process with `tower::ServiceExt::oneshot`: no socket, no
//! TLS. For the admission protocol, status codes and routing; transport is tested over
//! real TLS elsewhere.

use std::sync::Arc;

use dhi_admission::policy_source::ActivePolicy;
use dhi_admission::server::{AppState, webhook_router};
use http::{Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{Client, DEFAULT_POLICY, Outgoing, Reply, test_limits};

/// The webhook's routes with the tests' default policy.
pub struct App {
    state: Arc<AppState>,
}

impl App {
    /// The router with the default test policy, in enforce mode.
    pub fn new() -> Self {
        Self::with_mode(None)
    }

    /// The router with the default test policy, in `mode` (`--mode`) when given.
    pub fn with_mode(mode: Option<dhi_policy::Mode>) -> Self {
        let policy =
            ActivePolicy::from_bytes("policy.yaml".as_ref(), DEFAULT_POLICY.as_bytes(), mode)
                .expect("the default test policy parses");
        let state = AppState::new(policy, test_limits()).expect("state");
        Self { state }
    }
}

impl Client for App {
    async fn deliver(&mut self, out: Outgoing<'_>) -> Reply {
        let mut request = Request::builder().method(out.method).uri(out.path);
        if let Some(content_type) = out.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(axum::body::Body::from(out.body))
            .expect("request");
        let response = webhook_router(self.state.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }
}
