//! Connections: what is in flight on each, when each must close, and the cap.
//!
//! A connection is *idle* when no request is in flight on it, whatever bytes flow: an
//! HTTP/2 client answering (or sending) pings does not keep it open. Every connection
//! is closed:
//!
//! - when it has not started a request within `handshake_timeout` of being accepted;
//! - when it has been idle for `idle_timeout`;
//! - past its maximum age, gracefully (GOAWAY; `Connection: close` on the answer in
//!   flight), so that kube-apiserver's connections spread over new replicas;
//! - when the server is at its connection cap and it is the longest idle: the new
//!   connection is admitted instead of waiting in the accept queue.
//!
//! Closing starts with hyper's graceful shutdown; a connection still open
//! `close_grace` later (a client that never acknowledges the GOAWAY, or never reads
//! its answer) is dropped, and one with nothing in flight goes after a second.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;
use crate::metrics::{ConnClosed, Metrics};

/// How long a closing connection with nothing in flight may linger (to let a GOAWAY
/// be acknowledged) before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What one connection is doing, shared by its task, its requests and the registry.
pub(super) struct ConnState {
    id: u64,
    born: Instant,
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Milliseconds after `born` when the last request ended.
    idle_since_ms: AtomicU64,
    header_timed_out: AtomicBool,
    evict: Notify,
}

