//! Batched restores ([`Op::MergeBatch`]): many keys of one shard joined in one request.
//!
//! Each set is joined exactly as a lone [`Op::Merge`] joins it (`absorb`, the anti-entropy
//! merge: never re-stamped, versions this replica superseded or reaped stay gone), so a batch
//! leaves every key as the same merges one by one would. The changes are staged in the same
//! turn, so they reach storage as one batch; the merged sets are repaired to each other replica
//! of the shard in [`PeerMsg::RepairBatch`]es of at most [`REPAIR_BATCH_BYTES`] (anti-entropy
//! backs up a repair that is lost), and the request is answered once.

use super::*;

/// Most version-set bytes (keys and values) one [`PeerMsg::RepairBatch`] carries; a set
/// larger than this goes alone.
pub const REPAIR_BATCH_BYTES: usize = 16 << 20;

/// The bytes a set adds to a repair batch (its key and values; contexts are small).
fn weight(key: &[u8], set: &VersionSet) -> usize {
    let values: usize = set
        .versions()
        .iter()
        .map(|v| v.value.as_ref().map_or(0, |b| b.len()) + 64)
        .sum();
    key.len() + values
}

impl<S: Storage> Node<S> {
    /// Checks a batch before it runs: not empty, at most [`MAX_MERGE_BATCH`] sets, every set
    /// well formed, and every key in one shard of this node's view. A batch that spans shards
    /// was split by a driver whose view is older than this node's (503: send it again).
    pub(super) fn check_merge_batch(&self, sets: &[(Bytes, VersionSet)]) -> Result<(), ReqError> {
        if sets.is_empty() || sets.len() > MAX_MERGE_BATCH {
            let why = format!("a merge batch holds 1 to {MAX_MERGE_BATCH} sets");
            return Err(ReqError::BadRequest(why));
        }
        let limits = self.peer_limits();
        for (key, set) in sets {
            if key.is_empty() || key.len() > self.cfg.max_key_bytes {
                let why = format!("keys must be 1 to {} bytes", self.cfg.max_key_bytes);
                return Err(ReqError::BadRequest(why));
            }
            if let Err(e) = super::super::validate::validate_set(set, &limits) {
                return Err(ReqError::BadRequest(format!("malformed version set: {e}")));
            }
        }
        let shard = self.cfg.view.shard_of_key(&sets[0].0);
        if sets
            .iter()
            .any(|(k, _)| self.cfg.view.shard_of_key(k) != shard)
        {
            let why = "the batch's keys belong to more than one shard (the view changed?); \
                       send them again";
            return Err(ReqError::Unavailable(why.into()));
        }
        Ok(())
    }

    /// Joins every set into its key here and repairs the changed keys to the shard's other
    /// replicas; answers once, with how many keys changed.
    pub(super) fn merge_batch(&mut self, origin: Origin, sets: Vec<(Bytes, VersionSet)>) {
        if self.storage_full {
            let why = "the replica's storage is full; the version sets were not merged";
            return self.finish(origin, Err(ReqError::InsufficientStorage(why.into())));
        }
        if sets.iter().any(|(k, _)| !self.owns(k)) {
            let why = "some of the batch's keys are not this replica's (the view changed?); \
                       send them again";
            return self.finish(origin, Err(ReqError::Unavailable(why.into())));
        }
        let mut merged = Vec::new();
        for (key, set) in &sets {
            if self.absorb(key, set, None)
                && let Some(now) = self.storage.get(key)
            {
                merged.push((key.clone(), now));
            }
        }
        let changed = merged.len() as u64;
        let peers = self.peers();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (key, set) in merged {
            bytes += weight(&key, &set);
            chunk.push((key, set));
            if bytes >= REPAIR_BATCH_BYTES {
                self.send_repairs(&peers, std::mem::take(&mut chunk));
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            self.send_repairs(&peers, chunk);
        }
        self.finish(origin, Ok(Response::MergedBatch { changed }));
    }

    fn send_repairs(&mut self, peers: &[NodeId], sets: Vec<(Bytes, VersionSet)>) {
        for peer in peers {
            let sets = sets.clone();
            self.send(peer, PeerMsg::RepairBatch { sets });
        }
    }

    /// A peer's [`PeerMsg::RepairBatch`]: joins the sets of the keys this node owns.
    pub(super) fn on_repair_batch(&mut self, sets: Vec<(Bytes, VersionSet)>) {
        for (key, set) in &sets {
            if self.owns(key) {
                self.absorb(key, set, None);
            }
        }
    }
}
