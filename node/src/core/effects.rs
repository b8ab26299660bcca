//! The one executor of a [`Ready`]: every driver (server, simulator, scripted tests, examples)
//! carries a Ready out through [`Ready::apply`], so the release order its contract sets is
//! written once, here:
//!
//! 1. the executed-write events, then the early messages and replies (answers that depend on no
//!    write of this Ready);
//! 2. [`Effects::persist`]: the storage writes are synced when the Ready asks for it, else handed
//!    to storage as they are;
//! 3. only if they were stored: the ordinary messages and replies, then the peers to forget.
//!
//! Invariants: nothing of step 3 reaches an effect before step 2 returned; after a failed persist
//! no answer that acknowledges a write of this Ready leaves (client and forwarded write replies
//! become 507, replication and handoff acknowledgements are withheld: their senders retry); after
//! a crash at step 2 nothing more leaves.

use super::message::PeerMsg;
use super::node::{Executed, Ready};
use super::request::Reply;
use super::request::{ReqError, Response};
use super::ring::NodeId;
use super::storage::Storage;

/// What a driver does for its node, one effect at a time, in the order [`Ready::apply`] calls.
pub trait Effects {
    /// Sends `msg` to `to` (which may be this node itself).
    fn send(&mut self, to: NodeId, msg: PeerMsg);
    /// Hands `reply` to the client waiting for it.
    fn reply(&mut self, reply: Reply);
    /// Makes this Ready's storage writes durable if `sync`, else hands them to storage as they
    /// are (a batch commit); says what became of them.
    fn persist(&mut self, sync: bool) -> Persisted;
    /// Drops what the driver keeps for `peer`, after writing what it already queued for it.
    fn forget(&mut self, peer: NodeId);
    /// A client write the node executed (see [`Executed`]); a driver without a write registry
    /// ignores it.
    fn executed(&mut self, _write: Executed) {}
}

/// The outcome of [`Effects::persist`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// The writes are where the Ready wants them: the rest of it may leave.
    Stored,
    /// Storage failed: the writes may be lost, so nothing that acknowledges them leaves.
    Failed,
    /// The node crashed before the writes were durable (a simulated fault): nothing more leaves.
    Crashed,
}

impl Ready {
    /// Carries out this Ready through `fx`, in the order its contract sets (see the module).
    pub fn apply(self, fx: &mut impl Effects) {
        self.release_early(fx).finish(fx);
    }

    /// Step 1 alone, for a driver that must yield between the early release and the sync (the
    /// server lets its peer links write the early messages before the fsync blocks its thread).
    pub fn release_early(self, fx: &mut impl Effects) -> Late {
        for write in self.executed {
            fx.executed(write);
        }
        for (to, msg) in self.early_messages {
            fx.send(to, msg);
        }
        for reply in self.early_replies {
            fx.reply(reply);
        }
        Late {
            sync: self.sync,
            messages: self.messages,
            replies: self.replies,
            forget: self.forget,
        }
    }
}

/// Everything a Ready released, in release order, for drivers that take a turn's outputs at one
/// instant (scripted tests, examples): see [`Ready::collect`].
#[derive(Debug, Default)]
pub struct Outputs {
    pub executed: Vec<Executed>,
    pub messages: Vec<(NodeId, PeerMsg)>,
    pub replies: Vec<Reply>,
    pub forget: Vec<NodeId>,
}

impl Ready {
    /// Carries out this Ready over `storage` (synced when the Ready asks) and returns what it
    /// released.
    pub fn collect(self, storage: &mut impl Storage) -> Outputs {
        let mut fx = Collect {
            storage,
            out: Outputs::default(),
        };
        self.apply(&mut fx);
        fx.out
    }
}

struct Collect<'s, S> {
    storage: &'s mut S,
    out: Outputs,
}

impl<S: Storage> Effects for Collect<'_, S> {
    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.out.messages.push((to, msg));
    }

    fn reply(&mut self, reply: Reply) {
        self.out.replies.push(reply);
    }

    fn persist(&mut self, sync: bool) -> Persisted {
        if sync {
            self.storage.sync();
        }
        Persisted::Stored
    }

    fn forget(&mut self, peer: NodeId) {
        self.out.forget.push(peer);
    }

    fn executed(&mut self, write: Executed) {
        self.out.executed.push(write);
    }
}

/// What is left of a [`Ready`] after its early release: steps 2 and 3.
#[must_use = "the rest of a Ready must be finished"]
#[derive(Debug)]
pub struct Late {
    sync: bool,
    messages: Vec<(NodeId, PeerMsg)>,
    replies: Vec<Reply>,
    forget: Vec<NodeId>,
}

