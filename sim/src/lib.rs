//! Deterministic simulation of Causeway nodes (docs/): the real core (`causeway::core`) under
//! a simulated network, disks and clocks, driven by scenario plans and judged by the harness
//! checkers.
//!
//! Design: one madsim runtime per seed runs a single task, [`world::World`], a discrete-event
//! loop that owns every core node and routes their messages itself (delay, reordering, loss,
//! duplication, one-way and symmetric partitions), applies crashes, wipes, pauses and clock skew,
//! and plays the client sessions. Every random decision is a draw from a stream keyed by the seed, its
//! purpose and its entity (`causeway_harness::draws`); madsim supplies the clock (advanced to
//! each event's time). Nodes are deliberately not madsim
//! nodes with `Endpoint`s and per-peer tasks: the core is sans-IO, so a task per node would only
//! add a simulated millisecond per `send_to` and an executor hop per message, while the event
//! loop is as deterministic and several times faster (a 30-simulated-second 5-node seed
//! in about 25 ms). Messages are passed as values; the wire format is the production driver's
//! concern and is tested there.
//!
//! - [`disk`]: the prefix-durable simulated disk (unsynced writes lost or torn on crash).
//! - [`world`]: the event loop and the write registry the checkers need.
//! - [`run`]: one seed end to end and scenario loading; [`shrink`]: reducing a failing seed; `src/bin/sweep.rs` is the
//!   command line behind `ci/sweep`.

pub mod disk;
pub mod run;
pub mod shrink;
pub mod world;
