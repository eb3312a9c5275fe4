//! The webhook's routes: a body read within the limits, handed to the engine's
//! AdmissionReview entry point, its answer sent back. Glue only.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;

use super::budget::Reservation;
use super::state::{AppState, LARGE_REVIEW};
use crate::config::Limits;
use crate::metrics::ShedReason;
use dhi_policy::answer::{self, Answer};
use dhi_policy::{Mode, Webhook};

/// The webhook routes; the unit tests drive it without a socket.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(|s, r| admit(s, r, Webhook::Mutate, None)))
        .route("/validate", post(|s, r| admit(s, r, Webhook::Validate, None)))
        .route("/mutate/audit", post(|s, r| admit(s, r, Webhook::Mutate, Some(Mode::Audit))))
        .route("/validate/audit", post(|s, r| admit(s, r, Webhook::Validate, Some(Mode::Audit))))
        .route("/mutate/warn", post(|s, r| admit(s, r, Webhook::Mutate, Some(Mode::Warn))))
        .route("/validate/warn", post(|s, r| admit(s, r, Webhook::Validate, Some(Mode::Warn))))
        .fallback(|| async { reply(answer::http_error(404, "unknown path: the webhook serves /mutate, /validate, and both under /audit and /warn".to_owned())) })
        .method_not_allowed_fallback(|| async { reply(answer::http_error(405, "method not allowed: the webhook endpoints take POST".to_owned())) })
        .with_state(state)
}

async fn admit(
    State(state): State<Arc<AppState>>,
    request: Request,
    webhook: Webhook,
    path_mode: Option<Mode>,
) -> Response {
    let started = Instant::now();
    // The reservation in the body budget is held until the answer is built: the body
    // and the engine's work on it are what it stands for.
    let body = read_body(&state, request).await;
    // The engine's working set grows with a review's structure (100,000 containers in
    // 3.6 MB take well over 100 MiB): large reviews are reviewed one at a time, so
    // that the peak is one of them, not one per runtime worker.
    let _one_at_a_time = match &body {
        Ok((bytes, _)) if bytes.len() > LARGE_REVIEW => state.large_reviews.acquire().await.ok(),
        _ => None,
    };
    let policy = state.policy.load();
    let mode = path_mode.map_or(policy.mode, |m| m.at_most(policy.mode));
    let answer = match body {
        Ok((body, _reservation)) => {
            // The engine is synchronous: a panic is caught here and costs this request only.
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                answer::handle(&policy.engine, webhook, mode, &body)
            }))
            .unwrap_or_else(|_| {
                answer::http_error(
                    500,
                    "internal error while reviewing the request; see the webhook's log".to_owned(),
                )
            })
        }
        Err(answer) => answer,
    };
    state
        .metrics
        .observe(webhook, mode, &answer, started.elapsed().as_secs_f64());
    reply(answer)
}

/// Reads a JSON body within the size and time limits and the body budget, or the
/// error answer to send. The body's room in the budget comes with it.
async fn read_body(
    state: &AppState,
    request: Request,
) -> Result<(bytes::Bytes, Reservation<'_>), Answer> {
    let limits = &state.limits;
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body as u64) {
        return Err(too_large(limits));
    }
    let declared = declared.map(|len| len as usize);
    let mut reservation = state.budget.reservation();
    // Room for the announced length before a byte of the body is read.
    if let Some(len) = declared {
        reservation.grow_to(len).await.map_err(|_| shed(state))?;
    }
    let collect = async {
        let mut body = std::pin::pin!(body);
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                answer::http_error(400, format!("cannot read request body: {err}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let total = buf.len() + data.len();
            if total > limits.max_body {
                return Err(too_large(limits));
            }
            // Without a length, room is taken as the bytes arrive.
            if declared.is_none_or(|len| total > len) {
                reservation.grow_to(total).await.map_err(|_| shed(state))?;
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.request_timeout, collect).await {
        Ok(Ok(body)) => Ok((body, reservation)),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err(answer::http_error(
            408,
            format!(
                "request body not received within {:?}",
                limits.request_timeout
            ),
        )),
    }
}

/// The answer to a request shed for want of room in the body budget.
fn shed(state: &AppState) -> Answer {
    state.metrics.request_shed(ShedReason::BodyMemory);
    answer::http_error(
        503,
        format!(
            "server busy: no room within {:?} in the budget of {} bytes of request bodies \
             held at once (--max-buffered-body-bytes); the body was not read, retry shortly",
            state.limits.body_budget_wait, state.limits.body_budget
        ),
    )
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Answer> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = value.map(|v| v.split(';').next().unwrap_or("").trim());
    match essence {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        other => Err(answer::http_error(
            415,
            format!(
                "content type must be application/json, got {}",
                other.unwrap_or("none")
            ),
        )),
    }
}

fn too_large(limits: &Limits) -> Answer {
    answer::http_error(
        413,
        format!("request body larger than {} bytes", limits.max_body),
    )
}

fn reply(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(answer.body),
    )
        .into_response()
}
