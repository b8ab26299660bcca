//! What a run did: every client operation (invoke and outcome), every write any node executed
//! (the write registry), and the final version sets of every replica.
//!
//! The registry lists each *execution* of a write: a proxied write retried on another replica
//! appears twice with distinct dots and the same value. In the simulator it is complete (the
//! driver sees every execution); a real-cluster test can fill it from acknowledged writes only.

use crate::plan::OpKind;
use bytes::Bytes;
use causeway::core::{Dot, ReqError, Response, VersionSet, VersionVector};
use std::collections::BTreeMap;
use std::fmt;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet (the run ended first).
    Pending,
    Ok(Response),
    /// Definitely had no effect (a failed read, a refused connection, a rejected request).
    Failed(String),
    /// A write that may or may not have applied (503, timeout, crash of its node).
    Indeterminate(String),
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    pub id: u64,
    pub session: usize,
    pub node: usize,
    pub kind: OpKind,
    pub key: Bytes,
    /// The value written (`None` for reads and deletes).
    pub value: Option<Bytes>,
    /// The causal context sent with the request.
    pub context: VersionVector,
    /// A blind write: sent with an empty context although the session had one. The session's
    /// context is not reset by it (the next request carries it again, merged with the reply's).
    pub blind: bool,
    pub invoked_us: u64,
    pub completed_us: Option<u64>,
    pub outcome: Outcome,
    /// Issued after heal, when it must succeed (G4). A failed probe that is retried within the
    /// liveness bound is recorded as an ordinary operation (`false`); its retry is the probe.
    pub probe: bool,
    /// What the node that delivered the reply had applied when it did: its applied clock
    /// (contiguous counters per actor) joined with its copy of the key's context and, in a mesh,
    /// the other clusters' dots its full syncs vouched for (its mesh floor), if that node
    /// owned the key then and no view had changed yet (so it answered from its own state, not a
    /// previous owner's or a handoff's). `None` otherwise, or when unknown (a real cluster).
    pub replier_applied: Option<VersionVector>,
    /// For a failed request: why the simulator judged that a replica could have served it (it
    /// could at once when the request started and stayed reachable from the entry node
    /// throughout, with few enough other replicas to try first within the deadline). G4 flags
    /// such a failure. `None` otherwise, and always in a real cluster.
    pub servable: Option<String>,
    /// The session dropped its context before this request: its token named writes lost for
    /// good with a wiped node (docs/guarantees.md, what a 503 means). G1 judges it from here on
    /// as a new session.
    pub reset: bool,
}

impl OpRecord {
    /// Fails a request: definite for reads, indeterminate for writes.
    pub fn unavailable(&self, why: String) -> Outcome {
        match self.kind {
            OpKind::Get => Outcome::Failed(why),
            OpKind::Put | OpKind::Delete => Outcome::Indeterminate(why),
        }
    }

    /// The outcome of a core reply to this request.
    pub fn outcome_of(&self, result: Result<Response, ReqError>) -> Outcome {
        match result {
            Ok(r) => Outcome::Ok(r),
            Err(e @ (ReqError::BadRequest(_) | ReqError::Conflict(_))) => {
                Outcome::Failed(e.to_string())
            }
            Err(e) => self.unavailable(e.to_string()),
        }
    }

    /// The dot of an acknowledged write.
    pub fn acked_dot(&self) -> Option<Dot> {
        match &self.outcome {
            Outcome::Ok(Response::Written { dot, .. }) if self.kind != OpKind::Get => Some(*dot),
            _ => None,
        }
    }
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .value
            .as_ref()
            .map(|v| format!(" {}", String::from_utf8_lossy(v)))
            .unwrap_or_default();
        let outcome = match &self.outcome {
            Outcome::Pending => "pending".to_string(),
            Outcome::Ok(Response::Written { dot, .. }) => format!("ok {dot:?}"),
            Outcome::Ok(Response::Read { versions, .. }) => {
                let vs: Vec<String> = versions
                    .iter()
                    .map(|v| match &v.value {
                        Some(x) => format!("{:?}={}", v.dot, String::from_utf8_lossy(x)),
                        None => format!("{:?}=⊥", v.dot),
                    })
                    .collect();
                format!("ok [{}]", vs.join(", "))
            }
            Outcome::Ok(other) => format!("ok {other:?}"),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::Indeterminate(e) => format!("indeterminate: {e}"),
        };
        write!(
            f,
            "op#{} s{} n{} {:?}{} {}{} @{}ms -> {}",
            self.id,
            self.session,
            self.node,
            self.kind,
            if self.blind { " blind" } else { "" },
            String::from_utf8_lossy(&self.key),
            value,
            self.invoked_us / 1000,
            outcome
        )
    }
}

/// One execution of a write by a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    pub dot: Dot,
    pub key: Bytes,
    /// `None`: a delete.
    pub value: Option<Bytes>,
    /// The context the write was issued with.
    pub context: VersionVector,
    /// The context it was applied with: it supersedes exactly the dots this covers. The
    /// request's context, except for a blind delete (a delete with an empty context), which
    /// supersedes everything its coordinator held of the key (docs/guarantees.md, blind deletes).
    pub supersedes: VersionVector,
    pub node: usize,
    pub at_us: u64,
    /// The time to live the write was issued with, in seconds (docs/ttl.md).
    pub ttl_s: Option<u64>,
    /// For an expiry tombstone (written by a node, serving no client operation): exactly the
    /// versions it removed, which must be tombstones or expired writes. Empty otherwise.
    pub expired: Vec<Dot>,
    /// The client operation this execution serves (informative: identical requests of two
    /// sessions are indistinguishable, see [`WriteRecord::serves`]).
    pub op: u64,
}

impl WriteRecord {
    /// Same key, value and context: indistinguishable writes (two clients may issue those).
    pub fn same_write(&self, other: &WriteRecord) -> bool {
        self.key == other.key && self.value == other.value && self.context == other.context
    }

    /// Whether this execution carries out client operation `op` (by content, since identical
    /// concurrent requests cannot be told apart on the wire).
    pub fn serves(&self, op: &OpRecord) -> bool {
        self.key == op.key && self.value == op.value && self.context == op.context
    }
}

/// The whole record of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    pub writes: Vec<WriteRecord>,
    /// For every key: each replica of its shard in the final view (node index) and its final
    /// version set. Copies still held by nodes that no longer own the key are not final states.
    pub finals: BTreeMap<Bytes, Vec<(usize, VersionSet)>>,
    /// Node slots of the cluster (every node that may ever be a member): the token checker
    /// allows one context entry per node.
    pub nodes: usize,
    /// Liveness problems the driver saw when the run ended: a node that never learned the final
    /// view, or never settled its handoffs (retained or awaited partitions), within the bound.
    pub unsettled: Vec<String>,
    /// Read repairs that did not happen: a read of several replicas returned versions that a
    /// replica which answered it still lacked a network delay later (G3 flags each).
    pub unrepaired: Vec<String>,
    /// Every strong-key operation, in invocation order ([`Checker::Linearizable`] judges them).
    ///
    /// [`Checker::Linearizable`]: crate::scenario::Checker::Linearizable
    pub strong: Vec<crate::linearizable::StrongOp>,
    /// How far apart two nodes' clocks may be during the run, µs: how early a TTL may expire
    /// (or how late a read may still return it) relative to the writing coordinator's clock.
    pub skew_us: u64,
}

impl History {
    /// The operation with id `id`.
    pub fn op(&self, id: u64) -> Option<&OpRecord> {
        self.ops.iter().find(|o| o.id == id)
    }
}
