//! Deterministic simulation of Causeway nodes (SPEC §4): the real core under a simulated
//! network, disks and clocks, driven by scenario plans, judged by the harness checkers.

pub mod disk;
pub mod run;
pub mod world;