impl ConnState {
    fn new(id: u64) -> Self {
        Self {
            id,
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            header_timed_out: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// Requests in flight now.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests started so far.
    pub(super) fn requests_started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// The header timer fired (counted when the connection ends).
    pub(super) fn note_header_timeout(&self) {
        self.header_timed_out.store(true, Ordering::Relaxed);
    }

    /// When the connection became idle (its birth if it never carried a request).
    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// A request starts; it ends when the guard (moved into the answer's body) drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// The maximum age of this connection: between 90% and 100% of the configured one.
    fn age_limit(&self, max_age: Duration) -> Instant {
        let spread = (self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as u32; // 0..1024
        self.born + max_age - max_age / 10 * spread / 1024
    }

    /// Whether the connection must close now, or when to look again.
    fn check(
        &self,
        now: Instant,
        limits: &Limits,
        age_limit: Instant,
    ) -> Result<Instant, ConnClosed> {
        if now >= age_limit {
            return Err(ConnClosed::MaxAge);
        }
        if self.in_flight() > 0 {
            return Ok(age_limit.min(now + limits.idle_timeout));
        }
        let (deadline, reason) = if self.requests_started() == 0 {
            (self.born + limits.handshake_timeout, ConnClosed::NoRequest)
        } else {
            (self.idle_since() + limits.idle_timeout, ConnClosed::Idle)
        };
        if now >= deadline {
            return Err(reason);
        }
        // Deadlines are checked lazily: when the timer fires, the state is read again.
        // That is right for deadlines that only move later (a new request postpones
        // idleness), but a first request that ends now makes the connection idle from
        // now: look again by then at the latest.
        let next = if reason == ConnClosed::NoRequest {
            deadline.min(now + limits.idle_timeout)
        } else {
            deadline
        };
        Ok(next.min(age_limit))
    }
}

/// One request in flight.
pub(super) struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        let idle_ms = u64::try_from(conn.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stamp before the count drops, so an idle connection always has a fresh stamp.
        conn.idle_since_ms.fetch_max(idle_ms, Ordering::AcqRel);
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections, for the cap.
pub(super) struct Registry {
    cap: usize,
    next_id: AtomicU64,
    /// Connections counted against the cap (an evicted one leaves at once).
    counted: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Connection tasks alive, evicted and closing ones included.
    alive: AtomicUsize,
    changed: Notify,
}

impl Registry {
    /// A registry for at most `cap` connections.
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            counted: Mutex::new(HashMap::new()),
            alive: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    /// Registers a new connection, closing the longest-idle one when at the cap.
    /// `None` when at the cap with every connection busy: wait for [`Self::changed`].
    pub(super) fn admit(self: &Arc<Self>, metrics: Option<&Metrics>) -> Option<Member> {
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        if counted.len() >= self.cap {
            let victim = counted
                .values()
                .filter(|c| c.in_flight() == 0)
                .min_by_key(|c| c.idle_since())?
                .id;
            if let Some(victim) = counted.remove(&victim) {
                victim.evict.notify_one();
                if let Some(metrics) = metrics {
                    metrics.connection_closed(ConnClosed::Evicted);
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id));
        counted.insert(id, state.clone());
        drop(counted);
        self.alive.fetch_add(1, Ordering::AcqRel);
        if let Some(metrics) = metrics {
            metrics.connections_open(self.alive.load(Ordering::Relaxed));
        }
        Some(Member {
            registry: self.clone(),
            state,
            metrics: metrics.cloned(),
        })
    }

    /// Completes when a connection ended (or might have: spurious wake-ups happen).
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Waits until every connection task has ended.
    pub(super) async fn all_closed(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.alive.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection's place in the registry, given up when dropped.
pub(super) struct Member {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
    metrics: Option<Metrics>,
}

impl Member {
    /// The connection's state.
    pub(super) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Completes when the registry evicts this connection.
    pub(super) async fn evicted(&self) {
        self.state.evict.notified().await;
    }

    fn count(&self, reason: ConnClosed) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_closed(reason);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.state.header_timed_out.load(Ordering::Relaxed) {
            self.count(ConnClosed::HeaderTimeout);
        }
        let registry = &self.registry;
        registry
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.state.id);
        let alive = registry.alive.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(metrics) = &self.metrics {
            metrics.connections_open(alive);
        }
        // Wakes the accept loop (waiting for room) and the drain (waiting for zero).
        registry.changed.notify_waiters();
        registry.changed.notify_one();
    }
}

/// Drives `conn` until it ends or is dropped by the rules above. `shut_down` starts
/// its graceful shutdown (GOAWAY, or close after the current answer); `drain` turns
/// true when the server shuts down.
pub(super) async fn drive<C, E>(
    conn: C,
    shut_down: impl Fn(Pin<&mut C>),
    member: &Member,
    limits: &Limits,
    mut drain: tokio::sync::watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let state = member.state();
    let age_limit = state.age_limit(limits.max_connection_age);
    tokio::pin!(conn);
    let first = state
        .check(Instant::now(), limits, age_limit)
        .unwrap_or_else(|_| Instant::now());
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    // The hard deadline once closing started.
    let mut closing: Option<Instant> = None;
    loop {
        let close = tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = &mut timer => {
                let now = Instant::now();
                if let Some(hard) = closing {
                    if now >= hard || state.in_flight() == 0 {
                        return; // dropped: the client did not finish closing
                    }
                    timer.as_mut().reset(hard.min(now + CLOSE_LINGER));
                    continue;
                }
                match state.check(now, limits, age_limit) {
                    Ok(next) => {
                        timer.as_mut().reset(next);
                        continue;
                    }
                    Err(reason) => {
                        member.count(reason);
                        limits.close_grace
                    }
                }
            }
            () = member.evicted(), if closing.is_none() => limits.close_grace,
            _ = drain.wait_for(|d| *d), if closing.is_none() => limits.shutdown_grace,
        };
        shut_down(conn.as_mut());
        let now = Instant::now();
        let hard = now + close;
        closing = Some(hard);
        timer.as_mut().reset(hard.min(now + CLOSE_LINGER));
    }
}

// === impl the service wrapper ===

/// Counts each request in flight on its connection, until its answer has been sent.
#[derive(Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    conn: Arc<ConnState>,
}

impl<S> Tracked<S> {
    /// Wraps `inner` for the connection `conn`.
    pub(super) fn new(inner: S, conn: Arc<ConnState>) -> Self {
        Self { inner, conn }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R, B> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, request: R) -> Self::Future {
        let busy = self.conn.begin();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// An answer's body, holding its request's place in flight until sent (or dropped).
pub(super) struct TrackedBody<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(300),
            ..Limits::default()
        }
    }

    #[test]
    fn idle_means_no_request_in_flight() {
        let limits = limits();
        let conn = Arc::new(ConnState::new(7));
        let born = conn.born;
        let at = |secs: u64| born + Duration::from_secs(secs);
        let age = conn.age_limit(limits.max_connection_age);
        assert!(age <= at(300) && age >= at(270), "{:?}", age - born);
        // No request yet: the first-request deadline.
        assert_eq!(conn.check(at(1), &limits, age), Ok(at(10)));
        let short_idle = Limits {
            idle_timeout: Duration::from_secs(3),
            ..limits
        };
        assert_eq!(conn.check(at(1), &short_idle, age), Ok(at(4)));
        assert_eq!(conn.check(at(10), &limits, age), Err(ConnClosed::NoRequest));
        // A request in flight: never idle, however long; looked at again later.
        let busy = conn.begin();
        assert_eq!(conn.check(at(200), &limits, age), Ok(age));
        assert_eq!(conn.check(at(100), &limits, age), Ok(at(220)));
        drop(busy);
        // Idle from the end of the request (just now, about `born`).
        let idle_until = conn.idle_since() + limits.idle_timeout;
        assert!(idle_until < at(121));
        assert_eq!(conn.check(at(60), &limits, age), Ok(idle_until));
        assert_eq!(conn.check(at(121), &limits, age), Err(ConnClosed::Idle));
        // Past the maximum age, busy or not.
        let _busy = conn.begin();
        assert_eq!(conn.check(age, &limits, age), Err(ConnClosed::MaxAge));
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_is_evicted() {
        let registry = Registry::new(3);
        let a = registry.admit(None).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = registry.admit(None).unwrap();
        let c = registry.admit(None).unwrap();
        let _busy_a = a.state().begin();
        // a is busy, b has been idle longest.
        let d = registry.admit(None).unwrap();
        assert!(futures_util::FutureExt::now_or_never(b.evicted()).is_some());
        assert!(futures_util::FutureExt::now_or_never(c.evicted()).is_none());
        // Everyone busy: no room.
        let _busy_c = c.state().begin();
        let _busy_d = d.state().begin();
        assert!(registry.admit(None).is_none());
        drop(b);
        assert!(
            registry.admit(None).is_none(),
            "b had already left the count"
        );
        drop(c);
        assert!(registry.admit(None).is_some());
    }
}
