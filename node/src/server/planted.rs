//! Known bugs a test can plant in a real node, to prove the checkers of real-cluster histories
//! catch them (tests/tests/checked.rs). Off unless `CAUSEWAY_TEST_PLANTED_BUG` names one; never
//! set it in a deployment.

use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable naming the planted bug.
pub const ENV: &str = "CAUSEWAY_TEST_PLANTED_BUG";

/// A bug a test can plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Write replies carry the request's context instead of one naming the write.
    StaleWriteContext,
    /// Under `--sync always` the driver releases a turn's acknowledgements (replies and
    /// replication acks) without writing its storage batch, and keeps every write staged in
    /// memory for [`HOLD`] before handing it to storage: a `kill -9` of the replicas within that
    /// window loses acknowledged writes.
    AckBeforeDurable,
}

/// How long [`Bug::AckBeforeDurable`] keeps acknowledged writes in memory only.
pub const HOLD: Duration = Duration::from_secs(2);

/// Whether `bug` is planted in this process (the variable is read once).
pub fn on(bug: Bug) -> bool {
    static PLANTED: OnceLock<Option<Bug>> = OnceLock::new();
    *PLANTED.get_or_init(|| match std::env::var(ENV).as_deref() {
        Ok("stale-write-context") => Some(Bug::StaleWriteContext),
        Ok("ack-before-durable") => Some(Bug::AckBeforeDurable),
        _ => None,
    }) == Some(bug)
}
