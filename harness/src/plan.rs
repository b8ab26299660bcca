//! A run's workload and fault schedule as data: generated from (scenario, seed) by
//! [`crate::generate`], executed by the simulator, and reduced by the shrinker.

use serde::{Deserialize, Serialize};

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Get,
    Put,
    Delete,
}

/// One client operation of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedOp {
    /// Index of the node the request is sent to.
    pub node: usize,
    pub kind: OpKind,
    /// Index into the key space (`k<index>`).
    pub key: u32,
    /// Pause before issuing, ms.
    pub think_ms: u64,
    /// Issue at this simulated time (µs) instead, or when the previous operation completes if
    /// that is later: the shrinker pins every operation to the time it was issued in the
    /// failing run, so cutting one operation does not move the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<u64>,
    /// Merge this other session's context into ours first (context passing between sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_from: Option<usize>,
    /// A blind write or delete: sent with an empty context (see `Workload::blind_writes` and
    /// `Workload::blind_deletes`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub blind: bool,
    /// A put with this time to live, in seconds (see `Workload::ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

impl PlannedOp {
    /// When the operation is issued, its session's previous one having completed at `done_us`.
    pub fn issue_at(&self, done_us: u64) -> u64 {
        match self.at_us {
            Some(at) => at.max(done_us),
            None => done_us + self.think_ms * 1000,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A session: sequential chaos operations, then probe operations after heal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPlan {
    pub ops: Vec<PlannedOp>,
    pub probe: Vec<PlannedOp>,
}

/// One fault, applied by the simulator at a moment of simulated time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Nodes in different groups cannot reach each other (both directions).
    Partition {
        groups: Vec<Vec<usize>>,
    },
    /// Messages from `from` to `to` are dropped (one direction).
    Clog {
        from: usize,
        to: usize,
    },
    /// Every link to and from `node` is clogged.
    Isolate {
        node: usize,
    },
    /// Every link from `node` is clogged and what it sent that has not arrived yet is lost (a
    /// crash loses its send buffers). `Rejoin` or `HealNet` repairs it.
    Cut {
        node: usize,
    },
    /// Every link to and from `node` is unclogged.
    Rejoin {
        node: usize,
    },
    /// Every link is unclogged.
    HealNet,
    /// The node stops; unsynced disk writes are lost (a random prefix survives, maybe torn).
    Crash {
        node: usize,
    },
    /// The node crashes inside its next turn that syncs: after the turn's early answers left,
    /// before the sync, so the turn's unsynced writes are lost like a crash's. Disarmed by the
    /// `Restart` that repairs it if no such turn came first.
    CrashBeforeSync {
        node: usize,
    },
    /// The node stops and loses its whole disk (amnesia under the same address).
    Wipe {
        node: usize,
    },
    /// A stopped node starts again.
    Restart {
        node: usize,
    },
    /// The node freezes: inputs queue up until `Resume`.
    Pause {
        node: usize,
    },
    Resume {
        node: usize,
    },
    /// The node's clock steps by `ms` (negative: backwards).
    Jump {
        node: usize,
        ms: i64,
    },
    /// Packet loss rate from now on.
    Loss {
        rate: f64,
    },
    /// Packet duplication rate from now on.
    Dup {
        rate: f64,
    },
    /// Membership: `node` (a spare slot that never ran) starts with an empty view and asks member
    /// `via` (default: a random live member) to admit it.
    Join {
        node: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<usize>,
    },
    /// Membership: member `via` (default: a random live member) is asked to install a view of
    /// `nodes` (default: its current view's nodes) with replication factor `rf` (default:
    /// unchanged). Listed nodes that never ran start with an empty view and learn it by gossip.
    View {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<Vec<usize>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rf: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<usize>,
    },
    /// Membership: decommission `node` (a view without it, proposed at another member); it keeps
    /// running and hands its partitions off.
    Remove {
        node: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<usize>,
    },
    /// Membership: `node` crashes for good (it never restarts, not even at heal) and a view
    /// without it is proposed at another member; its data is rebuilt from surviving replicas.
    ForceRemove {
        node: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<usize>,
    },
}

impl Fault {
    /// The nodes a fault names.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Partition { groups } => groups.iter().flatten().copied().collect(),
            Fault::Clog { from, to } => vec![*from, *to],
            Fault::Isolate { node }
            | Fault::Cut { node }
            | Fault::Rejoin { node }
            | Fault::Crash { node }
            | Fault::CrashBeforeSync { node }
            | Fault::Wipe { node }
            | Fault::Restart { node }
            | Fault::Pause { node }
            | Fault::Resume { node }
            | Fault::Jump { node, .. } => vec![*node],
            Fault::HealNet | Fault::Loss { .. } | Fault::Dup { .. } => Vec::new(),
            Fault::Join { node, via }
            | Fault::Remove { node, via }
            | Fault::ForceRemove { node, via } => std::iter::once(*node).chain(*via).collect(),
            Fault::View { nodes, via, .. } => nodes.iter().flatten().copied().chain(*via).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedFault {
    pub at_ms: u64,
    pub fault: Fault,
}

/// A node's clock: initial offset and drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClockPlan {
    pub offset_ms: i64,
    pub drift_ppm: i64,
}

/// Everything a run does that is not network randomness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub clocks: Vec<NodeClockPlan>,
    /// Sorted by `at_ms` (stable: equal times keep their order).
    pub faults: Vec<TimedFault>,
    pub sessions: Vec<SessionPlan>,
}

impl Plan {
    /// Total number of fault events and operations: the size the shrinker reduces.
    pub fn size(&self) -> usize {
        self.faults.len()
            + self
                .sessions
                .iter()
                .map(|s| s.ops.len() + s.probe.len())
                .sum::<usize>()
    }
}

/// The key bytes of key index `k`.
pub fn key_name(k: u32) -> String {
    format!("k{k}")
}

/// The address of node slot `i`.
pub fn node_addr(i: usize) -> String {
    format!("10.0.{i}.1:7000")
}
