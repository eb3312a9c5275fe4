//! TLS clients over HTTP/1.1 and HTTP/2.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;

/// Addresses and trust: everything a client needs, cheap to clone into tasks.
#[derive(Clone)]
pub struct Target {
    /// TLS webhook address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// CAs to accept.
    pub trust: Trust,
}

/// HTTP version of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive.
    H1,
    /// HTTP/2.
    H2,
}

impl Proto {
    /// The ALPN protocol id.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Self::H1 => b"http/1.1",
            Self::H2 => b"h2",
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Aborts the connection driver when the last handle goes.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client connection (TLS, then HTTP/1.1 or HTTP/2), kept until dropped.
pub struct Conn {
    sender: Sender,
    driver: Arc<Driver>,
    /// The negotiated protocol.
    pub proto: Proto,
    /// Serial of the certificate the server presented on this connection.
    pub peer_serial: Vec<u8>,
    /// The negotiated TLS version.
    pub tls_version: Option<rustls::ProtocolVersion>,
    authority: String,
    /// Requests answered on this connection.
    pub answered: u64,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Target {
    /// A TLS connection to the webhook port offering `alpn`.
    pub async fn tls(&self, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
        self.tls_with(self.trust.client_config(alpn)).await
    }

    /// A TLS connection with an explicit client configuration.
    pub async fn tls_with(&self, config: Arc<ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").unwrap();
            TlsConnector::from(config).connect(name, tcp).await
        };
        tokio::time::timeout(IO_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS connect timed out"))?
    }

    /// A new connection speaking `proto`; errors are returned (for load tests).
    pub async fn try_connect(&self, proto: Proto) -> io::Result<Conn> {
        self.try_connect_with(proto, self.trust.client_config(&[proto.alpn()]), None)
            .await
    }

    /// An HTTP/2 connection whose client pings the server every `every`, idle or not,
    /// and answers the server's pings (hyper always does): the traffic that must not
    /// keep an idle connection open.
    pub async fn h2_pinging(&self, every: Duration) -> Conn {
        self.try_connect_with(
            Proto::H2,
            self.trust.client_config(&[Proto::H2.alpn()]),
            Some(every),
        )
        .await
        .unwrap_or_else(|err| panic!("connect pinging HTTP/2 to {}: {err}", self.addr))
    }

    /// A new connection with an explicit TLS client configuration (client
    /// certificates); `ping_every` makes an HTTP/2 client ping even when idle.
    pub async fn try_connect_with(
        &self,
        proto: Proto,
        config: Arc<ClientConfig>,
        ping_every: Option<Duration>,
    ) -> io::Result<Conn> {
        let tls = self.tls_with(config).await?;
        let (_, session) = tls.get_ref();
        let negotiated = session.alpn_protocol().map(<[u8]>::to_vec);
        if negotiated.as_deref() != Some(proto.alpn()) {
            return Err(io::Error::other(format!(
                "ALPN: asked {:?}, got {:?}",
                String::from_utf8_lossy(proto.alpn()),
                negotiated.map(|p| String::from_utf8_lossy(&p).into_owned())
            )));
        }
        let peer_serial = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|der| serial_of_der(der))
            .ok_or_else(|| io::Error::other("no peer certificate"))?;
        let tls_version = session.protocol_version();
        let io = TokioIo::new(tls);
        let (sender, driver) = match proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(io::Error::other)?;
                (
                    Sender::H1(sender),
                    Driver(tokio::spawn(async move {
                        let _ = conn.await;
                    })),
                )
            }
            Proto::H2 => {
                let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
                if let Some(every) = ping_every {
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(every)
                        .keep_alive_timeout(IO_TIMEOUT)
                        .keep_alive_while_idle(true);
                }
                let (sender, conn) = builder.handshake(io).await.map_err(io::Error::other)?;
                (
                    Sender::H2(sender),
                    Driver(tokio::spawn(async move {
                        let _ = conn.await;
                    })),
                )
            }
        };
        Ok(Conn {
            sender,
            driver: Arc::new(driver),
            proto,
            peer_serial,
            tls_version,
            authority: format!("localhost:{}", self.addr.port()),
            answered: 0,
        })
    }

    /// A new connection speaking `proto`.
    pub async fn connect(&self, proto: Proto) -> Conn {
        self.try_connect(proto)
            .await
            .unwrap_or_else(|err| panic!("connect {proto:?} to {}: {err}", self.addr))
    }

    /// A new HTTP/1.1 connection.
    pub async fn h1(&self) -> Conn {
        self.connect(Proto::H1).await
    }

    /// A new HTTP/2 connection.
    pub async fn h2(&self) -> Conn {
        self.connect(Proto::H2).await
    }

    /// POSTs `body` as JSON on a new HTTP/1.1 connection.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.h1().await.post(path, body).await
    }

    /// POSTs a review on a new HTTP/1.1 connection.
    pub async fn post_json(&self, path: &str, review: &Value) -> Reply {
        self.post(path, serde_json::to_vec(review).unwrap()).await
    }

    /// POSTs `body` on a new HTTP/1.1 connection and asserts that it is allowed.
    pub async fn assert_allowed(&self, path: &str, body: impl Into<Bytes>) {
        self.h1().await.assert_allowed(path, body).await;
    }

    /// Polls with `review` on new connections until the answer is allowed (a reload
    /// took effect), and returns it.
    pub async fn until_allowed(&self, what: &str, path: &str, review: &Value) -> Review {
        eventually(
            what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async move {
                let r = self.post_json(path, review).await.review();
                r.allowed.then_some(r)
            },
        )
        .await
    }

    /// Waits until new connections are served the certificate with this serial.
    pub async fn until_served(&self, what: &str, serial: &[u8]) {
        eventually(
            what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async move { (self.h1().await.peer_serial == serial).then_some(()) },
        )
        .await
    }

    /// GET on the metrics port.
    pub async fn get_metrics_port(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr, path)
            .await
            .unwrap_or_else(|err| panic!("GET {path} on {}: {err}", self.metrics_addr))
    }

    /// The Prometheus exposition.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.get_metrics_port("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }
}

