//! The HTTP/1.1 header timeout, as an I/O wrapper.
//!
//! hyper's own `header_read_timeout` starts as soon as a kept-alive connection waits
//! for its next request, so it can only be as long as the idle timeout. Here the timer
//! starts with the first byte of a request's head read while no request is in flight,
//! and stops when the request starts: a client that trickles its headers is cut off
//! after `header_timeout`, while an idle connection stays open for the whole (longer)
//! idle timeout. HTTP/2 connections carry pings and window updates between requests,
//! so bytes say nothing there: the wrapper only passes them through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conns::ConnState;

/// The first bytes of an HTTP/2 connection without ALPN ("prior knowledge").
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A stream whose reads fail with `TimedOut` when an HTTP/1.1 request head takes too long.
pub(super) struct TimedIo<S> {
    inner: S,
    conn: Arc<ConnState>,
    header_timeout: Duration,
    /// Requests started when the timer was armed, and the timer.
    header: Option<(u64, Pin<Box<Sleep>>)>,
    /// False for HTTP/2 (ALPN, or the preface seen on the first read).
    http1: bool,
    first_read: bool,
}

impl<S> TimedIo<S> {
    /// Wraps `inner`, a connection negotiated as HTTP/1.1 (`http1`) or HTTP/2.
    pub(super) fn new(
        inner: S,
        conn: Arc<ConnState>,
        header_timeout: Duration,
        http1: bool,
    ) -> Self {
        Self {
            inner,
            conn,
            header_timeout,
            header: None,
            http1,
            first_read: true,
        }
    }

    /// Bytes arrived: if they start a request head, the header timer starts.
    fn on_bytes(&mut self, bytes: &[u8]) {
        if std::mem::take(&mut self.first_read) && bytes.starts_with(H2_PREFACE) {
            self.http1 = false;
        }
        // Before the first request, the connection's first-request deadline applies.
        let started = self.conn.requests_started();
        if !self.http1 || started == 0 || self.conn.in_flight() > 0 {
            return;
        }
        match &mut self.header {
            Some((armed_at, _)) if *armed_at == started => {}
            Some((armed_at, sleep)) => {
                *armed_at = started;
                sleep.as_mut().reset(Instant::now() + self.header_timeout);
            }
            None => {
                self.header = Some((started, Box::pin(tokio::time::sleep(self.header_timeout))));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.on_bytes(&buf.filled()[before..]);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some((armed_at, sleep)) = &mut this.header else {
                    return Poll::Pending;
                };
                if *armed_at != this.conn.requests_started() || this.conn.in_flight() > 0 {
                    // The head was complete: the request started.
                    this.header = None;
                    return Poll::Pending;
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.conn.note_header_timeout();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers not received in time",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
