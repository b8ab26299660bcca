//! The node's side of anti-entropy and tombstone reaping; see [`crate::core::aae`] for the
//! protocol and why adopting a peer's clock after a complete exchange is sound.

use super::*;
use crate::core::merkle::PartitionTree;

impl<S: Storage> Node<S> {
    /// Partitions this node's shard owns.
    pub(super) fn shard_partitions(&self) -> Vec<u32> {
        self.shard
            .map_or_else(Vec::new, |s| self.cfg.view.partitions_of(s))
    }

    fn aae_enabled(&self) -> bool {
        !matches!(
            self.cfg.canary,
            Some(Canary::NoReplicationRetry | Canary::NoAntiEntropy)
        )
    }

    /// `POST /v1/admin/aae/pull`: run one exchange with `peer` now, answering when it ends.
    pub(super) fn request_exchange(&mut self, id: ReqId, peer: NodeId) {
        match &mut self.aae {
            Some(ex) if ex.peer == peer && ex.requested_by.is_none() => ex.requested_by = Some(id),
            Some(ex) => {
                let msg = format!("an exchange with {} is already running", ex.peer);
                self.finish(Origin::Client(id), Err(ReqError::Unavailable(msg)));
            }
            None => self.start_exchange(peer, Some(id)),
        }
    }

    /// Starts a scheduled exchange when one is due, and abandons one that ran out of time.
    pub(super) fn anti_entropy_tick(&mut self) {
        if self.aae.as_ref().is_some_and(|ex| ex.deadline <= self.now) {
            let ex = self.aae.take().expect("checked above");
            self.aae_stats.exchanges_failed += 1;
            if let Some(id) = ex.requested_by {
                let msg = format!("anti-entropy exchange with {} timed out", ex.peer);
                self.finish(Origin::Client(id), Err(ReqError::Unavailable(msg)));
            }
        }
        if self.now < self.next_aae || !self.aae_enabled() {
            return;
        }
        let interval = self.cfg.aae_interval.as_micros() as u64;
        let jitter = self.rng.random_range(0..=interval / 2);
        self.next_aae = self.now + std::time::Duration::from_micros(interval * 3 / 4 + jitter);
        let peers = self.peers();
        if self.aae.is_none() && !peers.is_empty() {
            let peer = peers[self.aae_turn % peers.len()].clone();
            self.aae_turn += 1;
            self.start_exchange(peer, None);
        }
    }

    fn start_exchange(&mut self, peer: NodeId, requested_by: Option<ReqId>) {
        let rid = self.rid();
        let roots = self
            .shard_partitions()
            .into_iter()
            .map(|p| (p, self.merkle.root(p)))
            .collect();
        let claims = self.claims();
        let msg = PeerMsg::AaeRoots {
            rid,
            epoch: self.cfg.view.epoch,
            roots,
            clock: claims.clone(),
        };
        self.aae = Some(Exchange {
            rid,
            peer: peer.clone(),
            deadline: self.now + self.cfg.aae_timeout,
            clock: claims,
            peer_clock: None,
            partitions: Vec::new(),
            truncated: false,
            bytes: encoded_len(&msg),
            keys_repaired: 0,
            requested_by,
        });
        self.send(&peer, msg);
    }

    /// The branches of `partition` whose hashes differ from `theirs` (a peer's branch hashes of
    /// it; missing ones count as differing). Shared by anti-entropy and the mesh's full sync.
    pub(super) fn differing_branches(&self, partition: u32, theirs: &[u64]) -> Vec<u8> {
        let empty = PartitionTree::default();
        let mine = self.merkle.get(partition).unwrap_or(&empty);
        (0..BRANCHES)
            .filter(|b| theirs.get(*b) != Some(&mine.branches()[*b]))
            .map(|b| b as u8)
            .collect()
    }

    /// The stored digests of one segment's keys (a range read of the index), in key order. A
    /// segment number out of range (from a peer) names no key.
    /// Adds to `chosen` and `keys` the segments of `partition`'s branch `branch` whose hashes
    /// differ from `theirs`, with their key digests, while the exchange stays within
    /// `aae_max_keys` keys (its first segment always goes). Returns whether a differing segment
    /// was left out. Shared by anti-entropy and the mesh's full sync.
    pub(super) fn choose_differing(
        &self,
        partition: u32,
        branch: u8,
        theirs: &[u64],
        chosen: &mut Vec<(u32, u16)>,
        keys: &mut Vec<(Bytes, u64)>,
    ) -> bool {
        let empty = PartitionTree::default();
        let tree = self.merkle.get(partition).unwrap_or(&empty);
        let mine = tree.branch_segments(usize::from(branch));
        let mut truncated = false;
        for (i, h) in theirs.iter().enumerate().take(SEGMENTS_PER_BRANCH) {
            if mine.get(i) == Some(h) {
                continue;
            }
            let seg = (usize::from(branch) * SEGMENTS_PER_BRANCH + i) as u16;
            let len = tree.segment(seg).keys as usize;
            if !chosen.is_empty() && keys.len() + len > self.cfg.aae_max_keys {
                truncated = true;
                continue;
            }
            chosen.push((partition, seg));
            keys.extend(self.segment_digests(partition, seg));
        }
        truncated
    }

