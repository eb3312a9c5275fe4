//! Raw sockets: hand-written requests and responses read byte by byte, for hostile input.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// A raw HTTP/1.x answer read off a socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// As a [`Reply`] (for the same assertions as client answers).
    pub fn to_reply(&self) -> Reply {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        Reply {
            status: self.status,
            headers,
            body: Bytes::from(self.body.clone()),
        }
    }
}

/// Bytes of an HTTP/1.1 request with `Host`, the given headers and the body.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A JSON POST as raw bytes, with `Content-Length`.
pub fn raw_post(path: &str, body: &[u8]) -> Vec<u8> {
    raw_post_start(path, body.len(), body)
}

/// The start of a JSON POST that declares `declared` body bytes and carries only `sent`
/// (a slow or stalled upload).
pub fn raw_post_start(path: &str, declared: usize, sent: &[u8]) -> Vec<u8> {
    raw_request(
        "POST",
        path,
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", declared.to_string()),
        ],
        sent,
    )
}

/// Reads one HTTP/1.x response (Content-Length, chunked, or until EOF).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<RawResponse> {
    tokio::time::timeout(IO_TIMEOUT, read_response_inner(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response"))?
}

/// Appends what the stream has next to `buf`, at most `max` bytes (never past what the
/// response declares, so a pipelined next response stays unread); the end of the
/// stream is an error, `cut_short` saying what it cut (given what was read).
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
    cut_short: impl FnOnce(&[u8]) -> String,
) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk[..max.min(4096)]).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, cut_short(buf)));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

async fn read_response_inner<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        read_more(stream, &mut buf, 4096, |got| {
            format!(
                "closed before a full response head; got {:?}",
                String::from_utf8_lossy(got)
            )
        })
        .await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if status == 100 {
        // An interim answer: hand back what we have; the caller reads again.
        return Ok(RawResponse {
            version,
            status,
            headers,
            body: rest,
        });
    }
    let body = if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(io::Error::other)?;
        while rest.len() < len {
            let missing = len - rest.len();
            read_more(stream, &mut rest, missing, |_| "body cut short".to_owned()).await?;
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            while find(&rest, b"\r\n").is_none() {
                read_more(stream, &mut rest, 4096, |_| {
                    "chunked body cut short".to_owned()
                })
                .await?;
            }
            let line_end = find(&rest, b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .map_err(io::Error::other)?;
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                read_more(stream, &mut rest, 4096, |_| "chunk cut short".to_owned()).await?;
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
        body
    } else {
        stream.read_to_end(&mut rest).await?;
        rest
    };
    Ok(RawResponse {
        version,
        status,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` and reads one response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> io::Result<RawResponse> {
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(request))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
    stream.flush().await?;
    read_response(stream).await
}

/// How a connection ended when read until it closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Clean EOF after these bytes.
    Eof(Vec<u8>),
    /// An error (reset, TLS error...) after these bytes.
    Error(Vec<u8>, String),
    /// Still open after the time allowed, with these bytes read.
    StillOpen(Vec<u8>),
}

impl Ending {
    /// Bytes received before the end.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Eof(b) | Self::Error(b, _) | Self::StillOpen(b) => b,
        }
    }

    /// The connection was closed (cleanly or not).
    pub fn closed(&self) -> bool {
        !matches!(self, Self::StillOpen(_))
    }
}

/// Reads until EOF or error, for at most `within`.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Ending {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ending::StillOpen(got),
            Ok(Ok(0)) => return Ending::Eof(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => return Ending::Error(got, err.to_string()),
        }
    }
}

/// GET over plain HTTP (the metrics port): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let get = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let response = exchange(&mut tcp, request.as_bytes()).await?;
        Ok((
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "GET timed out"))?
}
