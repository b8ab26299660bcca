//! Generates a run's [`Plan`] from (scenario, seed): a pure function of its inputs.

use crate::draws::{Draws, Purpose};
use crate::plan::{
    Fault, NodeClockPlan, OpKind, Plan, PlannedOp, SessionPlan, TimedFault, key_name, node_addr,
};
use crate::scenario::{Clients, FaultKind, Scenario};
use causeway::core::View;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The cluster's first view (addresses `10.0.<i>.1:7000`); spare slots follow its nodes. In a
/// mesh, the first cluster's.
pub fn view_of(s: &Scenario) -> View {
    cluster_view(s, 0)
}

/// The first view of cluster `c` (of a mesh; cluster 0 is the only one otherwise).
pub fn cluster_view(s: &Scenario, c: usize) -> View {
    let nodes = s.cluster.members_of(c).map(node_addr).collect();
    View::with_partitions(nodes, s.cluster.rf, s.cluster.partitions)
        .expect("generated addresses form a valid view")
}

/// Generates the plan of `(scenario, seed)`; a scenario with an embedded plan returns it.
pub fn generate(s: &Scenario, seed: u64) -> Plan {
    if let Some(p) = &s.plan {
        return p.clone();
    }
    // One keyed stream per clock, per session's operations and probes, and for the faults:
    // changing one scenario knob (say, the fault rate) leaves the other streams' draws as they were.
    let mut draws = Draws::new(seed);
    let n = s.cluster.slots();
    // In a mesh each cluster's clock is off by its own offset too (drawn only in a mesh).
    let cluster_offset: Vec<i64> = (0..s.cluster.clusters)
        .map(|c| match s.cluster.is_mesh() {
            true => signed(
                draws.stream(Purpose::ClusterClock, c as u64),
                s.mesh.skew_ms,
            ),
            false => 0,
        })
        .collect();
    let clocks = (0..n)
        .map(|i| {
            let rng = draws.stream(Purpose::Clock, i as u64);
            NodeClockPlan {
                offset_ms: signed(rng, s.clocks.offset_ms)
                    + cluster_offset[s.cluster.cluster_of(i)],
                drift_ppm: signed(rng, s.clocks.drift_ppm),
            }
        })
        .collect();
    let faults = gen_faults(s, draws.stream(Purpose::Faults, 0));
    let view = view_of(s);
    let sessions = (0..s.workload.sessions)
        .map(|i| SessionPlan {
            ops: (0..s.workload.ops_per_session)
                .map(|_| gen_op(s, &view, i, draws.stream(Purpose::Ops, i as u64), false))
                .collect(),
            probe: (0..s.phases.probe_ops)
                .map(|_| gen_op(s, &view, i, draws.stream(Purpose::Probe, i as u64), true))
                .collect(),
        })
        .collect();
    Plan {
        clocks,
        faults,
        sessions,
    }
}

fn signed(rng: &mut ChaCha8Rng, max: u64) -> i64 {
    if max == 0 {
        0
    } else {
        rng.random_range(-(max as i64)..=max as i64)
    }
}

fn gen_op(
    s: &Scenario,
    view: &View,
    session: usize,
    rng: &mut ChaCha8Rng,
    probe: bool,
) -> PlannedOp {
    let w = &s.workload;
    let key = rng.random_range(0..w.keys);
    let total = w.read + w.write + w.delete;
    let x = rng.random::<f64>() * total;
    let kind = if x < w.read {
        OpKind::Get
    } else if x < w.read + w.write {
        OpKind::Put
    } else {
        OpKind::Delete
    };
    let n = s.cluster.slots();
    let node = match w.clients {
        Clients::Sticky => session % n,
        Clients::Roaming => rng.random_range(0..n),
        Clients::NonOwner => {
            let shard = view.shard_of_key(key_name(key).as_bytes());
            let others: Vec<usize> = (0..s.cluster.nodes)
                .filter(|&i| view.shard_of_node(&view.nodes[i]) != Some(shard))
                .collect();
            others[rng.random_range(0..others.len())]
        }
    };
    let merge_from =
        (!probe && w.sessions > 1 && rng.random_bool(w.merge_contexts.clamp(0.0, 1.0)))
            .then(|| (session + rng.random_range(1..w.sessions)) % w.sessions);
    let think_ms = rng.random_range(w.think_ms[0]..=w.think_ms[1]);
    // Drawn only when the scenario asks for blind writes or deletes, so other scenarios' plans (and so
    // their seeds) stay what they were.
    let p_blind = match kind {
        OpKind::Put => w.blind_writes,
        OpKind::Delete => w.blind_deletes,
        OpKind::Get => 0.0,
    };
    let blind = p_blind > 0.0 && rng.random_bool(p_blind);
    // Likewise drawn only when the scenario asks for TTLs.
    let ttl_s =
        (!probe && kind == OpKind::Put && w.ttl > 0.0 && rng.random_bool(w.ttl.clamp(0.0, 1.0)))
            .then(|| rng.random_range(w.ttl_s[0].max(1)..=w.ttl_s[1].max(w.ttl_s[0]).max(1)));
    PlannedOp {
        node,
        kind,
        key,
        think_ms,
        at_us: None,
        merge_from,
        blind,
        ttl_s,
    }
}

