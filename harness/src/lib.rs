//! Scenario model, workloads, histories and checkers.
