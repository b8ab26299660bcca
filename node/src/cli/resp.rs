//! A minimal RESP2 client connection for `causeway bench --api redis`: commands are encoded as
//! arrays of bulk strings, replies decoded as RESP2's status, error, integer and bulk-string
//! types (no command the bench sends — SET, GET, WAIT — answers with an array). Reply lines and
//! bulk strings are bounded before anything is allocated, so a misbehaving server cannot make
//! the client allocate without limit.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest bulk string a reply may carry.
const MAX_BULK: usize = 64 << 20;
/// Longest reply line (a status, an error or a length).
const MAX_LINE: usize = 64 << 10;

/// One decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` bulk string; `None` for the null bulk string (`$-1`, e.g. GET of a missing key).
    Bulk(Option<Vec<u8>>),
}

/// Appends `args` to `out` as one RESP2 command (an array of bulk strings).
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One TCP connection to a Redis server.
pub struct Conn {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (`host:port`, or `redis://host:port`).
    pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let addr = addr.trim_start_matches("redis://").trim_end_matches('/');
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to redis at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            out: Vec::new(),
            line: Vec::new(),
        })
    }

    /// Sends `cmds` in one write (pipelined) and reads one reply per command, in order.
    pub async fn pipeline(&mut self, cmds: &[&[&[u8]]]) -> anyhow::Result<Vec<Reply>> {
        self.out.clear();
        for c in cmds {
            encode(&mut self.out, c);
        }
        self.stream.get_mut().write_all(&self.out).await?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    /// Reads one reply. Arrays are refused: no command the bench sends answers with one.
    async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        self.line.clear();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 {
            bail!("redis closed the connection");
        }
        let Some(body) = self.line.strip_suffix(b"\r\n") else {
            bail!("a redis reply line longer than {MAX_LINE} bytes or without CRLF");
        };
        let (kind, rest) = body.split_first().context("an empty redis reply line")?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let int = || -> anyhow::Result<i64> {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("not a RESP integer: {:?}", text()))
        };
        Ok(match kind {
            b'+' => Reply::Simple(text()),
            b'-' => Reply::Error(text()),
            b':' => Reply::Integer(int()?),
            b'$' => match int()? {
                -1 => Reply::Bulk(None),
                len if (0..=MAX_BULK as i64).contains(&len) => {
                    let mut data = vec![0; len as usize + 2];
                    self.stream.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        bail!("a redis bulk string not followed by CRLF");
                    }
                    data.truncate(len as usize);
                    Reply::Bulk(Some(data))
                }
                len => bail!("a redis bulk string of {len} bytes (at most {MAX_BULK})"),
            },
            b'*' => bail!("an unexpected redis array reply"),
            other => bail!("not a RESP2 reply: type byte {other:#04x}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[&b"SET"[..], &b"k"[..], &b""[..]]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    /// Serves `script` to one connection, then answers the pipeline `cmds` through [`Conn`].
    async fn replies(script: &'static [u8], cmds: usize) -> anyhow::Result<Vec<Reply>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(script).await.expect("write");
            // End of the script: the client sees EOF instead of waiting for more.
            s.shutdown().await.expect("shutdown");
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let mut c = Conn::connect(&format!("redis://{addr}")).await?;
        let cmd: &[&[u8]] = &[&b"PING"[..]];
        c.pipeline(&vec![cmd; cmds]).await
    }

    #[tokio::test]
    async fn decodes_each_reply_type_in_order() {
        let got = replies(b"+OK\r\n-ERR no\r\n:2\r\n$3\r\na\r\n\r\n$-1\r\n", 5)
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Integer(2),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Bulk(None),
            ]
        );
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_replies() {
        let huge = replies(b"$99999999999\r\n", 1).await.unwrap_err();
        assert!(huge.to_string().contains("at most"), "{huge}");
        let bad = replies(b"?x\r\n", 1).await.unwrap_err();
        assert!(bad.to_string().contains("type byte"), "{bad}");
        let cut = replies(b"$5\r\nab", 1).await.unwrap_err();
        assert!(!cut.to_string().is_empty());
    }
}
