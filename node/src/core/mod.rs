//! The sans-IO node core: a deterministic state machine with no sockets, threads, clocks or
//! randomness of its own. Time and a random nonce come in as inputs; messages, replies and the
//! need to sync storage come out in a [`Ready`]. Both drivers — the simulator (`sim/`) and the
//! production server (`node/src/server`) — run exactly this code.
//!
//! Start reading at [`node`]: `Node::handle(now, Input)` and `Node::take_ready()`;
//! [`effects`] carries a Ready out.

pub mod aae;
pub mod clock;
pub mod config;
pub mod dot;
pub mod dvv;
pub mod effects;
pub mod history;
pub mod merkle;
pub mod message;
pub mod node;
pub mod outbox;
pub mod probe;
pub mod proxy;
pub mod request;
pub mod ring;
pub mod storage;
pub mod strong;
pub mod time;
pub mod token;
pub mod validate;

pub use clock::{NodeClock, VersionVector};
pub use config::{Canary, Config, ConflictMode, SyncMode};
pub use dot::{Actor, Dot};
pub use dvv::{Version, VersionSet};
pub use effects::{Effects, Late, Outputs, Persisted};
pub use message::PeerMsg;
pub use node::{Executed, Identity, Input, Node, NodeStatus, Origin, Ready, claim_cluster};
pub use probe::{Probe, Probes};
pub use request::{
    ListEntry, MAX_MERGE_BATCH, MAX_TTL_SECS, Op, Quorum, Reply, ReqError, ReqId, Request, Response,
};
pub use ring::{NodeId, ShardId, View};
pub use storage::{IndexEntry, IndexWrite, MemStorage, Storage, Summary};
pub use time::Time;
pub use validate::{Limits, Rejection, validate, validate_set};
