//! Peer transport: persistent connections carrying length-prefixed bincode frames, over mutual
//! TLS unless the node runs `--insecure`.
//!
//! Peers reach each other on the same address clients use, told apart by the first byte
//! ([`SplitListener`]):
//! - `0x16` (a TLS ClientHello) with a TLS configuration: the handshake runs first; ALPN
//!   [`PEER_ALPN`] with a certificate of the cluster CA makes a peer link, [`NODE_HTTP_ALPN`]
//!   with one makes HTTP from another node, anything else is client HTTPS. A presented
//!   certificate of another CA fails the handshake, so nothing from it is ever decoded —
//!   unless that CA is a `--mesh-ca` (docs/mesh.md): then a peer link carries mesh messages only
//!   (any other frame is refused and the link closed, and an outbound link to such a peer
//!   drops any other message; both counted as `reason="mesh_only"`), and its node HTTP is
//!   served as an anonymous client's.
//! - NUL: a plaintext peer link, accepted only by an `--insecure` node (refused and counted
//!   otherwise);
//! - anything else: plaintext HTTP, served unless TLS is configured and the node listens on a
//!   non-loopback address (then a fixed 400 names HTTPS and the connection is closed).
//!
//! A link opens with the preamble [`PEER_MAGIC`] + a big-endian `u16` [`PEER_VERSION`]; a peer of
//! another version is refused with a log line. A frame is a big-endian `u32` length (at most
//! [`MAX_FRAME`], checked before anything is allocated) followed by `bincode((from, PeerMsg))`.
//! Its bytes are read in chunks of at most [`READ_CHUNK`] as they arrive, so a claimed length
//! costs nothing until the bytes come; a link that stalls mid-frame for [`READ_TIMEOUT`], or
//! stays silent for [`IDLE_TIMEOUT`], is closed. Over TLS the sender is the authenticated
//! certificate's identity: a frame whose `from` is not among the addresses the certificate names
//! is rejected and the link closed. Every refusal is counted in
//! `causeway_peer_rejected_total{reason}`.
//!
//! Both directions run on the driver's runtime (see `driver.rs`). Each peer has one outbound
//! connection fed by a bounded queue ([`PEER_QUEUE`] messages); when it is full, messages are
//! dropped and counted — the core retries replication and fails forwards over, so a slow or dead
//! peer costs bounded memory. Connections are re-established with exponential backoff (up to
//! [`MAX_BACKOFF`]). An outbound socket carries `TCP_USER_TIMEOUT` = [`UNACKED_TIMEOUT`]: data the
//! peer has not acknowledged for that long aborts the connection, so a link black-holed by a
//! partition is redialled within seconds of the heal instead of waiting out the kernel's
//! retransmission backoff (which reaches tens of seconds after a long cut, and ends the
//! connection only after ~15 minutes). Inbound links push messages into the driver's bounded queue and so exert
//! back-pressure on the sender through TCP.

use super::inbox::Event;
use super::tls::{NODE_HTTP_ALPN, NodeTls, PEER_ALPN, identities, server_name};
use crate::core::{NodeId, PeerMsg};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// First bytes a peer sends on a new link, followed by its [`PEER_VERSION`].
pub const PEER_MAGIC: &[u8; 7] = b"\0CWPEER";
/// Version of the peer protocol (frames and messages); peers must speak the same one.
pub const PEER_VERSION: u16 = 2;
/// Largest frame accepted or sent (the core's decode limit).
pub const MAX_FRAME: usize = crate::core::message::MAX_FRAME;
/// Most bytes of a frame read (and allocated) per read call.
pub const READ_CHUNK: usize = 64 << 10;
/// Longest a link may stall in the middle of a preamble or frame.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a link may stay without any frame (members ping every tick, so live links never do).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 8192;
/// Longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an outbound link's sent data may stay unacknowledged before the kernel aborts the
/// connection (`TCP_USER_TIMEOUT`). Live peers acknowledge within milliseconds, and members ping
/// every tick, so only a dead or cut-off peer ever reaches it.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to a peer: a TCP socket without Nagle's delay and with [`UNACKED_TIMEOUT`].
pub async fn dial_tcp(to: &str) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(to).await?;
    tcp.set_nodelay(true)?;
    socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(UNACKED_TIMEOUT))?;
    Ok(tcp)
}
/// How long an accepted connection may stay silent before it is classified as HTTP.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// A read buffer larger than this is released after its frame instead of being kept.
const KEEP_BUFFER: usize = 4 << 20;

