//! Single-key reads and writes of a [`Session`], and siblings as a typed result.

use crate::client::{Reply, Request, Retry, SERVED_BY_HEADER, encode_component};
use crate::error::{Error, Result};
use crate::session::Session;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::fmt;

/// How many replicas a read must hear from, or a write must be acknowledged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// This many replicas (at least 1).
    N(u32),
    /// A majority of the key's replicas.
    Majority,
    /// Every replica of the key.
    All,
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::N(n) => write!(f, "{n}"),
            Quorum::Majority => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
        }
    }
}

impl std::str::FromStr for Quorum {
    type Err = Error;

    /// `1`, `2`, …, `quorum` or `all`.
    fn from_str(s: &str) -> Result<Quorum> {
        match s {
            "quorum" => Ok(Quorum::Majority),
            "all" => Ok(Quorum::All),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Quorum::N(n)),
                _ => Err(Error::Config(format!(
                    "a quorum is a number, quorum or all; got {s:?}"
                ))),
            },
        }
    }
}

/// What a key holds, as a read saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versions {
    /// No version at all: the key was never written (or its tombstone was reaped).
    Missing,
    /// Only tombstones: the key was deleted.
    Deleted,
    /// One live value.
    Value(Bytes),
    /// Concurrent values (siblings), at least two: writes no single context ordered. Write the
    /// key with this read's context to replace them all ([`Session::resolve`]).
    Siblings(Vec<Bytes>),
}

/// One version a read returned, as the serving replica holds it: a value or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The version's dot, as the token of the one-entry context `{actor: counter}`.
    pub dot: String,
    /// When the version expires (TTL), in microseconds since the Unix epoch.
    pub expires_us: Option<u64>,
    /// The version's content type, for a value.
    pub content_type: Option<String>,
}

impl Sibling {
    fn from_json(v: &serde_json::Value) -> Option<Sibling> {
        let value = match v["value"].as_str() {
            Some(b) => Some(Bytes::from(B64.decode(b).ok()?)),
            None if v["deleted"] == true => None,
            None => return None,
        };
        Some(Sibling {
            value,
            dot: v["dot"].as_str()?.to_owned(),
            expires_us: v["expires_us"].as_u64(),
            content_type: v["content_type"].as_str().map(str::to_owned),
        })
    }

    /// True for a tombstone (a delete, or an expired value turned into one).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// The result of reading a key.
#[derive(Clone, Debug)]
pub struct Read {
    pub versions: Versions,
    /// The token naming what this read saw of the key (the session has already taken it in).
    pub context: String,
    /// The node that served the read, when it said.
    pub served_by: Option<String>,
    /// Every version the replica returned (tombstones and duplicates of a value included).
    pub siblings: Vec<Sibling>,
}

impl Read {
    /// The live values: none, one, or the siblings.
    pub fn values(&self) -> &[Bytes] {
        match &self.versions {
            Versions::Missing | Versions::Deleted => &[],
            Versions::Value(v) => std::slice::from_ref(v),
            Versions::Siblings(v) => v,
        }
    }

    /// Parses the JSON form of a read (`{"values":[base64…],"deleted":bool,"context"}`), as
    /// `GET /v1/kv/{key}` with `Accept: application/json` and each batch read return it.
    pub(crate) fn from_json(v: &serde_json::Value, node: &str) -> Result<Read> {
        let bad = |detail: &str| Error::Protocol {
            node: node.to_owned(),
            detail: detail.to_owned(),
        };
        let mut values = Vec::new();
        for b in v["values"].as_array().ok_or_else(|| bad("no values"))? {
            let text = b.as_str().ok_or_else(|| bad("a value is not a string"))?;
            values.push(Bytes::from(
                B64.decode(text).map_err(|_| bad("a value is not base64"))?,
            ));
        }
        let versions = match values.len() {
            0 if v["deleted"] == true => Versions::Deleted,
            0 => Versions::Missing,
            1 => Versions::Value(values.remove(0)),
            _ => Versions::Siblings(values),
        };
        let mut siblings = Vec::new();
        for s in v["siblings"].as_array().into_iter().flatten() {
            siblings.push(Sibling::from_json(s).ok_or_else(|| bad("a malformed sibling"))?);
        }
        Ok(Read {
            siblings,
            versions,
            context: v["context"].as_str().unwrap_or_default().to_owned(),
            served_by: v["served_by"].as_str().map(str::to_owned),
        })
    }
}

/// The path of `key`'s endpoint, with `name=value` when given.
fn key_path(key: &[u8], param: Option<(&str, Quorum)>) -> String {
    let mut path = format!("/v1/kv/{}", encode_component(key));
    if let Some((name, q)) = param {
        path.push_str(&format!("?{name}={q}"));
    }
    path
}

/// A write's reply: 204, or the error it stands for.
fn written(reply: Reply) -> Result<()> {
    if reply.status == 204 {
        Ok(())
    } else {
        Err(reply.error())
    }
}

impl Session {
    /// Reads `key` from one replica (the store's default `r=1`).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Read> {
        self.get_with(key, None).await
    }

