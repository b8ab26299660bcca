//! Membership faults: joins, decommissions, forced removals and view changes, asked of a live
//! member as client requests.

use super::*;

impl<A: FnMut(u64)> World<'_, A> {
    /// The view node `v` currently routes by.
    pub(super) fn view_at(&self, v: usize) -> View {
        self.slots[v]
            .node
            .as_ref()
            .map(|x| x.view().clone())
            .unwrap_or_else(View::joining)
    }

    /// A running, unpaused member to send a membership request to: `want` if it is one, else a
    /// random one (never `except`). None (noted in the trace) when there is none.
    pub(super) fn pick_member(
        &mut self,
        want: Option<usize>,
        except: Option<usize>,
    ) -> Option<usize> {
        let ok = |w: &Self, i: usize| {
            let s = &w.slots[i];
            Some(i) != except && s.node.is_some() && !s.paused && s.member
        };
        if let Some(w) = want.filter(|&w| ok(self, w)) {
            return Some(w);
        }
        let live: Vec<usize> = (0..self.slots.len()).filter(|&i| ok(self, i)).collect();
        if live.is_empty() {
            self.note(TraceCode::Membership, |_| {
                "membership event skipped: no running member".into()
            });
            return None;
        }
        let i = self.rand(Purpose::Pick, 0) as usize % live.len();
        Some(live[i])
    }

    /// A spare that never ran starts outside the cluster and asks a member to admit it.
    pub(super) fn join(&mut self, node: usize, via: Option<usize>) {
        if self.slots[node].started {
            self.note(TraceCode::Membership, |_| {
                format!("join of n{node} skipped: it already ran")
            });
            return;
        }
        let Some(v) = self.pick_member(via, Some(node)) else {
            return;
        };
        self.note(TraceCode::Membership, |_| {
            format!("n{node} joins through n{v}")
        });
        let slot = &mut self.slots[node];
        slot.spare = true;
        slot.join = Some(node_addr(v));
        self.start(node);
    }

    /// Decommissions `node` (it keeps running and hands off), or force-removes it (it crashes
    /// for good first).
    pub(super) fn remove(&mut self, node: usize, via: Option<usize>, force: bool) {
        if force {
            self.stop(node, false);
            self.slots[node].dead = true;
            self.note(TraceCode::Membership, |_| {
                format!("n{node} is dead for good")
            });
        }
        let Some(v) = self.pick_member(via, Some(node)) else {
            return;
        };
        let gone = node_addr(node);
        let nodes = self
            .view_at(v)
            .nodes
            .into_iter()
            .filter(|x| *x != gone)
            .collect();
        self.propose(v, nodes, None);
    }

    /// Asks member `v` to install a view of `nodes` (replication factor `rf`, default unchanged).
    /// Listed nodes that never ran start outside the cluster and learn the view by gossip.
    pub(super) fn propose(&mut self, v: usize, nodes: Vec<NodeId>, rf: Option<usize>) {
        for id in &nodes {
            if let Some(&i) = self.index.get(id)
                && !self.slots[i].started
            {
                self.slots[i].spare = true;
                self.start(i);
            }
        }
        self.stats.view_changes += 1;
        let id = ADMIN_BASE + self.stats.view_changes;
        self.note(TraceCode::Membership, |_| {
            format!("n{v} is asked for view {nodes:?} rf {rf:?}")
        });
        self.admin.insert(id, v);
        let op = Op::ChangeView {
            nodes,
            repl_factor: rf,
        };
        self.feed(v, Input::Client(Request { id, op }));
    }

    pub(super) fn admin_reply(
        &mut self,
        id: u64,
        result: Result<Response, causeway::core::ReqError>,
    ) {
        let Some(v) = self.admin.remove(&id) else {
            return;
        };
        match result {
            Ok(Response::ViewChanged { view }) => self.note(TraceCode::Membership, |_| {
                format!("n{v} installed view {:#x}: {:?}", view.epoch, view.nodes)
            }),
            other => {
                self.stats.view_errors += 1;
                self.note(TraceCode::Membership, |_| {
                    format!("n{v} refused the view change: {other:?}")
                });
            }
        }
    }
}