/// Counts a refused connection or frame.
fn reject(reason: &'static str) {
    metrics::counter!("causeway_peer_rejected_total", "reason" => reason).increment(1);
}

/// How peer links are secured.
#[derive(Clone)]
pub enum PeerSecurity {
    /// `--insecure`: plaintext links, senders are whoever the frames say.
    Plain,
    /// Mutual TLS with the cluster CA.
    Tls(Arc<NodeTls>),
}

/// Outbound side: one queue and one connection task per peer, created on first use on the
/// runtime that calls [`Transport::send`] (the driver's).
pub struct Transport {
    me: NodeId,
    security: PeerSecurity,
    peers: HashMap<NodeId, mpsc::Sender<PeerMsg>>,
    links: Vec<tokio::task::JoinHandle<()>>,
}

impl Transport {
    pub fn new(me: NodeId, security: PeerSecurity) -> Self {
        Transport {
            me,
            security,
            peers: HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Queues `msg` for `to` without waiting; drops it when that peer's queue is full.
    pub fn send(&mut self, to: &NodeId, msg: PeerMsg) {
        let queue = self.peers.entry(to.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            self.links.push(tokio::spawn(run_link(
                self.me.clone(),
                to.clone(),
                self.security.clone(),
                rx,
            )));
            tx
        });
        if queue.try_send(msg).is_err() {
            // No peer label: a series per peer would outlive the peer (counters are never
            // removed from the exporter); the queue depth gauge tells which peer is behind.
            metrics::counter!("causeway_peer_messages_dropped_total").increment(1);
        }
    }

    /// Drops `peer`'s queue: its link writes what the queue holds if it is connected, and ends
    /// at once if it is not (see [`run_link`]). A later [`Transport::send`] starts a new link.
    pub fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
        self.links.retain(|l| !l.is_finished());
    }

    /// Closes every queue and waits, at most `within`, for the links to write what they hold.
    pub async fn close(&mut self, within: Duration) {
        self.peers.clear();
        let links = std::mem::take(&mut self.links);
        let _ = tokio::time::timeout(within, async {
            for link in links {
                let _ = link.await;
            }
        })
        .await;
    }

    /// Messages waiting in each peer's queue.
    pub fn depths(&self) -> impl Iterator<Item = (&NodeId, usize)> {
        self.peers
            .iter()
            .map(|(p, q)| (p, q.max_capacity() - q.capacity()))
    }
}

/// Opens a TLS peer link to `to` and checks that the certificate it presents names `to`; also
/// tells whether that certificate chains to the cluster CA (`false`: only to a mesh CA, so the
/// link may carry mesh messages only).
pub async fn dial_tls(
    tls: &NodeTls,
    to: &str,
    tcp: TcpStream,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, bool)> {
    let name = server_name(to).map_err(std::io::Error::other)?;
    let stream = TlsConnector::from(tls.peer_client.clone())
        .connect(name.clone(), tcp)
        .await?;
    let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
    let names = chain.first().map(identities).unwrap_or_default();
    if !names.iter().any(|n| n == to) {
        return Err(std::io::Error::other(format!(
            "{to} presented a certificate for {names:?}"
        )));
    }
    let of_cluster = tls.server_of_cluster(chain, &name);
    Ok((stream, of_cluster))
}

