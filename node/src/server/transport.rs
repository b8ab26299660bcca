//! Peer transport: persistent TCP connections carrying length-prefixed bincode frames.
//!
//! Peers reach each other on the same address clients use: a connection whose first byte is NUL
//! (never the first byte of an HTTP request) and that opens with [`PEER_MAGIC`] is a peer link;
//! every other connection goes to the HTTP server ([`SplitListener`]).
//!
//! Both directions run on the driver's runtime (see `driver.rs`). A frame is a big-endian `u32`
//! length followed by `bincode((from, PeerMsg))`. Each peer has one outbound connection fed by a
//! bounded queue ([`PEER_QUEUE`] messages); when it is full, messages are dropped and counted — the core retries replication and fails forwards over, so
//! a slow or dead peer costs bounded memory. Connections are re-established with exponential
//! backoff (up to [`MAX_BACKOFF`]). Inbound links push messages into the driver's bounded queue
//! and so exert back-pressure on the sender through TCP.

use super::driver::Event;
use super::http_server::{Accepted, SHED_CONNECTION};
use crate::core::{NodeId, PeerMsg};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// First bytes a peer sends on a new connection.
pub const PEER_MAGIC: &[u8; 8] = b"\0CWPEER1";
/// Largest frame accepted or sent.
pub const MAX_FRAME: usize = 256 << 20;
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 8192;
/// Longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an accepted connection may stay silent before it is classified as HTTP.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Outbound side: one queue and one connection task per peer, created on first use on the
/// runtime that calls [`Transport::send`] (the driver's).
pub struct Transport {
    me: NodeId,
    peers: HashMap<NodeId, mpsc::Sender<PeerMsg>>,
    links: Vec<tokio::task::JoinHandle<()>>,
}

impl Transport {
    pub fn new(me: NodeId) -> Self {
        Transport {
            me,
            peers: HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Queues `msg` for `to` without waiting; drops it when that peer's queue is full.
    pub fn send(&mut self, to: &NodeId, msg: PeerMsg) {
        let queue = self.peers.entry(to.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            self.links
                .push(tokio::spawn(run_link(self.me.clone(), to.clone(), rx)));
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

/// Keeps a connection to `to` open and writes every queued message to it. Ends when the queue
/// is closed and drained, or closed while the peer cannot be reached (it was forgotten: what it
/// still holds is for nobody).
async fn run_link(me: NodeId, to: NodeId, mut rx: mpsc::Receiver<PeerMsg>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if rx.is_closed() && backoff > MIN_BACKOFF {
            tracing::debug!(peer = %to, dropped = rx.len(), "link to a forgotten peer ends");
            return;
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to)).await {
            Ok(Ok(s)) => s,
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
        let _ = stream.set_nodelay(true);
        backoff = MIN_BACKOFF;
        tracing::debug!(peer = %to, "connected");
        match write_frames(&me, stream, &mut rx).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(peer = %to, "link lost: {e}"),
        }
    }
}

/// Writes queued messages until the queue closes (`Ok`) or the connection fails (`Err`).
///
/// The peer never writes on this connection, so a read that returns means the peer closed it
/// (e.g. its process died and the kernel sent FIN). Watching for that while idle lets the link
/// reconnect at once to a restarted peer, instead of writing the next messages into the dead
/// socket, where they would be lost (a forwarded request then waits out its timeout).
async fn write_frames(
    me: &str,
    stream: TcpStream,
    rx: &mut mpsc::Receiver<PeerMsg>,
) -> std::io::Result<()> {
    let (mut rd, wr) = stream.into_split();
    let mut w = BufWriter::with_capacity(64 << 10, wr);
    w.write_all(PEER_MAGIC).await?;
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
        write_frame(&mut w, &mut buf, me, &msg).await?;
        while let Ok(msg) = rx.try_recv() {
            write_frame(&mut w, &mut buf, me, &msg).await?;
        }
        w.flush().await?;
    }
}

async fn write_frame(
    w: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
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

/// Reads frames from an accepted peer link and hands them to the driver.
async fn read_frames(mut stream: TcpStream, inbox: mpsc::Sender<Event>) -> std::io::Result<()> {
    let mut magic = [0u8; PEER_MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if &magic != PEER_MAGIC {
        return Err(std::io::Error::other("bad peer preamble"));
    }
    let _ = stream.set_nodelay(true);
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    loop {
        let len = r.read_u32().await? as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("frame of {len} bytes")));
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf).await?;
        let (from, msg) =
            crate::core::message::decode_frame(&buf).map_err(std::io::Error::other)?;
        if inbox.send(Event::Peer { from, msg }).await.is_err() {
            return Ok(());
        }
    }
}

/// The HTTP half of a listener whose peer connections are diverted to the driver.
///
/// Every accepted connection takes a slot of `slots` (held until it closes, whichever half it
/// goes to); when none is free it is answered with a canned 503 and closed at once, so a flood
/// of connections cannot exhaust the open-files limit.
pub struct SplitListener {
    http: mpsc::Receiver<Accepted>,
}

impl SplitListener {
    /// Accepts on `listener`, classifying each connection by its first byte; peer links are
    /// read on `links` (the driver's runtime).
    pub fn new(
        listener: TcpListener,
        inbox: mpsc::Sender<Event>,
        links: Handle,
        slots: std::sync::Arc<Semaphore>,
    ) -> Self {
        let (tx, http) = mpsc::channel(1024);
        tokio::spawn(accept_loop(listener, tx, inbox, links, slots));
        SplitListener { http }
    }

    /// The next HTTP connection; `None` once the accept loop is gone.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.http.recv().await
    }
}

async fn accept_loop(
    listener: TcpListener,
    http: mpsc::Sender<Accepted>,
    inbox: mpsc::Sender<Event>,
    links: Handle,
    slots: std::sync::Arc<Semaphore>,
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
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await;
            match peeked {
                Ok(Ok(1)) if first[0] == PEER_MAGIC[0] => match stream.into_std() {
                    Ok(stream) => {
                        links.spawn(async move {
                            let _permit = permit;
                            let read = match TcpStream::from_std(stream) {
                                Ok(stream) => read_frames(stream, inbox).await,
                                Err(e) => Err(e),
                            };
                            if let Err(e) = read {
                                tracing::debug!(%addr, "peer link closed: {e}");
                            }
                        });
                    }
                    Err(e) => tracing::debug!(%addr, "cannot hand over a peer link: {e}"),
                },
                Ok(Ok(n)) if n > 0 => {
                    let _ = http.send(Accepted { stream, permit }).await;
                }
                _ => {}
            }
        });
    }
}
