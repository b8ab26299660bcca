//! `POST /v1/batch`: up to 1,000 gets, puts and deletes in one request, each with its own
//! result. Every operation carries the session's context; operations do not see each other's
//! writes. The reply's context joins every successful operation's, and the session takes it in.

use crate::client::{Request, Retry};
use crate::error::{Error, Result};
use crate::kv::{Quorum, Read};
use crate::session::Session;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

/// Most operations the node accepts in one batch.
pub const MAX_BATCH_OPS: usize = 1000;

/// One operation of a batch.
#[derive(Clone, Debug)]
pub enum BatchOp {
    Get {
        key: Vec<u8>,
        r: Option<Quorum>,
    },
    Put {
        key: Vec<u8>,
        value: Bytes,
        w: Option<Quorum>,
    },
    Delete {
        key: Vec<u8>,
        w: Option<Quorum>,
    },
}

impl BatchOp {
    fn is_write(&self) -> bool {
        !matches!(self, BatchOp::Get { .. })
    }

    fn to_json(&self) -> serde_json::Value {
        let (op, key, q) = match self {
            BatchOp::Get { key, r } => ("get", key, r.map(|r| ("r", r))),
            BatchOp::Put { key, w, .. } => ("put", key, w.map(|w| ("w", w))),
            BatchOp::Delete { key, w } => ("delete", key, w.map(|w| ("w", w))),
        };
        let mut v = serde_json::json!({"op": op, "key_base64": B64.encode(key)});
        if let BatchOp::Put { value, .. } = self {
            v["value"] = B64.encode(value).into();
        }
        if let Some((name, q)) = q {
            v[name] = q.to_string().into();
        }
        v
    }
}

/// One operation's result, in the order the operations were given.
#[derive(Debug)]
pub enum BatchResult {
    /// A get's result.
    Read(Read),
    /// A put or delete was applied.
    Written,
    /// The operation failed; a write that may have been applied is [`Error::Indeterminate`].
    Failed(Error),
}

impl Session {
    /// Runs `ops` as one batch (at most [`MAX_BATCH_OPS`]). A batch holding a write is never
    /// resent once it may have reached a node.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<Vec<BatchResult>> {
        if ops.len() > MAX_BATCH_OPS {
            return Err(Error::Config(format!(
                "a batch holds at most {MAX_BATCH_OPS} operations, not {}",
                ops.len()
            )));
        }
        let retry = if ops.iter().any(BatchOp::is_write) {
            Retry::Never
        } else {
            Retry::Safe
        };
        let body = serde_json::json!({"ops": ops.iter().map(BatchOp::to_json).collect::<Vec<_>>()});
        let req = Request::new(reqwest::Method::POST, "/v1/batch", retry).json(&body);
        let reply = self.send(req).await?.success()?;
        let v = reply.json()?;
        let node = reply.node.as_str();
        let results = v["results"]
            .as_array()
            .filter(|r| r.len() == ops.len())
            .ok_or_else(|| Error::Protocol {
                node: node.to_owned(),
                detail: "the batch reply does not hold one result per operation".into(),
            })?;
        ops.iter()
            .zip(results)
            .map(|(op, r)| result_of(op, r, node))
            .collect()
    }
}

fn result_of(op: &BatchOp, r: &serde_json::Value, node: &str) -> Result<BatchResult> {
    let status = r["status"].as_u64().unwrap_or(0) as u16;
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    Ok(match (op, status) {
        (BatchOp::Get { .. }, 200 | 300 | 404) => BatchResult::Read(Read::from_json(r, node)?),
        (_, 204) if op.is_write() => BatchResult::Written,
        (_, 500..=599) if op.is_write() && status != 507 => {
            BatchResult::Failed(Error::Indeterminate {
                node: node.to_owned(),
                cause: format!("{status} {}: {}", text("error"), text("detail")),
            })
        }
        (_, 401) => BatchResult::Failed(Error::Unauthorized {
            node: node.to_owned(),
            detail: text("detail"),
        }),
        _ => BatchResult::Failed(Error::Api {
            node: node.to_owned(),
            status,
            error: text("error"),
            detail: text("detail"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_encode_keys_and_values_in_base64() {
        let put = BatchOp::Put {
            key: b"k\xff".to_vec(),
            value: Bytes::from("v"),
            w: Some(Quorum::All),
        };
        assert_eq!(
            put.to_json(),
            serde_json::json!({"op": "put", "key_base64": "a/8=", "value": "dg==", "w": "all"})
        );
        let get = BatchOp::Get {
            key: b"k".to_vec(),
            r: None,
        };
        assert_eq!(
            get.to_json(),
            serde_json::json!({"op": "get", "key_base64": "aw=="})
        );
    }

    #[test]
    fn a_failed_write_in_a_batch_is_indeterminate_only_when_it_may_have_applied() {
        let del = BatchOp::Delete {
            key: b"k".to_vec(),
            w: None,
        };
        let r = |status: u16| {
            result_of(
                &del,
                &serde_json::json!({"status": status, "error": "e"}),
                "n",
            )
            .unwrap()
        };
        assert!(matches!(r(204), BatchResult::Written));
        assert!(matches!(
            r(503),
            BatchResult::Failed(Error::Indeterminate { .. })
        ));
        assert!(matches!(
            r(507),
            BatchResult::Failed(Error::Api { status: 507, .. })
        ));
        assert!(matches!(
            r(400),
            BatchResult::Failed(Error::Api { status: 400, .. })
        ));
    }
}