    fn segment_digests(&self, partition: u32, segment: u16) -> Vec<(Bytes, u64)> {
        if usize::from(segment) >= crate::core::merkle::SEGMENTS {
            return Vec::new();
        }
        self.storage
            .index_range(partition, segment..=segment, None, usize::MAX)
            .into_iter()
            .map(|(_, k, d)| (k, d))
            .collect()
    }

    /// Sends `msg` as part of the running exchange, counting its bytes.
    fn send_aae(&mut self, msg: PeerMsg) {
        if let Some(ex) = &mut self.aae {
            ex.bytes += encoded_len(&msg);
            let peer = ex.peer.clone();
            self.send(&peer, msg);
        }
    }

    /// Merges version sets from an exchange; returns how many keys changed here.
    fn absorb_all(&mut self, from: &NodeId, sets: &[(Bytes, VersionSet)]) -> u64 {
        let mut repaired = 0;
        for (key, set) in sets {
            if self.owns(key) && self.absorb(key, set, Some(from)) {
                repaired += 1;
                let p = self.cfg.view.partition_of(key);
                self.aae_stats
                    .partitions
                    .entry(p)
                    .or_default()
                    .keys_repaired += 1;
            }
        }
        self.aae_stats.keys_repaired += repaired;
        self.probes.add(Probe::AaeRepaired, repaired);
        repaired
    }

    /// Whether `rid` from `from` belongs to the running exchange; counts the message's bytes.
    fn exchange_matches(&mut self, from: &NodeId, rid: Rid, msg: &PeerMsg) -> bool {
        match &mut self.aae {
            Some(ex) if ex.rid == rid && ex.peer == *from => {
                ex.bytes += encoded_len(msg);
                true
            }
            _ => false,
        }
    }

    pub(super) fn on_aae(&mut self, from: NodeId, msg: PeerMsg) {
        let shard_peer = self.peers().contains(&from);
        match msg {
            // Responder side: stateless, answered from current trees and storage.
            PeerMsg::AaeRoots {
                rid,
                epoch,
                roots,
                clock,
            } if shard_peer && epoch == self.cfg.view.epoch => {
                let branches: Vec<(u32, Vec<u64>)> = roots
                    .iter()
                    .filter(|(p, r)| self.merkle.root(*p) != *r)
                    .map(|(p, _)| {
                        let b = self.merkle.get(*p).map(|t| t.branches().to_vec());
                        (*p, b.unwrap_or_else(|| vec![0; BRANCHES]))
                    })
                    .collect();
                let in_sync = branches.is_empty();
                let reply = PeerMsg::AaeBranches {
                    rid,
                    clock: self.claims(),
                    branches,
                };
                self.send(&from, reply);
                if in_sync {
                    self.adopt(&clock);
                }
            }
            PeerMsg::AaeSegmentsReq { rid, want } if shard_peer => {
                let mut segments = Vec::new();
                let empty = PartitionTree::default();
                for (p, branches) in want {
                    let tree = self.merkle.get(p).unwrap_or(&empty);
                    for b in branches.into_iter().filter(|b| usize::from(*b) < BRANCHES) {
                        segments.push((p, b, tree.branch_segments(usize::from(b)).to_vec()));
                    }
                }
                self.send(&from, PeerMsg::AaeSegments { rid, segments });
            }
            PeerMsg::AaeKeys {
                rid,
                segments,
                keys,
            } if shard_peer => {
                let theirs: BTreeMap<Bytes, u64> = keys.into_iter().collect();
                let mut mine: BTreeMap<Bytes, u64> = BTreeMap::new();
                for (p, seg) in segments {
                    mine.extend(self.segment_digests(p, seg));
                }
                let mut sets = Vec::new();
                let mut truncated = false;
                let mut bytes = 0;
                for (k, d) in &mine {
                    if theirs.get(k) != Some(d) {
                        // The peer's replication budget bounds one exchange's values too.
                        if sets.len() >= self.cfg.aae_max_keys
                            || bytes >= self.cfg.peer_buffer_bytes
                        {
                            truncated = true;
                            break;
                        }
                        if let Some(s) = self.storage.get(k) {
                            bytes += outbox::copy_bytes(k, &s);
                            sets.push((k.clone(), s));
                        }
                    }
                }
                let want = theirs
                    .into_iter()
                    .filter(|(k, d)| mine.get(k) != Some(d))
                    .map(|(k, _)| k)
                    .collect();
                let reply = PeerMsg::AaeDiff {
                    rid,
                    sets,
                    want,
                    truncated,
                };
                self.send(&from, reply);
            }
            PeerMsg::AaeFinish { sets, clock, .. } if shard_peer => {
                self.absorb_all(&from, &sets);
                if let Some(c) = clock {
                    self.adopt(&c);
                }
            }
            // Initiator side.
            ref m @ PeerMsg::AaeBranches { rid, .. } if self.exchange_matches(&from, rid, m) => {
                let PeerMsg::AaeBranches {
                    rid,
                    clock,
                    branches,
                } = msg
                else {
                    unreachable!("matched above")
                };
                self.on_branches(rid, clock, branches);
            }
            ref m @ PeerMsg::AaeSegments { rid, .. } if self.exchange_matches(&from, rid, m) => {
                let PeerMsg::AaeSegments { rid, segments } = msg else {
                    unreachable!("matched above")
                };
                self.on_segments(rid, segments);
            }
            ref m @ PeerMsg::AaeDiff { rid, .. } if self.exchange_matches(&from, rid, m) => {
                let PeerMsg::AaeDiff {
                    rid,
                    sets,
                    want,
                    truncated,
                } = msg
                else {
                    unreachable!("matched above")
                };
                let repaired = self.absorb_all(&from, &sets);
                let mut mine: Vec<(Bytes, VersionSet)> = Vec::new();
                let mut bytes = 0;
                let mut held_back = false;
                for k in want {
                    if bytes >= self.cfg.peer_buffer_bytes {
                        held_back = true;
                        break;
                    }
                    if let Some(s) = self.storage.get(&k) {
                        bytes += outbox::copy_bytes(&k, &s);
                        mine.push((k, s));
                    }
                }
                let ex = self.aae.as_mut().expect("matched above");
                ex.truncated |= truncated || held_back;
                ex.keys_repaired += repaired + mine.len() as u64;
                let complete = !ex.truncated;
                let clock = complete.then(|| ex.clock.clone());
                self.send_aae(PeerMsg::AaeFinish {
                    rid,
                    sets: mine,
                    clock,
                });
                self.finish_exchange(complete);
            }
            _ => {}
        }
    }

