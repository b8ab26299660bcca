//! Heal, settle and the end of a run: repairs every fault, then waits until every key's
//! replicas agree (or the G3 bound), and captures the final replica states.

use super::*;

impl<A: FnMut(u64)> World<'_, A> {
    pub(super) fn heal(&mut self) {
        self.phase = Phase::Settle;
        self.note(TraceCode::Heal, |_| "heal".into());
        self.clogged.clear();
        self.cut.clear();
        self.loss = 0.0;
        self.dup = 0.0;
        for n in 0..self.slots.len() {
            self.slots[n].crash_before_sync = false;
            let slot = &self.slots[n];
            if slot.node.is_none() && slot.started && !slot.dead {
                self.start(n);
            }
            self.resume(n);
        }
        let settle = (self.scenario.phases.settle_s * 1e6) as u64;
        self.schedule(self.now + settle, Event::Probe);
    }

    /// Trace lines with each running node's view, handoff state and applied counters.
    pub(super) fn trace_node_states(&mut self) {
        let lines: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let n = s.node.as_ref()?;
                let st = n.status();
                // In a mesh: per upstream, its cluster, refusal and full syncs done / failed.
                let mesh: Vec<String> = st
                    .mesh
                    .upstreams
                    .iter()
                    .map(|u| {
                        format!(
                            " mesh {} cluster {:?} refused {:?} syncs {}/{} failed, pushed {} repaired {}",
                            u.name,
                            u.cluster,
                            u.refused,
                            u.full_syncs,
                            u.full_syncs_failed,
                            u.keys_pushed,
                            u.keys_repaired
                        )
                    })
                    .collect();
                Some(format!(
                    "{:>12} n{i} view {:#x} shard {:?} actor {} handoff {:?} applied {:?}{}",
                    self.now,
                    st.view.epoch,
                    st.shard,
                    st.actor,
                    st.handoff,
                    n.applied(),
                    mesh.concat()
                ))
            })
            .collect();
        if let Some(t) = &mut self.trace {
            t.extend(lines);
        }
    }

    /// The final view of cluster `c`: the newest view any of its running nodes holds (after heal
    /// every node must learn it by gossip).
    pub(super) fn final_view(&self, c: usize) -> View {
        self.slots
            .iter()
            .filter(|s| s.cluster == c)
            .filter_map(|s| s.node.as_ref().map(|n| n.view()))
            .max_by_key(|v| v.epoch)
            .cloned()
            .unwrap_or_else(View::joining)
    }

    /// Every cluster's final view, by cluster (one outside a mesh).
    pub(super) fn final_views(&self) -> Vec<View> {
        (0..self.configs.len())
            .map(|c| self.final_view(c))
            .collect()
    }

    /// Running nodes that have not installed their cluster's final view (`fvs`), or have not
    /// settled their handoffs (they hold partitions they no longer own, or await partitions
    /// they gained), with why.
    pub(super) fn unsettled(&self, fvs: &[View]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(node) = &slot.node else { continue };
            let fv = &fvs[slot.cluster];
            let epoch = node.view().epoch;
            if epoch != fv.epoch {
                out.push(format!(
                    "n{i} still routes by view {epoch:#x}, not the final view {:#x}",
                    fv.epoch
                ));
                continue;
            }
            let h = node.status().handoff;
            if !h.retained.is_empty() || !h.awaiting.is_empty() {
                out.push(format!(
                    "n{i} never settled: retains partitions {:?}, awaits partitions {:?}, {} handoff streams running",
                    h.retained, h.awaiting, h.pushing
                ));
            }
        }
        out
    }

    /// Every key's replicas in the final views (in a mesh: those of every cluster, which must all
    /// agree), and each one's version set (from its disk when the node is down). Copies at nodes
    /// that no longer own a key are not final states.
    pub(super) fn replica_states(&self, fvs: &[View], key: &Bytes) -> Vec<(usize, VersionSet)> {
        fvs.iter()
            .flat_map(|fv| fv.owners(fv.partition_of(key)))
            .filter_map(|id| self.index.get(id))
            .map(|&n| {
                let slot = &self.slots[n];
                let set = match (&slot.node, &slot.disk) {
                    (Some(node), _) => node.local_state(key),
                    (None, Some(d)) => causeway::core::Storage::get(d, key),
                    (None, None) => None,
                };
                (n, set.unwrap_or_else(VersionSet::new))
            })
            .collect()
    }

    /// Whether the run may end: every running node has installed its cluster's final view and
    /// settled its handoffs, and every replica of every key (in the final views, of every
    /// cluster) holds the same versions.
    pub(super) fn converged(&self) -> bool {
        let fvs = self.final_views();
        let same_view = self.slots.iter().all(|s| {
            s.node
                .as_ref()
                .is_none_or(|n| n.view().epoch == fvs[s.cluster].epoch)
        });
        same_view
            && (0..self.scenario.workload.keys).all(|k| {
                let states = self.replica_states(&fvs, &Bytes::from(key_name(k)));
                states
                    .split_first()
                    .is_none_or(|(a, rest)| rest.iter().all(|b| b.1.versions() == a.1.versions()))
            })
            && self.unsettled(&fvs).is_empty()
    }

    /// Final states for the checkers, by the final view, and the nodes that never settled.
    pub(super) fn capture_finals(&mut self) {
        let fvs = self.final_views();
        for k in 0..self.scenario.workload.keys {
            let key = Bytes::from(key_name(k));
            let reps = self.replica_states(&fvs, &key);
            self.history.finals.insert(key, reps);
        }
        let bound = self.scenario.phases.liveness_s;
        self.history.unsettled = self
            .unsettled(&fvs)
            .into_iter()
            .map(|u| format!("{u} {bound}s after heal"))
            .collect();
    }
}
