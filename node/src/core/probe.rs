//! Coverage probes: the rare paths a node reports having taken.
//!
//! A checker says what must never happen; a probe says what must *sometimes* happen, or the
//! sweeps never tested it (FoundationDB's `CODE_PROBE`, Antithesis' `sometimes`). The node
//! counts each [`Probe`] it reaches; the simulator sums the counts over every node incarnation of
//! a run, the sweep prints per scenario how many seeds reached each probe, and a scenario that
//! declares a probe in `[expect] sometimes` fails its sweep when no seed reaches it.
//!
//! Counting has no effect on behaviour: a probe is only ever incremented.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A rare path of the core. Names are kebab-case in scenario files and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// A client write left its key with two or more live versions (siblings).
    SiblingCreated,
    /// A client write was refused because it would exceed `max_siblings`.
    SiblingRefused,
    /// A delete with an empty context deleted what its coordinator held.
    BlindDelete,
    /// A read or write waited for this replica to apply what its context names.
    CausalWait,
    /// A causal wait ran out: the request was answered 503 (unsatisfiable here).
    CausalWaitExpired,
    /// A write was answered "indeterminate" for lack of acknowledgements within the timeout.
    WriteIndeterminate,
    /// A quorum read found replicas disagreeing and sent them the merged set.
    ReadRepair,
    /// A request forwarded to one replica was sent on to another after a failure.
    ProxyFailover,
    /// A replication copy was sent again because its acknowledgement was overdue.
    ReplicationResent,
    /// A write for an unreachable shard was kept as a hint.
    HintAccepted,
    /// Anti-entropy found keys that differed and repaired them.
    AaeRepaired,
    /// A tombstone every replica held was reaped after its grace period.
    TombstoneReaped,
    /// A node turned expired versions (TTL) into a tombstone.
    TtlExpired,
    /// A late copy of a version this node had already superseded or reaped was dropped.
    StaleCopyDropped,
    /// A handoff batch was sent to a new replica of a partition.
    HandoffSent,
    /// A handoff batch was received and applied.
    HandoffReceived,
    /// This node installed a newer view of the cluster.
    ViewInstalled,
    /// The node started a new incarnation (its storage might have lost acknowledged dots).
    NewIncarnation,
    /// A strong-key round was decided by a majority of acceptors.
    StrongDecided,
    /// A strong-key round was refused by a higher ballot and started over.
    StrongRetried,
    /// A node learned its acceptor state was lost (a wiped disk) and stopped voting.
    StrongAmnesiac,
    /// A strong-key acceptor refused a ballot below a promise it made before it restarted.
    StrongPromiseKept,
    /// A restarted strong-key acceptor reported, in a promise, a state it accepted before.
    StrongAcceptRecovered,
    /// A replica of a partition's new configuration became a strong-key acceptor with the
    /// records a sealed majority of the previous one handed over.
    StrongHandedOver,
    /// A version set pushed by an upstream cluster's real-time feed changed a key here.
    MeshFeedApplied,
    /// A full sync with an upstream cluster covered every difference of a partition.
    MeshFullSync,
    /// A full sync with an upstream cluster repaired keys the real-time feed had missed.
    MeshSyncRepaired,
    /// A real-time feed queue was full and dropped a key (the full sync repairs it).
    MeshQueueDropped,
}

impl Probe {
    /// Every probe, in report order.
    pub const ALL: [Probe; 28] = [
        Probe::SiblingCreated,
        Probe::SiblingRefused,
        Probe::BlindDelete,
        Probe::CausalWait,
        Probe::CausalWaitExpired,
        Probe::WriteIndeterminate,
        Probe::ReadRepair,
        Probe::ProxyFailover,
        Probe::ReplicationResent,
        Probe::HintAccepted,
        Probe::AaeRepaired,
        Probe::TombstoneReaped,
        Probe::TtlExpired,
        Probe::StaleCopyDropped,
        Probe::HandoffSent,
        Probe::HandoffReceived,
        Probe::ViewInstalled,
        Probe::NewIncarnation,
        Probe::StrongDecided,
        Probe::StrongRetried,
        Probe::StrongAmnesiac,
        Probe::StrongPromiseKept,
        Probe::StrongAcceptRecovered,
        Probe::StrongHandedOver,
        Probe::MeshFeedApplied,
        Probe::MeshFullSync,
        Probe::MeshSyncRepaired,
        Probe::MeshQueueDropped,
    ];

    /// The kebab-case name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Probe::SiblingCreated => "sibling-created",
            Probe::SiblingRefused => "sibling-refused",
            Probe::BlindDelete => "blind-delete",
            Probe::CausalWait => "causal-wait",
            Probe::CausalWaitExpired => "causal-wait-expired",
            Probe::WriteIndeterminate => "write-indeterminate",
            Probe::ReadRepair => "read-repair",
            Probe::ProxyFailover => "proxy-failover",
            Probe::ReplicationResent => "replication-resent",
            Probe::HintAccepted => "hint-accepted",
            Probe::AaeRepaired => "aae-repaired",
            Probe::TombstoneReaped => "tombstone-reaped",
            Probe::TtlExpired => "ttl-expired",
            Probe::StaleCopyDropped => "stale-copy-dropped",
            Probe::HandoffSent => "handoff-sent",
            Probe::HandoffReceived => "handoff-received",
            Probe::ViewInstalled => "view-installed",
            Probe::NewIncarnation => "new-incarnation",
            Probe::StrongDecided => "strong-decided",
            Probe::StrongRetried => "strong-retried",
            Probe::StrongAmnesiac => "strong-amnesiac",
            Probe::StrongPromiseKept => "strong-promise-kept",
            Probe::StrongAcceptRecovered => "strong-accept-recovered",
            Probe::StrongHandedOver => "strong-handed-over",
            Probe::MeshFeedApplied => "mesh-feed-applied",
            Probe::MeshFullSync => "mesh-full-sync",
            Probe::MeshSyncRepaired => "mesh-sync-repaired",
            Probe::MeshQueueDropped => "mesh-queue-dropped",
        }
    }

    /// The probe called `name`, if any.
    pub fn parse(name: &str) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How often each probe was reached. Invariant: no zero counts (an absent probe was not reached).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Probes(BTreeMap<Probe, u64>);

impl Probes {
    /// Records one more hit of `p`.
    pub fn hit(&mut self, p: Probe) {
        self.add(p, 1);
    }

    /// Records `n` more hits of `p`.
    pub fn add(&mut self, p: Probe, n: u64) {
        if n > 0 {
            *self.0.entry(p).or_insert(0) += n;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Probes) {
        for (&p, &n) in &other.0 {
            self.add(p, n);
        }
    }

    /// Hits of `p` so far.
    pub fn get(&self, p: Probe) -> u64 {
        self.0.get(&p).copied().unwrap_or(0)
    }

    /// The probes reached, in report order, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (Probe, u64)> + '_ {
        self.0.iter().map(|(&p, &n)| (p, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for p in Probe::ALL {
            assert_eq!(Probe::parse(p.name()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        assert_eq!(Probe::parse("no-such-probe"), None);
    }

    #[test]
    fn counts_add_up_and_zero_is_absent() {
        let mut a = Probes::default();
        a.hit(Probe::ReadRepair);
        a.add(Probe::ReadRepair, 2);
        a.add(Probe::AaeRepaired, 0);
        let mut b = Probes::default();
        b.hit(Probe::AaeRepaired);
        b.merge(&a);
        assert_eq!(b.get(Probe::ReadRepair), 3);
        assert_eq!(b.get(Probe::AaeRepaired), 1);
        assert_eq!(a.iter().count(), 1);
    }
}
