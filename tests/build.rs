//! Generates a gRPC client from `proto/causeway.proto` as an application would (protox: no
//! `protoc` needed), for `tests/grpc.rs`.

fn main() {
    const PROTO: &str = "../proto/causeway.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let files = protox::compile([PROTO], ["../proto"]).unwrap_or_else(|e| panic!("{PROTO}: {e}"));
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(files)
        .unwrap_or_else(|e| panic!("generating the gRPC client from {PROTO}: {e}"));
}