impl Late {
    /// Whether step 2 will sync.
    pub fn syncs(&self) -> bool {
        self.sync
    }

    /// Persists, then releases the rest unless the writes were lost.
    pub fn finish(mut self, fx: &mut impl Effects) {
        match fx.persist(self.sync) {
            Persisted::Crashed => return,
            Persisted::Failed => self.withhold_acks(),
            Persisted::Stored => {}
        }
        for (to, msg) in self.messages {
            fx.send(to, msg);
        }
        for reply in self.replies {
            fx.reply(reply);
        }
        for peer in self.forget {
            fx.forget(peer);
        }
    }

    /// After a failed persist: client and forwarded write replies become 507 (indeterminate: the
    /// staged writes are retried with the next commit), and replication and handoff
    /// acknowledgements and strong-key promises, accepts and identity answers are withheld
    /// (their senders retry or time out).
    fn withhold_acks(&mut self) {
        let why = "storage failed (disk full?); the write may not be durable";
        let refuse = |r: &mut Result<Response, ReqError>| {
            if matches!(r, Ok(Response::Written { .. })) {
                *r = Err(ReqError::InsufficientStorage(why.into()));
            }
        };
        for reply in &mut self.replies {
            refuse(&mut reply.result);
        }
        self.messages.retain_mut(|(_, msg)| match msg {
            PeerMsg::ForwardReply { result, .. } => {
                refuse(result);
                true
            }
            PeerMsg::ReplicateAck { .. }
            | PeerMsg::HandoffAck { .. }
            | PeerMsg::StrongPromise { .. }
            | PeerMsg::StrongAccepted { .. }
            | PeerMsg::StrongHelloReply { .. } => false,
            _ => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::VersionVector;
    use crate::core::dot::{Actor, Dot};
    use bytes::Bytes;

    /// Records every effect in order; persists with a fixed outcome.
    struct Log {
        outcome: Persisted,
        seen: Vec<String>,
    }

    impl Effects for Log {
        fn send(&mut self, to: NodeId, msg: PeerMsg) {
            self.seen.push(format!("send {to} {}", msg.kind()));
        }
        fn reply(&mut self, reply: Reply) {
            let ok = reply.result.is_ok();
            self.seen.push(format!("reply {} {ok}", reply.id));
        }
        fn persist(&mut self, sync: bool) -> Persisted {
            self.seen.push(format!("persist {sync}"));
            self.outcome
        }
        fn forget(&mut self, peer: NodeId) {
            self.seen.push(format!("forget {peer}"));
        }
    }

    fn written(id: u64) -> Reply {
        Reply {
            id,
            served_by: "a".into(),
            result: Ok(Response::Written {
                dot: Dot::new(Actor::new(1, 1, 1), 1),
                context: VersionVector::new(),
                replaced: false,
                coordinator_context: None,
            }),
        }
    }

    fn fetch() -> PeerMsg {
        PeerMsg::Fetch {
            rid: 7,
            key: Bytes::new(),
        }
    }

    fn ready() -> Ready {
        Ready {
            sync: true,
            early_messages: vec![("b".into(), fetch())],
            early_replies: vec![written(1)],
            messages: vec![
                (
                    "c".into(),
                    PeerMsg::ReplicateAck {
                        key: Bytes::new(),
                        dots: Vec::new(),
                    },
                ),
                ("d".into(), fetch()),
            ],
            replies: vec![written(2)],
            forget: vec!["e".into()],
            executed: Vec::new(),
        }
    }

    fn run(outcome: Persisted) -> Vec<String> {
        let mut log = Log {
            outcome,
            seen: Vec::new(),
        };
        ready().apply(&mut log);
        log.seen
    }

    #[test]
    fn early_lists_leave_before_the_sync_and_the_rest_after() {
        let seen = run(Persisted::Stored);
        let want = [
            "send b fetch",
            "reply 1 true",
            "persist true",
            "send c replicate_ack",
            "send d fetch",
            "reply 2 true",
            "forget e",
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn a_failed_persist_withholds_what_acknowledges_the_writes() {
        let seen = run(Persisted::Failed);
        let want = [
            "send b fetch",
            "reply 1 true",
            "persist true",
            "send d fetch",
            "reply 2 false",
            "forget e",
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn a_crash_at_the_sync_releases_only_the_early_lists() {
        let seen = run(Persisted::Crashed);
        assert_eq!(seen, ["send b fetch", "reply 1 true", "persist true"]);
    }
}
