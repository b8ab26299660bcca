//! Strong keys: linearizable single-key reads, writes and compare-and-set, in a namespace of
//! their own (`/v1/strong/{key}`; the same name under `/v1/kv` is a different key).
//!
//! Each strong key has a value (or none) and a version that counts its successful writes: a
//! never-written key is at version 0, and every successful put or delete adds 1. A write may
//! carry a [`Cond`]ition; when it does not hold the write changes nothing and the answer is
//! [`StrongWrite::PreconditionFailed`] with the key's current version, ready for a retry.
//!
//! Without a majority of the key's replicas a strong call fails within a bounded wait (the
//! server answers 503): a read fails over to the next node like any safe request, while a write
//! that got a 503 or timed out is [`Error::Indeterminate`] — it may or may not have taken
//! effect, so read the key before deciding what to do.
//!
//! ```no_run
//! # async fn demo(client: causeway_client::Client) -> causeway_client::Result<()> {
//! use causeway_client::{Cond, StrongWrite};
//! // Increment a counter by compare-and-set.
//! loop {
//!     let (value, version) = match client.strong_get("counter").await? {
//!         Some((v, version)) => (String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0), version),
//!         None => (0, 0),
//!     };
//!     let next = (value + 1).to_string();
//!     match client.strong_put("counter", next, Cond::IfVersion(version)).await? {
//!         StrongWrite::Written { .. } => break,
//!         StrongWrite::PreconditionFailed { .. } => continue,
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::client::{Client, Reply, Request, Retry, encode_component};
use crate::error::{Error, Result};
use bytes::Bytes;

/// The precondition of a strong write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Unconditional.
    Always,
    /// Only if the key's current version is this one (`If-Match: "N"`).
    IfVersion(u64),
    /// Only if the key has no value (`If-None-Match: *`), whatever its version.
    IfAbsent,
}

/// The definite outcome of a strong put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrongWrite {
    /// The write took effect; the key is now at `version`.
    Written { version: u64 },
    /// The condition did not hold (412); nothing changed; the key is at `version`.
    PreconditionFailed { version: u64 },
}

fn strong_path(key: &[u8]) -> String {
    format!("/v1/strong/{}", encode_component(key))
}

/// The version in a reply's `ETag` (`"N"`, quotes optional).
fn etag_version(reply: &Reply) -> Result<u64> {
    reply
        .header("etag")
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::Protocol {
            node: reply.node.clone(),
            detail: "no version in the ETag header".into(),
        })
}

fn with_cond(req: Request, cond: Cond) -> Result<Request> {
    match cond {
        Cond::Always => Ok(req),
        Cond::IfVersion(v) => req.header("if-match", &format!("\"{v}\"")),
        Cond::IfAbsent => req.header("if-none-match", "*"),
    }
}

/// A strong write's reply: 200 with the new version, 412 with the current one, or an error.
fn write_outcome(reply: Reply) -> Result<StrongWrite> {
    match reply.status {
        200 => {
            let version = match reply.json()?["version"].as_u64() {
                Some(v) => v,
                None => etag_version(&reply)?,
            };
            Ok(StrongWrite::Written { version })
        }
        412 => {
            let version = match reply.json().ok().and_then(|v| v["version"].as_u64()) {
                Some(v) => v,
                None => etag_version(&reply)?,
            };
            Ok(StrongWrite::PreconditionFailed { version })
        }
        _ => Err(reply.error()),
    }
}

impl Client {
    /// Reads strong key `key`: its value and version, or `None` when it has no value (never
    /// written, or deleted). Linearizable: it reflects every write that completed before it.
    pub async fn strong_get(&self, key: impl AsRef<[u8]>) -> Result<Option<(Bytes, u64)>> {
        Ok(self.strong_get_versioned(key).await?.0)
    }

    /// Like [`Client::strong_get`], but also returns the version of an absent key: `(Some((value,
    /// version)) | None, version)`. The version of a deleted key is what an `If-Match` needs.
    pub async fn strong_get_versioned(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<(Option<(Bytes, u64)>, u64)> {
        let reply = self.send(&Request::get(strong_path(key.as_ref()))).await?;
        match reply.status {
            200 => {
                let version = etag_version(&reply)?;
                Ok((Some((reply.body.clone(), version)), version))
            }
            404 => Ok((None, etag_version(&reply)?)),
            _ => Err(reply.error()),
        }
    }

    /// Writes `value` to strong key `key` if `cond` holds. A 503 (no majority) or a timeout
    /// after sending is [`Error::Indeterminate`]; the write is never resent.
    pub async fn strong_put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        cond: Cond,
    ) -> Result<StrongWrite> {
        let req = Request::new(
            reqwest::Method::PUT,
            strong_path(key.as_ref()),
            Retry::Never,
        )
        .body(value);
        write_outcome(self.send(&with_cond(req, cond)?).await?)
    }

    /// Deletes strong key `key` if `cond` holds (deleting an absent key is still a write: its
    /// version grows). Indeterminate outcomes as for [`Client::strong_put`].
    pub async fn strong_delete(&self, key: impl AsRef<[u8]>, cond: Cond) -> Result<StrongWrite> {
        let req = Request::new(
            reqwest::Method::DELETE,
            strong_path(key.as_ref()),
            Retry::Never,
        );
        write_outcome(self.send(&with_cond(req, cond)?).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn reply(status: u16, etag: Option<&str>, body: &str) -> Reply {
        let mut headers = HeaderMap::new();
        if let Some(t) = etag {
            headers.insert("etag", HeaderValue::from_str(t).unwrap());
        }
        Reply {
            node: "http://n".into(),
            status,
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn write_replies_become_outcomes() {
        let ok = reply(200, Some("\"7\""), r#"{"version":7}"#);
        assert_eq!(
            write_outcome(ok).unwrap(),
            StrongWrite::Written { version: 7 }
        );
        let failed = reply(
            412,
            Some("\"9\""),
            r#"{"error":"precondition_failed","detail":"x","version":9}"#,
        );
        assert_eq!(
            write_outcome(failed).unwrap(),
            StrongWrite::PreconditionFailed { version: 9 }
        );
        let etag_only = reply(412, Some("4"), "not json");
        assert_eq!(
            write_outcome(etag_only).unwrap(),
            StrongWrite::PreconditionFailed { version: 4 }
        );
        let bad = reply(400, None, r#"{"error":"bad_request","detail":"If-Match"}"#);
        assert_eq!(write_outcome(bad).unwrap_err().status(), Some(400));
    }

    #[test]
    fn conditions_become_headers() {
        let req = || Request::new(reqwest::Method::PUT, "/v1/strong/k", Retry::Never);
        let r = with_cond(req(), Cond::IfVersion(3)).unwrap();
        assert_eq!(r.headers["if-match"], "\"3\"");
        let r = with_cond(req(), Cond::IfAbsent).unwrap();
        assert_eq!(r.headers["if-none-match"], "*");
        assert!(with_cond(req(), Cond::Always).unwrap().headers.is_empty());
        assert_eq!(strong_path(b"a/b"), "/v1/strong/a%2Fb");
    }
}
