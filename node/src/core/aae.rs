//! Active anti-entropy between the replicas of a shard: the initiator's side of one exchange,
//! and per-partition statistics.
//!
//! An exchange walks the Merkle trees ([`super::merkle`]) top-down — roots, then branches, then
//! segments, then key digests — so its traffic grows with the difference, not the data. Both
//! sides merge the other's version sets of differing keys with the same join replication uses.
//!
//! Clock adoption: the responder's clock travels with its branch hashes (step 2), the
//! initiator's with its roots (step 1, resent at step 7). When an exchange repaired *every*
//! difference (not cut short by the per-round key cap), each side's state now includes the other's
//! state as of that snapshot, hence reflects every dot of the snapshot clock, and joins it into
//! its own clock. This fills clock gaps left by lost replication (e.g. a coordinator that crashed
//! with acknowledged writes not yet sent), so causal waits end.

use super::clock::{NodeClock, PartitionClock};
use super::request::{ReqId, Rid};
use super::ring::NodeId;
use super::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one replica vouches for, as exchanged in anti-entropy: its node clock, restricted to
/// actors it vouches for on every partition of the shard they concern (see
/// [`crate::core::history`]), and its handoff clocks of the shard's partitions. After a complete
/// exchange the other side reflects all of it for the shard's partitions, and joins it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The view epoch the claims were made under; claims from another epoch are not adopted.
    pub epoch: super::ring::Epoch,
    pub clock: NodeClock,
    pub handoff: BTreeMap<u32, PartitionClock>,
    /// The shard's partitions the replica itself still awaits from a previous owner. A peer
    /// that awaits one of the others, and now reflects this replica's state, has it in full.
    pub awaiting: Vec<u32>,
}

/// The initiator's state of its one running exchange.
#[derive(Debug)]
pub struct Exchange {
    pub rid: Rid,
    pub peer: NodeId,
    pub deadline: Time,
    /// This node's claims when it sent its roots.
    pub clock: Claims,
    /// The responder's claims as of its branch hashes.
    pub peer_clock: Option<Claims>,
    /// Partitions whose roots differed.
    pub partitions: Vec<u32>,
    /// Some differing segments were left for a later round (per-round key cap).
    pub truncated: bool,
    /// Encoded size of every message of this exchange, both directions.
    pub bytes: u64,
    pub keys_repaired: u64,
    /// The on-demand request (`POST /v1/admin/aae/pull`) waiting for this exchange, if any.
    pub requested_by: Option<ReqId>,
}

/// Anti-entropy counters of one partition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionStats {
    /// When an exchange covering this partition last completed (driver clock, µs).
    pub last_exchange_us: u64,
    pub keys_repaired: u64,
}

/// Anti-entropy counters of a node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AaeStats {
    pub exchanges: u64,
    pub exchanges_in_sync: u64,
    pub exchanges_failed: u64,
    pub keys_repaired: u64,
    pub bytes: u64,
    pub tombstones_reaped: u64,
    pub partitions: BTreeMap<u32, PartitionStats>,
}

/// Encoded size of a message, for byte accounting.
pub fn encoded_len<T: Serialize>(msg: &T) -> u64 {
    struct Count(u64);
    impl bincode::enc::write::Writer for Count {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0 += bytes.len() as u64;
            Ok(())
        }
    }
    let mut c = Count(0);
    bincode::serde::encode_into_writer(msg, &mut c, bincode::config::standard())
        .expect("counting cannot fail");
    c.0
}
