//! The connection to a cluster: its nodes, credentials, and the failover rule every request
//! goes through ([`Client::send`]).
//!
//! Failover rule, by what a request does when it is repeated:
//! - a request that fails before it is sent (the node refuses the connection) moves on to the
//!   next node, whatever it is;
//! - a [`Retry::Safe`] request (a read, a listing, an idempotent admin call) also moves on after
//!   a timeout, a broken connection or a 502/503/504;
//! - a [`Retry::Never`] request (a write) that was sent and then failed that way (or with any
//!   other 5xx but 507) is
//!   [`Error::Indeterminate`]: resending it would be a second write with the same context, which
//!   the store keeps as a sibling of the first — a duplicate.
//!
//! At most [`ClientBuilder::attempts`] attempts are made, with a short exponential pause between
//! them; the node that last answered is tried first next time.

use crate::error::{Error, Result};
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The header carrying the causal-context token, in both directions.
pub const CONTEXT_HEADER: &str = "x-causal-context";
/// The header naming the node that served a request.
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// Whether a request may be sent again after it may have reached a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it changes nothing (reads, listings, merges, restores of backed-up versions).
    Safe,
    /// Repeating it could apply it twice (puts, deletes, batches with writes, view changes).
    Never,
}

/// One HTTP request, kept so it can be sent to another node.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: reqwest::Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    pub retry: Retry,
}

impl Request {
    /// A request of `method` to `path` (path and query, starting with `/`).
    pub fn new(method: reqwest::Method, path: impl Into<String>, retry: Retry) -> Request {
        Request {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: None,
            retry,
        }
    }

    /// A `GET` of `path`: safe to retry.
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(reqwest::Method::GET, path, Retry::Safe)
    }

    /// Sets a header; a value that is not a valid header value is a configuration error.
    pub fn header(mut self, name: &'static str, value: &str) -> Result<Request> {
        let v = HeaderValue::from_str(value)
            .map_err(|_| Error::Config(format!("{name}: not a valid header value")))?;
        self.headers.insert(name, v);
        Ok(self)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Request {
        self.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.body = Some(Bytes::from(body.to_string()));
        self
    }
}

/// A node's answer, read in full.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The base URL of the node that answered.
    pub node: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The causal-context token the reply carries.
    pub fn context(&self) -> Option<&str> {
        self.header(CONTEXT_HEADER)
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            node: self.node.clone(),
            detail: format!("the body is not JSON: {e}"),
        })
    }

    /// The error this reply stands for, from its `{"error","detail"}` body.
    pub fn error(&self) -> Error {
        let v = serde_json::from_slice::<serde_json::Value>(&self.body).unwrap_or_default();
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let detail = text("detail").unwrap_or_else(|| {
            String::from_utf8_lossy(&self.body[..self.body.len().min(500)]).into()
        });
        let node = self.node.clone();
        match self.status {
            401 => Error::Unauthorized { node, detail },
            403 => Error::Forbidden { node, detail },
            status => Error::Api {
                node,
                status,
                error: text("error").unwrap_or_else(|| format!("HTTP {status}")),
                detail,
            },
        }
    }

    /// The reply itself when its status is 2xx, else its error.
    pub fn success(self) -> Result<Reply> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(self.error())
        }
    }
}

/// How a [`Client`] is set up; see [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
    attempts: u32,
    pool_idle: Option<usize>,
}

impl ClientBuilder {
    /// Adds a node: a base URL (`http://` or `https://`) or `host:port` (meaning `http://`).
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// Adds several nodes (see [`ClientBuilder::node`]).
    pub fn nodes<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Sends `token` as `Authorization: Bearer` (surrounding whitespace is ignored; an empty
    /// token means none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let t = token.into().trim().to_owned();
        self.token = (!t.is_empty()).then_some(t);
        self
    }

    /// Trusts the CA certificates (PEM) in `pem` for `https://` nodes, instead of any other
    /// root: `causeway cluster` and `causeway certs` write theirs to `tls/ca.pem`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Reads the CA certificates to trust from a PEM file (see [`ClientBuilder::ca_pem`]).
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Ok(self.ca_pem(pem))
    }

    /// Longest wait for one attempt, connection and reply included (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Most attempts per request, across nodes (default 3, at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Idle keep-alive connections kept per node (default: reqwest's).
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_idle = Some(n);
        self
    }

    /// Builds the client; fails on an address that is not a node, an unreadable CA or a token
    /// that cannot be sent as a header.
    pub fn build(self) -> Result<Client> {
        if self.nodes.is_empty() {
            return Err(Error::Config("no node given".into()));
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| base_url(n))
            .collect::<Result<Vec<_>>>()?;
        let mut b = reqwest::Client::builder().timeout(self.timeout);
        if let Some(n) = self.pool_idle {
            b = b.pool_max_idle_per_host(n);
        }
        if let Some(token) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v);
            b = b.default_headers(h);
        }
        b = b.use_preconfigured_tls(tls_config(self.ca_pem.as_deref())?);
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                nodes,
                attempts: self.attempts,
                preferred: AtomicUsize::new(0),
            }),
        })
    }
}

/// A rustls configuration trusting the CA certificates in `ca_pem` (none: no root at all, so
/// only `http://` nodes can be reached), with the ring provider.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("the CA file is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config("the CA file holds no certificate".into()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| Error::Config(format!("the CA certificate is invalid: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// The base URL of `node` without a trailing slash; `host:port` means `http://host:port`.
pub fn base_url(node: &str) -> Result<String> {
    let node = node.trim().trim_end_matches('/');
    let url = if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    };
    let bad = || Error::Config(format!("{node:?} is not host:port or an http(s):// URL"));
    let parsed = reqwest::Url::parse(&url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    Ok(url)
}

