//! Scenario model, seeded workload and fault plans, history recording and the consistency
//! checkers of G1–G7, plus delta-debugging. Pure Rust: the simulator and real-cluster tests
//! both use it.

pub mod check;
pub mod draws;
pub mod generate;
pub mod history;
pub mod linearizable;
pub mod merge;
pub mod plan;
pub mod real;
pub mod scenario;
pub mod shrink;

pub use check::{Violation, check};
pub use generate::generate;
pub use history::{History, OpRecord, Outcome, WriteRecord};
pub use plan::{Fault, OpKind, Plan, PlannedOp, SessionPlan, TimedFault};
pub use scenario::{Checker, Scenario};
