//! Speaking the peer protocol from a test: frames built from well-typed [`PeerMsg`]s over any
//! byte stream. The connection is pluggable: [`plain`] opens a plaintext TCP link (accepted only
//! by an `--insecure` node); a test that has a peer credential (mutual TLS) writes
//! [`preamble`] and the same frames with [`send`] over its authenticated stream, so
//! malformed-but-authenticated messages are tested the same way.

use causeway::core::PeerMsg;
use causeway::core::message::encode_frame;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// The preamble every peer link opens with, as `causeway::server::transport::preamble()` writes
/// it (that module needs the `server` feature, which this crate does not build): the magic
/// `\0CWPEER` and the big-endian protocol version 2. A test against a node of another version
/// sees its link refused ("version").
pub fn preamble() -> [u8; 9] {
    let mut p = [0u8; 9];
    p[..7].copy_from_slice(b"\0CWPEER");
    p[7..].copy_from_slice(&2u16.to_be_bytes());
    p
}

/// One length-prefixed frame claiming to come from `from`.
pub fn frame(from: &str, msg: &PeerMsg) -> Vec<u8> {
    let body = encode_frame(from, msg);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A plaintext peer link to `addr` (an `--insecure` node), preamble sent.
pub fn plain(addr: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&preamble())?;
    Ok(s)
}

/// Writes `msgs` as frames from `from` on an open peer link.
pub fn send(link: &mut impl Write, from: &str, msgs: &[PeerMsg]) -> std::io::Result<()> {
    for m in msgs {
        link.write_all(&frame(from, m))?;
    }
    link.flush()
}
