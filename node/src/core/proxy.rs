//! Requests this node forwards to a replica of another shard, with failover.
//!
//! Each attempt has its own [`Rid`]: a late answer to an abandoned attempt is ignored. A proxied
//! write that timed out may still have applied at the abandoned replica; retrying it elsewhere can
//! produce a second version with the same value, never a lost one.

use super::request::Rid;
use super::request::{Op, ReqId};
use super::ring::NodeId;
use super::time::Time;
use std::collections::BTreeMap;

/// One client request being served through other nodes.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub client: ReqId,
    pub op: Op,
    /// Replicas to try, best first; `next` is the one after the current attempt.
    pub candidates: Vec<NodeId>,
    pub next: usize,
    pub attempt_deadline: Time,
    pub deadline: Time,
}

impl Forwarding {
    /// The replica the current attempt went to.
    pub fn current(&self) -> &NodeId {
        &self.candidates[self.next - 1]
    }

    /// Whether another replica remains to try before the deadline.
    pub fn can_fail_over(&self, now: Time) -> bool {
        self.next < self.candidates.len() && now < self.deadline
    }
}

/// Pending forwards by attempt id.
#[derive(Debug, Default)]
pub struct Proxy {
    pub pending: BTreeMap<Rid, Forwarding>,
    /// Keyed client requests this node routed (executed here, written as a hint or forwarded),
    /// in total: the node's request load.
    pub routed: u64,
    /// Requests forwarded to another node, in total.
    pub forwarded: u64,
    /// Attempts abandoned for the next replica.
    pub failovers: u64,
}

impl Proxy {
    /// Attempts whose time is up, removed from the table.
    pub fn expired(&mut self, now: Time) -> Vec<Forwarding> {
        let due: Vec<Rid> = self
            .pending
            .iter()
            .filter(|(_, f)| f.attempt_deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        due.into_iter()
            .filter_map(|r| self.pending.remove(&r))
            .collect()
    }
}
