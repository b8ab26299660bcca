//! The simulated network: delivery with random delay, loss, duplication and clogged links; a
//! paused node holds what reaches it.

use super::*;

impl<A: FnMut(u64)> World<'_, A> {
    /// The one-way delay range of the link `from → to`, µs: `net.delay_us` inside a cluster,
    /// the clusters' WAN latency plus up to `mesh.wan_jitter_ms` between clusters.
    fn delay_range(&self, from: usize, to: usize) -> [u64; 2] {
        let (a, b) = (self.slots[from].cluster, self.slots[to].cluster);
        match self.wan_us.get(&(a.min(b), a.max(b))) {
            Some(&base) if a != b => [base, base + self.scenario.mesh.wan_jitter_ms * 1000],
            _ => self.scenario.net.delay_us,
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, msg: PeerMsg) {
        let slot = &self.slots[to];
        if slot.node.is_none() {
            self.stats.dropped += 1;
            return;
        }
        if self.cut.contains(&from) {
            self.stats.dropped += 1;
            self.dropped(from, to);
            self.note(TraceCode::Drop, |_| {
                format!("drop n{from}->n{to} {} (sender cut)", msg.kind())
            });
            return;
        }
        self.note(TraceCode::Deliver, |_| {
            format!("deliver n{from}->n{to} {:?}", msg)
        });
        let input = Input::Peer {
            from: self.slots[from].id.clone(),
            msg,
        };
        if self.slots[to].paused {
            self.slots[to].held.push(input);
        } else {
            if self.follow_repairs
                && let Input::Peer { msg, .. } = &input
            {
                self.repair_answer(from, to, msg);
            }
            self.feed(to, input);
            self.answering = None;
        }
    }

    /// A message from `from` to `to` was lost: the availability and read-repair checks learn
    /// that the link failed.
    fn dropped(&mut self, from: usize, to: usize) {
        if !self.watches.is_empty() {
            self.watch_dropped(from, to);
        }
        if self.follow_repairs {
            self.last_drop.insert((from, to), self.now);
        }
    }

    pub(super) fn send(&mut self, from: usize, to: usize, msg: PeerMsg) {
        self.stats.messages += 1;
        let l = message_stream(from, to, &msg);
        if self.clogged.contains(&(from, to)) || self.chance(Purpose::Loss, l, self.loss) {
            self.stats.dropped += 1;
            self.dropped(from, to);
            self.note(TraceCode::Drop, |_| {
                format!("drop n{from}->n{to} {}", msg.kind())
            });
            return;
        }
        let [lo, hi] = self.delay_range(from, to);
        if self.chance(Purpose::Dup, l, self.dup) {
            let d = self.range(Purpose::Dup, l, lo, hi);
            self.schedule(
                self.now + d,
                Event::Deliver {
                    from,
                    to,
                    msg: Box::new(msg.clone()),
                },
            );
        }
        let d = self.range(Purpose::Delay, l, lo, hi);
        self.schedule(
            self.now + d,
            Event::Deliver {
                from,
                to,
                msg: Box::new(msg),
            },
        );
    }
}