    /// Reads `key`, waiting for `r` replicas when given.
    pub async fn get_with(&self, key: impl AsRef<[u8]>, r: Option<Quorum>) -> Result<Read> {
        let req = Request::get(key_path(key.as_ref(), r.map(|r| ("r", r))))
            .header("accept", "application/json")?;
        let reply = self.send(req).await?;
        if !matches!(reply.status, 200 | 300 | 404) {
            return Err(reply.error());
        }
        let mut read = Read::from_json(&reply.json()?, &reply.node)?;
        read.served_by = reply.header(SERVED_BY_HEADER).map(str::to_owned);
        Ok(read)
    }

    /// Writes `value` to `key`, replacing every version the session has seen (one replica
    /// acknowledges: the store's default `w=1`). A write that may or may not have been applied
    /// is [`Error::Indeterminate`] and is never resent.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<()> {
        self.put_with(key, value, None).await
    }

    /// Like [`Session::put`], waiting for `w` replicas' acknowledgements when given.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        w: Option<Quorum>,
    ) -> Result<()> {
        let req = Request::new(
            reqwest::Method::PUT,
            key_path(key.as_ref(), w.map(|w| ("w", w))),
            Retry::Never,
        )
        .body(value);
        written(self.send(req).await?)
    }

    /// Like [`Session::put`], for a value that expires `ttl` after the coordinator executes
    /// the write (whole seconds, 1 s to 10 years; the server refuses others with a 400). Reads
    /// stop returning it then, by each serving node's clock (docs/ttl.md).
    pub async fn put_expiring(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: std::time::Duration,
    ) -> Result<()> {
        self.put_expiring_with(key, value, ttl, None).await
    }

    /// Like [`Session::put_expiring`], waiting for `w` replicas' acknowledgements when given.
    pub async fn put_expiring_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: std::time::Duration,
        w: Option<Quorum>,
    ) -> Result<()> {
        let mut path = format!("{}?ttl={}", key_path(key.as_ref(), None), ttl.as_secs());
        if let Some(w) = w {
            path.push_str(&format!("&w={w}"));
        }
        let req = Request::new(reqwest::Method::PUT, path, Retry::Never).body(value);
        written(self.send(req).await?)
    }

    /// Deletes `key`: a tombstone replacing the versions the session has seen (with an empty
    /// session, what the coordinating replica holds).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.delete_with(key, None).await
    }

    /// Like [`Session::delete`], waiting for `w` replicas' acknowledgements when given.
    pub async fn delete_with(&self, key: impl AsRef<[u8]>, w: Option<Quorum>) -> Result<()> {
        let req = Request::new(
            reqwest::Method::DELETE,
            key_path(key.as_ref(), w.map(|w| ("w", w))),
            Retry::Never,
        );
        written(self.send(req).await?)
    }

    /// Reads `key` (from a majority) and, if it has siblings, writes `merge(siblings)` in their
    /// place: the session has taken in the read's context, which covers every sibling, so the
    /// write replaces them all. Returns the
    /// key's value afterwards: the single value it had, the merged one, or `None` when it has no
    /// live value. Siblings written concurrently with the resolution survive it, as they must.
    pub async fn resolve<F>(&self, key: impl AsRef<[u8]>, merge: F) -> Result<Option<Bytes>>
    where
        F: FnOnce(&[Bytes]) -> Bytes,
    {
        let key = key.as_ref();
        let read = self.get_with(key, Some(Quorum::Majority)).await?;
        match read.versions {
            Versions::Missing | Versions::Deleted => Ok(None),
            Versions::Value(v) => Ok(Some(v)),
            Versions::Siblings(values) => {
                let merged = merge(&values);
                self.put_with(key, merged.clone(), Some(Quorum::Majority))
                    .await?;
                Ok(Some(merged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_print_and_parse_as_the_api_spells_them() {
        for (text, q) in [
            ("1", Quorum::N(1)),
            ("quorum", Quorum::Majority),
            ("all", Quorum::All),
        ] {
            assert_eq!(text.parse::<Quorum>().unwrap(), q);
            assert_eq!(q.to_string(), text);
        }
        assert!("0".parse::<Quorum>().is_err());
        assert!("most".parse::<Quorum>().is_err());
    }

    #[test]
    fn reads_distinguish_missing_deleted_one_and_siblings() {
        let read = |v: serde_json::Value| Read::from_json(&v, "n").unwrap().versions;
        let b = |s: &str| B64.encode(s);
        assert_eq!(
            read(serde_json::json!({"values": [], "deleted": false})),
            Versions::Missing
        );
        assert_eq!(
            read(serde_json::json!({"values": [], "deleted": true})),
            Versions::Deleted
        );
        assert_eq!(
            read(serde_json::json!({"values": [b("a")]})),
            Versions::Value(Bytes::from("a"))
        );
        assert_eq!(
            read(serde_json::json!({"values": [b("a"), b("b")]})),
            Versions::Siblings(vec![Bytes::from("a"), Bytes::from("b")])
        );
        assert!(Read::from_json(&serde_json::json!({"values": ["%%"]}), "n").is_err());
        assert!(Read::from_json(&serde_json::json!({}), "n").is_err());
    }

    #[test]
    fn keys_are_percent_encoded_in_paths() {
        assert_eq!(key_path(b"a/b c", None), "/v1/kv/a%2Fb%20c");
        assert_eq!(key_path(b"k", Some(("w", Quorum::All))), "/v1/kv/k?w=all");
    }
}