impl Conn {
    /// Sends one request; the error is returned (for load tests).
    pub async fn try_send(&mut self, out: Outgoing<'_>) -> Result<Reply, String> {
        let Outgoing {
            method,
            path,
            content_type,
            body,
        } = out;
        let uri = match self.proto {
            Proto::H1 => path.to_owned(),
            Proto::H2 => format!("https://{}{path}", self.authority),
        };
        let mut builder = Request::builder().method(method).uri(uri);
        if self.proto == Proto::H1 {
            builder = builder.header(header::HOST, &self.authority);
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H1(sender) => {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    sender.send_request(request).await
                }
                Sender::H2(sender) => {
                    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                    sender.send_request(request).await
                }
            }
            .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        let reply = tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {IO_TIMEOUT:?}"))??;
        self.answered += 1;
        Ok(reply)
    }

    /// True once the connection is closed (its driver task ended).
    pub fn is_closed(&self) -> bool {
        self.driver.0.is_finished()
    }

    /// Another handle on the same HTTP/2 connection, for concurrent streams.
    pub fn stream(&self) -> Conn {
        let Sender::H2(sender) = &self.sender else {
            panic!("only HTTP/2 connections carry concurrent streams");
        };
        Conn {
            sender: Sender::H2(sender.clone()),
            driver: self.driver.clone(),
            proto: self.proto,
            peer_serial: self.peer_serial.clone(),
            tls_version: self.tls_version,
            authority: self.authority.clone(),
            answered: 0,
        }
    }

    /// Polls until the connection is closed; false if it is still open after `within`.
    pub async fn wait_closed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.is_closed() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// One request to send.
pub struct Outgoing<'p> {
    pub method: Method,
    pub path: &'p str,
    pub content_type: Option<&'p str>,
    pub body: Bytes,
}

impl<'p> Outgoing<'p> {
    /// A POST of `body` as `application/json`.
    pub fn json(path: &'p str, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path,
            content_type: Some(JSON),
            body: body.into(),
        }
    }
}

/// Where webhook requests go: a TLS connection, or the router in process
/// ([`super::app::App`]).
#[allow(async_fn_in_trait)]
pub trait Client {
    /// Sends one request; panics on transport errors.
    async fn deliver(&mut self, out: Outgoing<'_>) -> Reply;

    /// Sends `body` with `method` to `path`, with this content type if any.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let body = body.into();
        self.deliver(Outgoing {
            method,
            path,
            content_type,
            body,
        })
        .await
    }

    /// POSTs `body` as `application/json`.
    async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, path, Some(JSON), body).await
    }

    /// POSTs a review.
    async fn post_json(&mut self, path: &str, review: &Value) -> Reply {
        self.post(path, serde_json::to_vec(review).unwrap()).await
    }

    /// POSTs `body` and asserts that it is allowed.
    async fn assert_allowed(&mut self, path: &str, body: impl Into<Bytes>) {
        let review = self.post(path, body).await.review();
        assert!(review.allowed, "{path} refused: {review:?}");
    }
}

impl Client for Conn {
    async fn deliver(&mut self, out: Outgoing<'_>) -> Reply {
        let (proto, method, path) = (self.proto, out.method.clone(), out.path);
        self.try_send(out)
            .await
            .unwrap_or_else(|err| panic!("{method} {path} over {proto:?}: {err}"))
    }
}
