//! Handoff: moving a partition to its new replicas after a view change.
//!
//! A node that holds a partition it no longer owns (it is *retained*) streams it to every replica
//! of the partition in its current view; a node that keeps a partition streams it to the replicas
//! that gained it in the current view (a replication-factor increase, a reshuffled shard). Streams
//! go one bounded batch at a time, stop-and-wait, each batch read from the stored index with a
//! range scan after the previous batch's last key (a stream holds a cursor, never the
//! partition's key list, so memory does not grow with the partition). The first
//! batch carries the sender's claims on the partition ([`Node::vouched`]), taken before any key
//! is read: the keys sent afterwards reflect at least those writes. The receiver merges each
//! batch like replication, syncs, and acknowledges; after the last batch it joins the claims into
//! the partition's handoff clock, which from then on vouches for the earlier owners' writes in
//! causal waits.
//!
//! Invariants:
//! - a retained partition is dropped only when every replica in the current view acknowledged
//!   the whole stream (hence holds it durably) and no replication of its keys is still pending;
//! - a stream that loses its place (either side restarted, the receiver's view differs) starts
//!   over from its first batch with fresh claims; merging is idempotent, so repeats are harmless;
//! - a view change restarts every stream, so streams always target the current replicas.

use super::*;

/// One stream of a retained partition to one new replica.
#[derive(Debug)]
pub(crate) struct Push {
    stream: u64,
    /// Next batch to send, or the one in flight.
    seq: u32,
    /// Batch `seq` starts after this index position (segment, key); `None`: at the start.
    pos: Option<(u16, Bytes)>,
    /// The index position of batch `seq`'s last key, once it was sent.
    end: Option<(u16, Bytes)>,
    /// Batch `seq`, once sent, reached the end of the partition.
    last: bool,
    clock: PartitionClock,
    /// When the batch in flight was sent.
    sent: Option<Time>,
    /// Do not send before this (after a refusal).
    not_before: Time,
    pub(crate) done: bool,
}

/// The highest segment number of a partition's index.
const LAST_SEGMENT: u16 = (merkle::SEGMENTS - 1) as u16;

/// Most bytes of version sets one handoff batch carries (at least one key goes in every batch):
/// far below the peer frame limit, so a partition of large values moves in many small batches.
const HANDOFF_BATCH_BYTES: u64 = 16 << 20;

/// A stream this node is receiving.
#[derive(Debug)]
pub(crate) struct Incoming {
    stream: u64,
    next: u32,
    clock: PartitionClock,
}