    fn on_branches(&mut self, rid: Rid, clock: Claims, branches: Vec<(u32, Vec<u64>)>) {
        let ex = self.aae.as_mut().expect("caller matched the exchange");
        ex.peer_clock = Some(clock);
        ex.partitions = branches.iter().map(|(p, _)| *p).collect();
        let mut want = Vec::new();
        for (p, theirs) in branches {
            let differing = self.differing_branches(p, &theirs);
            if !differing.is_empty() {
                want.push((p, differing));
            }
        }
        if want.is_empty() {
            self.finish_exchange(true);
        } else {
            self.send_aae(PeerMsg::AaeSegmentsReq { rid, want });
        }
    }

    fn on_segments(&mut self, rid: Rid, segments: Vec<(u32, u8, Vec<u64>)>) {
        let mut chosen = Vec::new();
        let mut keys = Vec::new();
        let mut truncated = false;
        for (p, b, theirs) in segments {
            truncated |= self.choose_differing(p, b, &theirs, &mut chosen, &mut keys);
        }
        let ex = self.aae.as_mut().expect("caller matched the exchange");
        ex.truncated |= truncated;
        if chosen.is_empty() {
            return self.finish_exchange(!truncated);
        }
        self.send_aae(PeerMsg::AaeKeys {
            rid,
            segments: chosen,
            keys,
        });
    }

    /// Ends the running exchange; a complete one adopts the peer's clock snapshot.
    fn finish_exchange(&mut self, complete: bool) {
        let Some(ex) = self.aae.take() else {
            return;
        };
        if complete && let Some(c) = &ex.peer_clock {
            self.adopt(c);
        }
        let stats = &mut self.aae_stats;
        stats.exchanges += 1;
        stats.exchanges_in_sync += u64::from(ex.partitions.is_empty());
        stats.bytes += ex.bytes;
        for p in self.shard_partitions() {
            self.aae_stats
                .partitions
                .entry(p)
                .or_default()
                .last_exchange_us = self.wall.as_micros();
        }
        if let Some(id) = ex.requested_by {
            let resp = Response::AntiEntropy {
                peer: ex.peer,
                keys_repaired: ex.keys_repaired,
                bytes: ex.bytes,
                complete,
            };
            self.finish(Origin::Client(id), Ok(resp));
        }
    }

    /// Reaps tombstones whose grace period ended, if the key still holds only that tombstone.
    pub(super) fn reap_due(&mut self) {
        let due: Vec<Dot> = self
            .reaps
            .iter()
            .filter(|(_, (_, t))| *t <= self.now)
            .map(|(d, _)| *d)
            .collect();
        for dot in due {
            let (key, _) = self.reaps.remove(&dot).expect("listed above");
            if self.mesh_keeps_tombstones() {
                // In a mesh the tombstone stays: another cluster may still lack it (G6).
                continue;
            }
            let only_this = self.storage.get(&key).is_some_and(|s| {
                s.versions().len() == 1 && s.versions()[0].dot == dot && s.is_deleted()
            });
            if only_this {
                self.remove_key(&key);
                self.aae_stats.tombstones_reaped += 1;
                self.probes.hit(Probe::TombstoneReaped);
                for peer in self.peers() {
                    let msg = PeerMsg::Reap {
                        key: key.clone(),
                        dots: vec![dot],
                    };
                    self.send(&peer, msg);
                }
            }
        }
    }
}
