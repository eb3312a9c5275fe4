//! A second mutating webhook, served by the test itself: a sidecar injector in the manner of
//! Istio's, which adds containers after dhi-admission has seen the pod.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;

/// The containers it adds, unless the pod has them already.
pub fn sidecars() -> Value {
    json!([
        // A hardened image with no user set: needs dhi-admission's user injection.
        {"name": "log-shipper", "image": "dhi.io/python:3.13",
         "command": ["python3", "/opt/ship.py"]},
        // An upstream proxy running as its own user: needs the rewrite.
        {"name": "mesh-proxy", "image": "docker.io/istio/proxyv2:1.30.3",
         "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true}},
    ])
}

/// The injector: `url` is its HTTPS address, `ca_pem` what to put in `caBundle`.
pub struct Injector {
    pub url: String,
    pub ca_pem: String,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Injector {
    pub async fn start() -> Injector {
        let certs = dhi_admission::certs::generate_pair(&[], &[], Duration::from_secs(86_400))
            .expect("certificates");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let counter = counter.clone();
                        async move { Ok::<_, Infallible>(inject(req, &counter).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Injector {
            url,
            ca_pem: certs.ca_cert_pem,
            calls,
            task,
        }
    }

    /// How many AdmissionReviews it answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn inject(req: Request<hyper::body::Incoming>, calls: &AtomicUsize) -> Response<Full<Bytes>> {
    calls.fetch_add(1, Ordering::SeqCst);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let request = &review["request"];
    let names: Vec<&str> = request["object"]["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let ops: Vec<Value> = sidecars()
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !names.contains(&c["name"].as_str().unwrap()))
        .map(|c| json!({"op": "add", "path": "/spec/containers/-", "value": c}))
        .collect();
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if !ops.is_empty() {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap())
        );
    }
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response,
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())))
        .unwrap()
}
