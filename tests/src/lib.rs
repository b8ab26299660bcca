//! End-to-end tests of the `causeway` binary live in `tests/`.
