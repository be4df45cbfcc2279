//! Compiles `serial/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no
//! system `protoc` is needed) and generates prost messages and tonic services.
//! The encoded file descriptor set is embedded for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("serial/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=serial/v1");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("serial_v1_descriptor.bin"), descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every RPC gets a default body answering UNIMPLEMENTED, so the server can
        // register every service now and later issues fill the methods in.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