impl<S: Storage> Node<S> {
    /// Starts, continues or retries streams of retained partitions, and drops partitions every
    /// replica now holds.
    pub(super) fn handoff_tick(&mut self) {
        let feeds: Vec<(u32, NodeId)> = self
            .feeds
            .iter()
            .flat_map(|(p, ts)| ts.iter().map(|t| (*p, t.clone())))
            .collect();
        for (p, t) in feeds {
            self.push_step(p, &t);
            if self.pushes.get(&(p, t.clone())).is_some_and(|x| x.done) {
                self.pushes.remove(&(p, t.clone()));
                if let Some((since, _)) = self.history.window(&t, p) {
                    self.fed.insert((p, t.clone()), since);
                }
                let targets = self.feeds.get_mut(&p).expect("listed above");
                targets.remove(&t);
                if targets.is_empty() {
                    self.feeds.remove(&p);
                }
            }
        }
        let retained: Vec<u32> = self.retained.iter().copied().collect();
        for p in retained {
            let targets: Vec<NodeId> = self
                .cfg
                .view
                .owners(p)
                .iter()
                .filter(|n| **n != self.me)
                .cloned()
                .collect();
            for t in &targets {
                self.push_step(p, t);
            }
            let all_done = !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| self.pushes.get(&(p, t.clone())).is_some_and(|x| x.done));
            if all_done {
                self.drop_partition(p);
            }
        }
    }

    /// Sends the next batch of `partition` to `target` if none is in flight, or resends the one
    /// in flight when its acknowledgement is overdue.
    fn push_step(&mut self, partition: u32, target: &NodeId) {
        let key = (partition, target.clone());
        if !self.pushes.contains_key(&key) {
            let push = self.start_push(partition);
            self.pushes.insert(key.clone(), push);
        }
        let push = self.pushes.get(&key).expect("inserted above");
        let overdue = push
            .sent
            .is_some_and(|t| self.now >= t + self.cfg.retry_interval * 3);
        let idle = push.sent.is_none() && self.now >= push.not_before;
        if !push.done && (overdue || idle) {
            self.send_batch(partition, target);
        }
    }

    fn start_push(&mut self, partition: u32) -> Push {
        // Claims first, keys second: every write claimed is in the state read afterwards.
        let clock = self.partition_clock(partition);
        Push {
            stream: self.rid(),
            seq: 0,
            pos: None,
            end: None,
            last: false,
            clock,
            sent: None,
            not_before: self.now,
            done: false,
        }
    }

    /// Sends batch `seq` of the stream: the keys after `pos` in index order, at most
    /// `handoff_batch` of them and (after the first) no more than [`HANDOFF_BATCH_BYTES`] of
    /// version sets, or the peer's replication budget if that is smaller.
    fn send_batch(&mut self, partition: u32, target: &NodeId) {
        let batch = self.cfg.handoff_batch.max(1);
        let cap = HANDOFF_BATCH_BYTES.min(self.cfg.peer_buffer_bytes.max(1));
        let push = self
            .pushes
            .get(&(partition, target.clone()))
            .expect("caller made the stream");
        let after = push.pos.as_ref().map(|(s, k)| (*s, &k[..]));
        // One entry more than a batch takes tells whether the batch is the last.
        let page = self
            .storage
            .index_range(partition, 0..=LAST_SEGMENT, after, batch + 1);
        let mut sets = Vec::new();
        let (mut end, mut bytes, mut taken) = (None, 0u64, 0);
        for (segment, key, _) in page.iter().take(batch) {
            if let Some(set) = self.storage.get(key) {
                let size = outbox::copy_bytes(key, &set);
                if taken > 0 && bytes + size > cap {
                    break;
                }
                bytes += size;
                sets.push((key.clone(), set));
            }
            taken += 1;
            end = Some((*segment, key.clone()));
        }
        let push = self
            .pushes
            .get_mut(&(partition, target.clone()))
            .expect("caller made the stream");
        let last = taken == page.len();
        push.end = if taken == 0 { push.pos.clone() } else { end };
        push.last = last;
        let clock = (push.seq == 0).then(|| push.clock.clone());
        let (stream, seq) = (push.stream, push.seq);
        push.sent = Some(self.now);
        if last && self.cfg.canary == Some(Canary::DropBeforeSynced) {
            push.done = true;
        }
        self.handoff_keys.0 += sets.len() as u64;
        self.probes.hit(Probe::HandoffSent);
        let msg = PeerMsg::HandoffBatch {
            partition,
            epoch: self.cfg.view.epoch,
            stream,
            seq,
            clock,
            sets,
            last,
        };
        self.send(target, msg);
    }

    pub(super) fn on_handoff(&mut self, from: NodeId, msg: PeerMsg) {
        match msg {
            PeerMsg::HandoffBatch {
                partition,
                epoch,
                stream,
                seq,
                clock,
                sets,
                last,
            } => {
                if epoch < self.cfg.view.epoch {
                    self.send_views(&from, epoch);
                }
                let ok = self.receive_batch(&from, partition, stream, seq, clock, sets, last);
                let ack = PeerMsg::HandoffAck {
                    partition,
                    stream,
                    seq,
                    ok,
                };
                self.send(&from, ack);
            }
            PeerMsg::HandoffAck {
                partition,
                stream,
                seq,
                ok,
            } => self.on_handoff_ack(from, partition, stream, seq, ok),
            _ => unreachable!("only handoff messages are routed here"),
        }
    }

    /// Applies one batch; false when this node cannot take it and the sender must start over.
    #[allow(clippy::too_many_arguments)]
    fn receive_batch(
        &mut self,
        from: &NodeId,
        partition: u32,
        stream: u64,
        seq: u32,
        clock: Option<PartitionClock>,
        sets: Vec<(Bytes, VersionSet)>,
        last: bool,
    ) -> bool {
        if !self.cfg.view.owns(&self.me, partition) {
            return false;
        }
        let key = (from.clone(), partition);
        let fresh = self.incoming.get(&key).is_none_or(|i| i.stream != stream);
        if seq == 0 && fresh {
            let clock = clock.unwrap_or_default();
            self.incoming.insert(
                key.clone(),
                Incoming {
                    stream,
                    next: 0,
                    clock,
                },
            );
        }
        let Some(inc) = self.incoming.get_mut(&key).filter(|i| i.stream == stream) else {
            return false;
        };
        if seq < inc.next {
            return true;
        }
        if seq > inc.next {
            return false;
        }
        inc.next += 1;
        self.handoff_keys.1 += sets.len() as u64;
        self.probes.hit(Probe::HandoffReceived);
        for (k, s) in &sets {
            if self.cfg.view.partition_of(k) == partition {
                self.absorb(k, s, None);
            }
        }
        self.needs_sync = true;
        if last {
            let inc = self.incoming.remove(&key).expect("matched above");
            self.handoff.entry(partition).or_default().merge(&inc.clock);
            self.awaiting.remove(&partition);
            self.persist_membership();
            self.wake_parked();
        }
        true
    }

    fn on_handoff_ack(&mut self, from: NodeId, partition: u32, stream: u64, seq: u32, ok: bool) {
        let Some(push) = self.pushes.get_mut(&(partition, from.clone())) else {
            return;
        };
        if push.stream != stream || push.seq != seq || push.sent.is_none() {
            return;
        }
        push.sent = None;
        if !ok {
            let mut push = self.start_push(partition);
            push.not_before = self.now + self.cfg.retry_interval;
            self.pushes.insert((partition, from.clone()), push);
            return;
        }
        if push.last {
            push.done = true;
        } else {
            push.pos = push.end.take();
            push.seq += 1;
            self.send_batch(partition, &from);
        }
    }

    /// Deletes a retained partition every replica holds, unless replication of one of its keys
    /// is still pending (its retries read the key's current state).
    fn drop_partition(&mut self, partition: u32) {
        let view = &self.cfg.view;
        if self.outbox.any_key(|k| view.partition_of(k) == partition) {
            return;
        }
        self.erase_keys(partition);
        self.live.remove(&partition);
        self.handoff.remove(&partition);
        self.floors.remove(&partition);
        self.retained.remove(&partition);
        let drops = self.dropped.get(&partition).map_or(0, |d| d.1);
        self.dropped
            .insert(partition, (self.cfg.view.epoch, drops + 1));
        self.pushes.retain(|(p, _), _| *p != partition);
        self.persist_membership();
        self.needs_sync = true;
    }
}