/// Keeps a connection to `to` open and writes every queued message to it. Ends when the queue
/// is closed and drained, or closed while the peer cannot be reached (it was forgotten: what it
/// still holds is for nobody).
async fn run_link(me: NodeId, to: NodeId, security: PeerSecurity, mut rx: mpsc::Receiver<PeerMsg>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if rx.is_closed() && backoff > MIN_BACKOFF {
            tracing::debug!(peer = %to, dropped = rx.len(), "link to a forgotten peer ends");
            return;
        }
        let connect = async {
            let tcp = dial_tcp(&to).await?;
            match &security {
                PeerSecurity::Plain => Ok((Link::Plain(tcp), false)),
                PeerSecurity::Tls(tls) => dial_tls(tls, &to, tcp)
                    .await
                    .map(|(s, of_cluster)| (Link::Tls(Box::new(s)), !of_cluster)),
            }
        };
        let (link, mesh_only) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::debug!(peer = %to, "connect failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::debug!(peer = %to, "connect timed out");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        tracing::debug!(peer = %to, mesh_only, "connected");
        let written = match link {
            Link::Plain(s) => write_frames(&me, s, mesh_only, &mut rx).await,
            Link::Tls(s) => write_frames(&me, *s, mesh_only, &mut rx).await,
        };
        match written {
            Ok(()) => return,
            Err(e) => tracing::debug!(peer = %to, "link lost: {e}"),
        }
    }
}

/// An outbound link's stream.
enum Link {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The preamble of a link: magic and protocol version.
pub fn preamble() -> [u8; 9] {
    let mut p = [0u8; 9];
    p[..7].copy_from_slice(PEER_MAGIC);
    p[7..].copy_from_slice(&PEER_VERSION.to_be_bytes());
    p
}

/// Writes queued messages until the queue closes (`Ok`) or the connection fails (`Err`). On a
/// `mesh_only` link (the peer's certificate is of a mesh CA) only mesh messages are written;
/// any other is dropped and counted (`reason="mesh_only"`).
///
/// The peer never writes on this connection, so a read that returns means the peer closed it
/// (e.g. its process died and the kernel sent FIN). Watching for that while idle lets the link
/// reconnect at once to a restarted peer, instead of writing the next messages into the dead
/// socket, where they would be lost (a forwarded request then waits out its timeout).
async fn write_frames<S: AsyncRead + AsyncWrite + Unpin>(
    me: &str,
    stream: S,
    mesh_only: bool,
    rx: &mut mpsc::Receiver<PeerMsg>,
) -> std::io::Result<()> {
    let (mut rd, wr) = tokio::io::split(stream);
    let mut w = BufWriter::with_capacity(64 << 10, wr);
    w.write_all(&preamble()).await?;
    w.flush().await?;
    let mut buf = Vec::new();
    let mut probe = [0u8; 64];
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            r = rd.read(&mut probe) => {
                return Err(match r {
                    Ok(_) => std::io::Error::other("the peer closed the connection"),
                    Err(e) => e,
                });
            }
        };
        let Some(msg) = msg else { return Ok(()) };
        let mut next = Some(msg);
        while let Some(msg) = next {
            if mesh_only && !msg.is_mesh() {
                reject("mesh_only");
                tracing::debug!(kind = msg.kind(), "not sent to a peer of a mesh CA");
            } else {
                write_frame(&mut w, &mut buf, me, &msg).await?;
            }
            next = rx.try_recv().ok();
        }
        w.flush().await?;
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &mut Vec<u8>,
    me: &str,
    msg: &PeerMsg,
) -> std::io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write((me, msg), buf, bincode::config::standard())
        .map_err(std::io::Error::other)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        tracing::warn!(kind = msg.kind(), len, "dropping an oversized peer message");
        return Ok(());
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(buf).await
}

/// Why an inbound link was closed.
#[derive(Debug)]
struct Refused {
    reason: &'static str,
    detail: String,
}

impl Refused {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Refused {
            reason,
            detail: detail.into(),
        }
    }
}

/// Reads exactly `buf.len()` bytes, each read within [`READ_TIMEOUT`].
async fn read_within<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), Refused> {
    match tokio::time::timeout(READ_TIMEOUT, r.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Refused::new("truncated", e.to_string())),
        Err(_) => Err(Refused::new("timeout", "the peer stalled")),
    }
}

