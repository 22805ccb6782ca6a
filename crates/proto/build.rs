//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed, and
//! writes the client API's file descriptor set (`fjord.proto` alone: server reflection must
//! not describe the node-to-node service) for server reflection.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let files = [format!("{root}/fjord.proto"), format!("{root}/raft.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(&files, [root])?;
    // Every service and client decodes with `FjordCodec` (prost's, with the produce check of
    // `src/codec.rs`).
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::FjordCodec")
        .compile_fds(fds)?;
    let client = protox::compile([&files[0]], [root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fjord_v1_descriptor.bin"), client.encode_to_vec())?;
    Ok(())
}
