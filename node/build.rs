//! Compiles `proto/causeway.proto` into the gRPC server (server feature only) with protox, a
//! protobuf compiler written in Rust: building needs no `protoc`.

fn main() {
    #[cfg(feature = "server")]
    grpc();
}

#[cfg(feature = "server")]
fn grpc() {
    const PROTO: &str = "../proto/causeway.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let files = protox::compile([PROTO], ["../proto"]).unwrap_or_else(|e| panic!("{PROTO}: {e}"));
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".")
        .codec_path("crate::server::grpc_codec::BoundedCodec")
        .compile_fds(files)
        .unwrap_or_else(|e| panic!("generating the gRPC server from {PROTO}: {e}"));
}