/// Reads a frame of `len` bytes into `buf` in chunks of at most [`READ_CHUNK`], so memory grows
/// only with the bytes that actually arrived.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), Refused> {
    buf.clear();
    while buf.len() < len {
        let start = buf.len();
        buf.resize(start + (len - start).min(READ_CHUNK), 0);
        match tokio::time::timeout(READ_TIMEOUT, r.read(&mut buf[start..])).await {
            Ok(Ok(0)) => {
                return Err(Refused::new(
                    "truncated",
                    format!("the link closed after {start} of {len} bytes"),
                ));
            }
            Ok(Ok(n)) => buf.truncate(start + n),
            Ok(Err(e)) => return Err(Refused::new("truncated", e.to_string())),
            Err(_) => {
                return Err(Refused::new(
                    "timeout",
                    format!("stalled after {start} of {len} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// Reads frames from an accepted peer link and hands them to the driver. `sender` is the set
/// of addresses the link's certificate names (`None` on a plaintext link: anything goes).
/// `mesh_only` when that certificate chains only to a mesh CA: a frame that is not a mesh
/// message is refused and the link closed.
async fn read_frames<R: AsyncRead + Unpin>(
    stream: R,
    sender: Option<Vec<NodeId>>,
    mesh_only: bool,
    inbox: mpsc::Sender<Event>,
) -> Result<(), Refused> {
    let mut r = tokio::io::BufReader::with_capacity(READ_CHUNK, stream);
    let mut pre = [0u8; 9];
    read_within(&mut r, &mut pre).await?;
    if pre[..7] != PEER_MAGIC[..] {
        return Err(Refused::new("preamble", "not a peer preamble"));
    }
    let version = u16::from_be_bytes([pre[7], pre[8]]);
    if version != PEER_VERSION {
        return Err(Refused::new(
            "version",
            format!("the peer speaks protocol version {version}; this node speaks {PEER_VERSION}"),
        ));
    }
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; 4];
        match tokio::time::timeout(IDLE_TIMEOUT, r.read_exact(&mut header[..1])).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Ok(()),
            Err(_) => return Err(Refused::new("idle", "no frame within the idle timeout")),
        }
        read_within(&mut r, &mut header[1..]).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(Refused::new(
                "oversize",
                format!("a frame of {len} bytes (the limit is {MAX_FRAME})"),
            ));
        }
        read_frame(&mut r, &mut buf, len).await?;
        let (from, msg) = crate::core::message::decode_frame(&buf)
            .map_err(|e| Refused::new("malformed", e.to_string()))?;
        if buf.capacity() > KEEP_BUFFER {
            buf = Vec::new();
        }
        if mesh_only && !msg.is_mesh() {
            return Err(Refused::new(
                "mesh_only",
                format!(
                    "{from}, authenticated by a mesh CA only, sent a {} message",
                    msg.kind()
                ),
            ));
        }
        if let Some(names) = &sender {
            if !names.contains(&from) {
                return Err(Refused::new(
                    "sender",
                    format!("a frame claims to come from {from}; the certificate names {names:?}"),
                ));
            }
            // A join names the joining node: only that node may ask.
            if let PeerMsg::Join { node } = &msg
                && *node != from
            {
                return Err(Refused::new(
                    "sender",
                    format!("{from} asked to join on behalf of {node}"),
                ));
            }
        }
        if inbox.send(Event::Peer { from, msg }).await.is_err() {
            return Ok(());
        }
    }
}

/// Who is on the other side of an HTTP connection, for handlers (`ConnectInfo`).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The node addresses named by a cluster certificate presented for node HTTP.
    pub node: Option<Arc<[NodeId]>>,
}

/// A TCP stream that can be moved to another runtime after a TLS handshake ran over it.
pub struct Movable(Option<TcpStream>);

impl Movable {
    fn io(&mut self) -> std::io::Result<&mut TcpStream> {
        self.0
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the stream is being moved"))
    }

    /// Re-registers the stream with the current runtime.
    fn rebind(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.0.take() {
            self.0 = Some(TcpStream::from_std(s.into_std()?)?);
        }
        Ok(())
    }
}

impl AsyncRead for Movable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Movable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

type ServerTls = tokio_rustls::server::TlsStream<Movable>;

/// An HTTP connection: plaintext or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<ServerTls>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The bytes written to a connection refused at the connection cap.
pub const SHED_CONNECTION: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: application/json\r\nconnection: close\r\ncontent-length: 72\r\n\r\n\
{\"error\":\"overloaded\",\"detail\":\"too many open connections; retry later\"}";

/// An accepted HTTP connection with its slot under the connection cap.
pub struct Accepted {
    pub conn: Conn,
    /// Who the connection is from (read by the auth layer as `ConnectInfo`).
    pub info: ConnInfo,
    pub permit: OwnedSemaphorePermit,
}

/// The HTTP half of a listener whose peer connections are diverted to the driver.
///
/// Every accepted connection takes a slot of `slots` (held until it closes, whichever half it
/// goes to); when none is free it is answered with a canned 503 and closed at once, so a flood
/// of connections cannot exhaust the open-files limit.
pub struct SplitListener {
    http: mpsc::Receiver<Accepted>,
}

/// What the listener accepts.
#[derive(Clone)]
pub struct Accepting {
    pub security: PeerSecurity,
    /// Serve plaintext HTTP (always with `--insecure` or without TLS; with TLS only on loopback).
    pub plain_http: bool,
}

impl SplitListener {
    /// Accepts on `listener`, classifying each connection by its first byte; peer links are
    /// read on `links` (the driver's runtime).
    pub fn new(
        listener: TcpListener,
        inbox: mpsc::Sender<Event>,
        links: Handle,
        accepting: Accepting,
        slots: Arc<Semaphore>,
    ) -> Self {
        let (tx, http) = mpsc::channel(1024);
        tokio::spawn(accept_loop(listener, tx, inbox, links, accepting, slots));
        SplitListener { http }
    }

    /// The next HTTP connection; `None` once the accept loop is gone.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.http.recv().await
    }
}

/// Refusal of plaintext HTTP on a node that serves HTTPS.
const USE_HTTPS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 85\r\n\r\n{\"error\":\"bad request\",\"detail\":\"this node serves HTTPS only on a non-loopback port\"}";

async fn accept_loop(
    listener: TcpListener,
    http: mpsc::Sender<Accepted>,
    inbox: mpsc::Sender<Event>,
    links: Handle,
    accepting: Accepting,
    slots: Arc<Semaphore>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit: OwnedSemaphorePermit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                metrics::counter!("causeway_http_connections_shed_total").increment(1);
                let _ = stream.try_write(SHED_CONNECTION);
                continue;
            }
        };
        let http = http.clone();
        let inbox = inbox.clone();
        let links = links.clone();
        let accepting = accepting.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await;
            let first = match peeked {
                Ok(Ok(1)) => first[0],
                _ => return,
            };
            match (&accepting.security, first) {
                (PeerSecurity::Plain, 0) => plain_link(stream, addr, inbox, &links, permit),
                (PeerSecurity::Tls(_), 0) => {
                    reject("plaintext");
                    tracing::debug!(%addr, "refused a plaintext peer link: peers must use TLS");
                }
                (PeerSecurity::Tls(tls), TLS_HANDSHAKE) => {
                    let tls = tls.clone();
                    if let Some(conn) = handshake(&tls, stream, addr, inbox, &links, permit).await {
                        let _ = http.send(conn).await;
                    }
                }
                _ if accepting.plain_http => {
                    let info = ConnInfo {
                        remote: addr,
                        node: None,
                    };
                    let conn = Conn::Plain(stream);
                    let _ = http.send(Accepted { conn, info, permit }).await;
                }
                _ => {
                    let mut stream = stream;
                    let _ = stream.write_all(USE_HTTPS).await;
                }
            }
        });
    }
}

