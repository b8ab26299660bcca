//! Speaking the peer protocol from a test: frames built from well-typed [`PeerMsg`]s over any
//! byte stream. The connection is pluggable: [`plain`] opens today's plaintext TCP link; a test
//! that has a peer credential (mutual TLS) writes the same frames with [`send`] over its
//! authenticated stream, so malformed-but-authenticated messages are tested the same way.

use causeway::core::PeerMsg;
use causeway::core::message::encode_frame;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// The preamble of a plaintext peer link (the transport's `PEER_MAGIC`).
pub const PLAIN_PREAMBLE: &[u8] = b"\0CWPEER1";

/// One length-prefixed frame claiming to come from `from`.
pub fn frame(from: &str, msg: &PeerMsg) -> Vec<u8> {
    let body = encode_frame(from, msg);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A plaintext peer link to `addr`, preamble sent.
pub fn plain(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(PLAIN_PREAMBLE)?;
    Ok(s)
}

/// Writes `msgs` as frames from `from` on an open peer link.
pub fn send(link: &mut impl Write, from: &str, msgs: &[PeerMsg]) -> std::io::Result<()> {
    for m in msgs {
        link.write_all(&frame(from, m))?;
    }
    link.flush()
}
