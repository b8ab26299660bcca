//! Deterministic simulation of Causeway nodes (see SPEC §4).