/// Hands a plaintext peer link to the driver's runtime.
fn plain_link(
    stream: TcpStream,
    addr: SocketAddr,
    inbox: mpsc::Sender<Event>,
    links: &Handle,
    permit: OwnedSemaphorePermit,
) {
    match stream.into_std() {
        Ok(stream) => {
            links.spawn(async move {
                let _permit = permit;
                let read = match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        read_frames(stream, None, false, inbox).await
                    }
                    Err(e) => Err(Refused::new("io", e.to_string())),
                };
                log_refusal(addr, read);
            });
        }
        Err(e) => tracing::debug!(%addr, "cannot hand over a peer link: {e}"),
    }
}

fn log_refusal(addr: SocketAddr, read: Result<(), Refused>) {
    if let Err(r) = read {
        reject(r.reason);
        if r.reason == "version" {
            tracing::warn!(%addr, "refused a peer link: {}", r.detail);
        } else {
            tracing::debug!(%addr, reason = r.reason, "closed a peer link: {}", r.detail);
        }
    }
}

/// Runs a TLS handshake and routes the connection by ALPN: peer links go to the driver's
/// runtime, HTTP comes back to be served.
async fn handshake(
    tls: &NodeTls,
    stream: TcpStream,
    addr: SocketAddr,
    inbox: mpsc::Sender<Event>,
    links: &Handle,
    permit: OwnedSemaphorePermit,
) -> Option<Accepted> {
    let accept = TlsAcceptor::from(tls.server.clone()).accept(Movable(Some(stream)));
    let stream = match tokio::time::timeout(SNIFF_TIMEOUT, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            reject("handshake");
            tracing::debug!(%addr, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            reject("handshake");
            return None;
        }
    };
    let conn = stream.get_ref().1;
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let chain = conn.peer_certificates().unwrap_or_default();
    let names = chain.first().map(identities);
    let of_cluster = tls.client_of_cluster(chain);
    match (alpn.as_deref(), names) {
        (Some(PEER_ALPN), Some(names)) if !names.is_empty() => {
            let mesh_only = !of_cluster;
            let mut stream = stream;
            links.spawn(async move {
                let _permit = permit;
                let read = match stream.get_mut().0.rebind() {
                    Ok(()) => {
                        if let Ok(s) = stream.get_mut().0.io() {
                            let _ = s.set_nodelay(true);
                        }
                        read_frames(stream, Some(names), mesh_only, inbox).await
                    }
                    Err(e) => Err(Refused::new("io", e.to_string())),
                };
                log_refusal(addr, read);
            });
            None
        }
        (Some(PEER_ALPN), _) => {
            reject("no_certificate");
            tracing::debug!(%addr, "refused a peer link without a node certificate");
            None
        }
        (Some(NODE_HTTP_ALPN), Some(names)) if !names.is_empty() && of_cluster => {
            let info = ConnInfo {
                remote: addr,
                node: Some(names.into()),
            };
            let conn = Conn::Tls(Box::new(stream));
            Some(Accepted { conn, info, permit })
        }
        _ => {
            let info = ConnInfo {
                remote: addr,
                node: None,
            };
            let conn = Conn::Tls(Box::new(stream));
            Some(Accepted { conn, info, permit })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::certs;

    /// Accepts one TLS connection on `listener` with `tls` and tells whether the client's
    /// certificate is of `tls`'s cluster; `Err` when the handshake fails.
    async fn accept_one(listener: TcpListener, tls: Arc<NodeTls>) -> std::io::Result<bool> {
        let (tcp, _) = listener.accept().await?;
        let s = TlsAcceptor::from(tls.server.clone()).accept(tcp).await?;
        Ok(tls.client_of_cluster(s.get_ref().1.peer_certificates().unwrap_or_default()))
    }

    /// A link authenticated only by a mesh CA delivers mesh messages and is closed, counted
    /// as `mesh_only`, at the first message of any other kind.
    #[tokio::test]
    async fn a_mesh_only_link_refuses_other_messages() {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(8);
        let names = vec!["10.0.2.1:7000".to_string()];
        let reader = tokio::spawn(read_frames(far, Some(names.clone()), true, tx));
        let mut w = near;
        let mut buf = Vec::new();
        w.write_all(&preamble()).await.expect("preamble");
        let ask = PeerMsg::MeshLayoutReq { rid: 1 };
        write_frame(&mut w, &mut buf, &names[0], &ask)
            .await
            .expect("frame");
        let ping = PeerMsg::Ping { epoch: 1, views: 1 };
        write_frame(&mut w, &mut buf, &names[0], &ping)
            .await
            .expect("frame");
        w.flush().await.expect("flush");
        match rx.recv().await {
            Some(Event::Peer { msg, .. }) => assert_eq!(msg, ask),
            _ => panic!("the mesh message is delivered"),
        }
        let refused = reader.await.expect("task").expect_err("closed");
        assert_eq!(refused.reason, "mesh_only");
        assert!(
            rx.recv().await.is_none(),
            "the ping never reaches the driver"
        );
    }

    /// Two clusters with their own CAs: with each other's CA as `--mesh-ca` a peer link opens
    /// in both directions and each side sees the other as a peer of a mesh CA only (so the link
    /// carries mesh messages only); without it the handshake fails, as before.
    #[tokio::test]
    async fn a_mesh_ca_admits_another_clusters_peers_as_mesh_only() {
        super::super::tls::install_provider();
        let dir = std::env::temp_dir().join(format!("causeway-mesh-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let one_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let two_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let one = one_l.local_addr().expect("addr").to_string();
        let two = two_l.local_addr().expect("addr").to_string();
        let one_files = certs::issue(&dir.join("one"), &one).expect("CA one");
        let two_files = certs::issue(&dir.join("two"), &two).expect("CA two");
        let load =
            |files: &super::super::tls::TlsFiles, me: &str, mesh: Vec<std::path::PathBuf>| {
                let files = super::super::tls::TlsFiles {
                    mesh_ca: mesh,
                    ..files.clone()
                };
                Arc::new(NodeTls::load(&files, me).expect("loading TLS"))
            };
        let one_tls = load(&one_files, &one, vec![two_files.ca.clone()]);
        let two_tls = load(&two_files, &two, vec![one_files.ca.clone()]);
        let own = load(&one_files, &one, Vec::new());
        assert!(
            own.client_of_cluster(&[]),
            "without a mesh CA every accepted peer is ours"
        );

        let server = tokio::spawn(accept_one(one_l, one_tls.clone()));
        let tcp = dial_tcp(&one).await.expect("dial");
        let (_, of_cluster) = dial_tls(&two_tls, &one, tcp).await.expect("mesh handshake");
        assert!(!of_cluster, "cluster two sees one's node as a mesh peer");
        let seen = server.await.expect("task").expect("accepted");
        assert!(!seen, "cluster one sees two's node as a mesh peer");

        let two_alone = load(&two_files, &two, Vec::new());
        let server = tokio::spawn(accept_one(two_l, two_alone));
        let tcp = dial_tcp(&two).await.expect("dial");
        let _ = dial_tls(&one_tls, &two, tcp).await;
        let accepted = server.await.expect("task");
        assert!(
            accepted.is_err(),
            "a node without --mesh-ca refuses another CA's client certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A dialled peer socket aborts after [`UNACKED_TIMEOUT`] of unacknowledged data (the
    /// kernel enforces it; this checks the option reached the socket) and sends at once.
    #[tokio::test]
    async fn a_dialled_peer_socket_gives_up_on_unacknowledged_data() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let tcp = dial_tcp(&addr).await.expect("dial");
        let sock = socket2::SockRef::from(&tcp);
        assert_eq!(
            sock.tcp_user_timeout().expect("getsockopt"),
            Some(UNACKED_TIMEOUT)
        );
        assert!(tcp.nodelay().expect("nodelay"));
    }
}