fn secs(rng: &mut ChaCha8Rng, range: [f64; 2]) -> u64 {
    let (lo, hi) = (range[0].min(range[1]), range[0].max(range[1]));
    ((lo + rng.random::<f64>() * (hi - lo)) * 1000.0) as u64
}

/// Random faults during chaos, each followed by its repair; then the explicit events.
fn gen_faults(s: &Scenario, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
    let f = &s.faults;
    let n = s.cluster.slots();
    let chaos_ms = (s.phases.chaos_s * 1000.0) as u64;
    let mut out: Vec<TimedFault> = f.events.clone();
    // Random membership changes: current members, and spares that never ran.
    let mut members: Vec<usize> = (0..s.cluster.nodes).collect();
    let mut spares: Vec<usize> = (s.cluster.nodes * s.cluster.clusters..n)
        .filter(|i| !f.events.iter().any(|e| e.fault.nodes().contains(i)))
        .collect();
    // Per node: until when it is down (crashed, wiped or paused).
    let mut down_until = vec![0u64; n];
    let mut wipes = 0;
    let mut t = secs(rng, f.every_s);
    while !f.kinds.is_empty() && t < chaos_ms {
        let kind = f.kinds[rng.random_range(0..f.kinds.len())];
        let end = (t + secs(rng, f.lasts_s).max(1)).min(chaos_ms);
        let at = |at_ms, fault| TimedFault { at_ms, fault };
        match kind {
            FaultKind::Partition if n > 1 => {
                let mut nodes: Vec<usize> = (0..n).collect();
                shuffle(&mut nodes, rng);
                let cut = rng.random_range(1..n);
                let groups = vec![nodes[..cut].to_vec(), nodes[cut..].to_vec()];
                out.push(at(t, Fault::Partition { groups }));
                out.push(at(end, Fault::HealNet));
            }
            FaultKind::Asymmetric if n > 1 => {
                for _ in 0..rng.random_range(1..=n) {
                    let from = rng.random_range(0..n);
                    let to = (from + rng.random_range(1..n)) % n;
                    out.push(at(t, Fault::Clog { from, to }));
                }
                out.push(at(end, Fault::HealNet));
            }
            FaultKind::Swizzle => {
                let mut order: Vec<usize> = (0..n).collect();
                shuffle(&mut order, rng);
                let k = rng.random_range(1..=n.div_ceil(2));
                let step = (end - t) / (2 * k as u64).max(1);
                for (i, &node) in order[..k].iter().enumerate() {
                    out.push(at(t + step * i as u64, Fault::Isolate { node }));
                }
                let mut heal = order[..k].to_vec();
                shuffle(&mut heal, rng);
                for (i, &node) in heal.iter().enumerate() {
                    out.push(at(t + step * (k + i) as u64, Fault::Rejoin { node }));
                }
            }
            FaultKind::Crash
            | FaultKind::CrashBeforeSync
            | FaultKind::Wipe
            | FaultKind::CutWipe
            | FaultKind::Pause => {
                let down = down_until.iter().filter(|&&u| u > t).count();
                let target = |i: &usize| f.down_nodes.is_empty() || f.down_nodes.contains(i);
                let free: Vec<usize> = (0..n)
                    .filter(|i| target(i) && down_until[*i] <= t)
                    .collect();
                let wiping = matches!(kind, FaultKind::Wipe | FaultKind::CutWipe);
                let wipe_ok = !wiping || wipes < f.max_wipes;
                if down < f.max_down && !free.is_empty() && wipe_ok {
                    let node = free[rng.random_range(0..free.len())];
                    down_until[node] = end + 1;
                    let mut stop_at = t;
                    let (stop, start) = match kind {
                        FaultKind::Crash => (Fault::Crash { node }, Fault::Restart { node }),
                        FaultKind::CrashBeforeSync => {
                            (Fault::CrashBeforeSync { node }, Fault::Restart { node })
                        }
                        FaultKind::Wipe => {
                            wipes += 1;
                            (Fault::Wipe { node }, Fault::Restart { node })
                        }
                        FaultKind::CutWipe => {
                            // Cut first; the node serves on alone for a moment, then loses
                            // its disk; its links come back when it restarts.
                            wipes += 1;
                            stop_at = t + secs(rng, [0.05, 0.5]).min(end - t - 1);
                            out.push(at(t, Fault::Cut { node }));
                            out.push(at(end, Fault::Rejoin { node }));
                            (Fault::Wipe { node }, Fault::Restart { node })
                        }
                        _ => (Fault::Pause { node }, Fault::Resume { node }),
                    };
                    out.push(at(stop_at, stop));
                    out.push(at(end, start));
                }
            }
            FaultKind::CrashPair => {
                let down = down_until.iter().filter(|&&u| u > t).count();
                let free = |i: usize| i < s.cluster.nodes && down_until[i] <= t;
                let view = view_of(s);
                let pairs: Vec<(usize, usize)> = (0..view.shard_count())
                    .flat_map(|sh| {
                        let m: Vec<usize> = view
                            .shard_members(sh)
                            .iter()
                            .filter_map(|id| (0..s.cluster.nodes).find(|&i| node_addr(i) == *id))
                            .filter(|&i| free(i))
                            .collect();
                        let mut p = Vec::new();
                        for x in 0..m.len() {
                            for &y in &m[x + 1..] {
                                p.push((m[x], y));
                            }
                        }
                        p
                    })
                    .collect();
                if down + 2 <= f.max_down && !pairs.is_empty() {
                    let (a, b) = pairs[rng.random_range(0..pairs.len())];
                    for node in [a, b] {
                        down_until[node] = end + 1;
                        out.push(at(t, Fault::Crash { node }));
                        out.push(at(end, Fault::Restart { node }));
                    }
                }
            }
            FaultKind::ClusterPartition if s.cluster.is_mesh() => {
                let c = rng.random_range(0..s.cluster.clusters);
                let inside: Vec<usize> = s.cluster.members_of(c).collect();
                let outside: Vec<usize> = (0..n).filter(|i| !inside.contains(i)).collect();
                let groups = vec![inside, outside];
                out.push(at(t, Fault::Partition { groups }));
                out.push(at(end, Fault::HealNet));
            }
            FaultKind::ClusterCrash if s.cluster.is_mesh() => {
                let down = down_until.iter().filter(|&&u| u > t).count();
                let c = rng.random_range(0..s.cluster.clusters);
                let nodes: Vec<usize> = s.cluster.members_of(c).collect();
                if down + nodes.len() <= f.max_down && nodes.iter().all(|&i| down_until[i] <= t) {
                    for &node in &nodes {
                        let back = (end + rng.random_range(0..1000)).min(chaos_ms);
                        down_until[node] = back + 1;
                        out.push(at(t, Fault::Crash { node }));
                        out.push(at(back, Fault::Restart { node }));
                    }
                }
            }
            FaultKind::Jump => {
                let node = rng.random_range(0..n);
                let ms = signed(rng, s.clocks.jump_ms.max(1));
                out.push(at(t, Fault::Jump { node, ms }));
            }
            FaultKind::Loss => {
                out.push(at(t, Fault::Loss { rate: 0.3 }));
                out.push(at(end, Fault::Loss { rate: s.net.loss }));
            }
            FaultKind::Dup => {
                out.push(at(t, Fault::Dup { rate: 0.3 }));
                out.push(at(end, Fault::Dup { rate: s.net.dup }));
            }
            FaultKind::Join if !spares.is_empty() => {
                let node = spares.remove(rng.random_range(0..spares.len()));
                members.push(node);
                out.push(at(t, Fault::Join { node, via: None }));
            }
            FaultKind::Leave if members.len() > s.cluster.rf.max(2) => {
                let node = members.remove(rng.random_range(0..members.len()));
                out.push(at(t, Fault::Remove { node, via: None }));
            }
            FaultKind::Reshape => {
                let mut nodes = members.clone();
                shuffle(&mut nodes, rng);
                let rf = rng.random_range(1..=nodes.len().min(3));
                let fault = Fault::View {
                    nodes: Some(nodes),
                    rf: Some(rf),
                    via: None,
                };
                out.push(at(t, fault));
            }
            FaultKind::Partition
            | FaultKind::Asymmetric
            | FaultKind::Join
            | FaultKind::Leave
            | FaultKind::ClusterPartition
            | FaultKind::ClusterCrash => {}
        }
        t += secs(rng, f.every_s).max(1);
    }
    out.sort_by_key(|e| e.at_ms);
    out
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::from_toml(
            r#"
            name = "t"
            [cluster]
            nodes = 6
            rf = 3
            [workload]
            sessions = 4
            keys = 8
            ops_per_session = 20
            read = 1.0
            write = 1.0
            delete = 0.5
            merge_contexts = 0.2
            clients = "non-owner"
            [faults]
            kinds = ["partition", "crash", "swizzle", "jump", "wipe"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn generation_is_a_function_of_the_seed() {
        let s = scenario();
        assert_eq!(generate(&s, 7), generate(&s, 7));
        assert_ne!(generate(&s, 7), generate(&s, 8));
    }

    #[test]
    fn blind_writes_are_puts_and_cost_no_draws_when_off() {
        let mut s = scenario();
        let off = generate(&s, 5);
        assert!(off.sessions.iter().flat_map(|x| &x.ops).all(|o| !o.blind));
        s.workload.blind_writes = 0.5;
        let on = generate(&s, 5);
        let ops: Vec<&PlannedOp> = on.sessions.iter().flat_map(|x| &x.ops).collect();
        assert!(ops.iter().any(|o| o.blind));
        assert!(
            ops.iter()
                .filter(|o| o.blind)
                .all(|o| o.kind == OpKind::Put)
        );
        // The first session's first op is drawn before any blind draw: unchanged.
        assert_eq!(on.sessions[0].ops[0].key, off.sessions[0].ops[0].key);
        s.workload.blind_writes = 0.0;
        s.workload.delete = 0.3;
        s.workload.blind_deletes = 0.5;
        let deletes = generate(&s, 5);
        let ops: Vec<&PlannedOp> = deletes.sessions.iter().flat_map(|x| &x.ops).collect();
        assert!(ops.iter().any(|o| o.blind));
        assert!(
            ops.iter()
                .filter(|o| o.blind)
                .all(|o| o.kind == OpKind::Delete)
        );
    }

    #[test]
    fn non_owner_clients_never_hit_a_replica_and_faults_are_sorted() {
        let s = scenario();
        let view = view_of(&s);
        let p = generate(&s, 3);
        for op in p.sessions.iter().flat_map(|s| &s.ops) {
            let shard = view.shard_of_key(key_name(op.key).as_bytes());
            assert_ne!(view.shard_of_node(&view.nodes[op.node]), Some(shard));
        }
        assert!(p.faults.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(!p.faults.is_empty());
    }

    #[test]
    fn random_membership_joins_spares_once_and_keeps_a_quorum_of_members() {
        let mut s = scenario();
        s.cluster.spares = 2;
        s.faults.kinds = vec![FaultKind::Join, FaultKind::Leave];
        s.faults.every_s = [0.5, 1.0];
        s.workload.clients = Clients::Roaming;
        let mut saw_join = false;
        for seed in 0..20 {
            let p = generate(&s, seed);
            let mut members: Vec<usize> = (0..6).collect();
            for f in &p.faults {
                match f.fault {
                    Fault::Join { node, via: None } => {
                        assert!((6..8).contains(&node) && !members.contains(&node));
                        members.push(node);
                        saw_join = true;
                    }
                    Fault::Remove { node, via: None } => {
                        assert!(members.contains(&node));
                        members.retain(|&m| m != node);
                        assert!(members.len() >= 3, "left fewer members than rf");
                    }
                    ref other => panic!("unexpected fault {other:?}"),
                }
            }
            // Sessions may address spares (the simulator redirects them until they join).
            assert!(p.sessions.iter().flat_map(|x| &x.ops).all(|o| o.node < 8));
        }
        assert!(saw_join);
    }

    #[test]
    fn crash_pairs_take_two_replicas_of_a_shard_and_cut_wipes_cut_before_wiping() {
        let mut s = scenario();
        s.faults.kinds = vec![FaultKind::CrashPair, FaultKind::CutWipe];
        s.faults.max_down = 2;
        s.faults.max_wipes = 1;
        let view = view_of(&s);
        let (mut pairs, mut cuts) = (0, 0);
        for seed in 0..20 {
            let p = generate(&s, seed);
            let mut wiped = None;
            for (i, f) in p.faults.iter().enumerate() {
                match f.fault {
                    Fault::Crash { node } => {
                        let other = p.faults[i + 1..]
                            .iter()
                            .chain(p.faults[..i].iter().rev())
                            .find_map(|g| match g.fault {
                                Fault::Crash { node: m } if g.at_ms == f.at_ms && m != node => {
                                    Some(m)
                                }
                                _ => None,
                            })
                            .expect("crashes come in pairs");
                        let shard = |n: usize| view.shard_of_node(&node_addr(n));
                        assert_eq!(shard(node), shard(other));
                        pairs += 1;
                    }
                    Fault::Cut { node } => {
                        let w = p.faults[i..].iter().find_map(|g| match g.fault {
                            Fault::Wipe { node: m } if m == node => Some(g.at_ms),
                            _ => None,
                        });
                        assert!(
                            w.is_some_and(|at| at > f.at_ms),
                            "a cut node is wiped later"
                        );
                        assert!(wiped.replace(node).is_none(), "max_wipes = 1");
                        cuts += 1;
                    }
                    _ => {}
                }
            }
        }
        assert!(pairs > 0 && cuts > 0);
    }
}
