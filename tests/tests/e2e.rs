//! The end-to-end tests of the `causeway` binary, one module per feature, linked into one test
//! binary (as 28 binaries, each linking the whole stack, they cost about two minutes of CPU more
//! to build). Run one feature's tests with `cargo test --release --workspace --test e2e -- NAME::`.

mod admin;
mod backup;
mod batch;
mod bulk_load;
mod checked;
mod cli;
mod client;
mod cluster;
mod deletes;
mod faults;
mod full_disk;
mod grpc;
mod hostile;
mod http_limits;
mod input;
mod listing;
mod membership;
mod mesh;
mod metrics;
mod overload;
mod packaging;
mod partition;
mod readiness;
mod security;
mod siblings;
mod strong;
mod tokens;
mod tour;
mod ttl;
mod ui;

/// Every file beside this one is one of its modules: a test file that is not listed here would
/// never be compiled or run (the package sets `autotests = false`).
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = include_str!("e2e.rs");
    for entry in std::fs::read_dir(&dir).expect("reading tests/") {
        let name = entry.expect("a tests/ entry").file_name();
        let name = name.to_string_lossy();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "e2e" {
            assert!(
                this.contains(&format!("\nmod {module};\n")),
                "tests/{name} is not declared as a module of tests/e2e.rs, so it never runs"
            );
        }
    }
}