struct Inner {
    http: reqwest::Client,
    nodes: Vec<String>,
    attempts: u32,
    /// Index of the node to try first: the last one that answered.
    preferred: AtomicUsize,
}

/// A connection to a cluster through a list of nodes. Cheap to clone (clones share the
/// connection pool). Requests carry no causal context by themselves: use a
/// [`Session`](crate::Session) for reads and writes.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.inner.nodes)
            .field("attempts", &self.inner.attempts)
            .finish_non_exhaustive()
    }
}

/// Pause before attempt `n` (1-based retries): 100 ms, 200 ms, 400 ms, … up to 1.6 s.
fn pause(n: u32) -> Duration {
    Duration::from_millis(100 << n.saturating_sub(1).min(4))
}

impl Client {
    /// A builder with no nodes, no token, no CA, a 30 s timeout and 3 attempts.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            nodes: Vec::new(),
            token: None,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            attempts: 3,
            pool_idle: None,
        }
    }

    /// A client that sends to `node` (a base URL) only, once per request, sharing this one's
    /// connections and credentials: for asking one particular member.
    pub fn only(&self, node: &str) -> Client {
        Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                nodes: vec![node.to_owned()],
                attempts: 1,
                preferred: AtomicUsize::new(0),
            }),
        }
    }

    /// The nodes' base URLs, as configured.
    pub fn nodes(&self) -> &[String] {
        &self.inner.nodes
    }

    /// Sends `req` by the failover rule of this module and returns the first answer that is not
    /// worth retrying (which may be an error status: see [`Reply::success`]).
    pub async fn send(&self, req: &Request) -> Result<Reply> {
        self.send_preferring(None, req).await
    }

    /// Like [`Client::send`], trying `first` (a base URL, e.g. a replica named by the view)
    /// before the configured nodes.
    pub async fn send_preferring(&self, first: Option<&str>, req: &Request) -> Result<Reply> {
        let inner = &self.inner;
        let n = inner.nodes.len();
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for attempt in 0..inner.attempts {
            if attempt > 0 {
                tokio::time::sleep(pause(attempt)).await;
            }
            let (node, index) = match first {
                Some(f) if attempt == 0 => (f, None),
                Some(_) => {
                    let i = (start + attempt as usize - 1) % n;
                    (inner.nodes[i].as_str(), Some(i))
                }
                None => {
                    let i = (start + attempt as usize) % n;
                    (inner.nodes[i].as_str(), Some(i))
                }
            };
            match self.send_once(node, req).await {
                Ok(reply) if req.retry == Retry::Safe && matches!(reply.status, 502..=504) => {
                    failures.push(reply.error().to_string());
                }
                Ok(reply) if req.retry == Retry::Never && indeterminate(reply.status) => {
                    return Err(Error::Indeterminate {
                        node: node.to_owned(),
                        cause: reply.error().to_string(),
                    });
                }
                Ok(reply) => {
                    if let Some(i) = index {
                        inner.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(reply);
                }
                Err(e) if e.is_connect() || req.retry == Retry::Safe => {
                    failures.push(format!("{node}: {}", describe(&e)));
                }
                Err(e) => {
                    return Err(Error::Indeterminate {
                        node: node.to_owned(),
                        cause: describe(&e),
                    });
                }
            }
        }
        Err(Error::Unavailable { attempts: failures })
    }

    async fn send_once(&self, node: &str, req: &Request) -> reqwest::Result<Reply> {
        let mut r = self
            .inner
            .http
            .request(req.method.clone(), format!("{node}{}", req.path))
            .headers(req.headers.clone());
        if let Some(b) = &req.body {
            r = r.body(b.clone());
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        Ok(Reply {
            node: node.to_owned(),
            status,
            headers,
            body,
        })
    }
}

/// True for the statuses after which a sent write may or may not have been applied: every 5xx
/// but 507 (a full disk refuses the write before it is applied).
fn indeterminate(status: u16) -> bool {
    (500..600).contains(&status) && status != 507
}

/// A transport error with its causes (reqwest's own message is often only "error sending
/// request").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Percent-encodes bytes for a path segment or query value (every byte but `[A-Za-z0-9]`).
pub fn encode_component(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_without_a_scheme_mean_http() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h:1").unwrap(), "https://h:1");
        assert!(base_url("ftp://h:1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn a_client_needs_a_node_and_a_readable_ca() {
        assert!(matches!(Client::builder().build(), Err(Error::Config(_))));
        let b = Client::builder().node("127.0.0.1:1");
        assert!(matches!(
            b.clone().ca_pem(b"not pem".to_vec()).build(),
            Err(Error::Config(_))
        ));
        assert!(b.ca_file("/nonexistent/ca.pem").is_err());
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let reply = |status, body: &str| Reply {
            node: "http://n:1".into(),
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        };
        let conflict = reply(409, r#"{"error":"conflict","detail":"too many siblings"}"#).error();
        assert!(matches!(&conflict, Error::Api { status: 409, error, .. } if error == "conflict"));
        assert!(matches!(
            reply(401, "{}").error(),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            reply(403, "no").error(),
            Error::Forbidden { detail, .. } if detail == "no"
        ));
    }

    #[test]
    fn retry_pauses_grow_and_stay_bounded() {
        assert_eq!(pause(1), Duration::from_millis(100));
        assert_eq!(pause(2), Duration::from_millis(200));
        assert_eq!(pause(30), Duration::from_millis(1600));
    }
}
