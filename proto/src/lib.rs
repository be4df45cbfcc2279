//! The gRPC API contract of serialsvc (protobuf package `serial.v1`) and the
//! prost/tonic code generated from it at build time by protox (no system
//! `protoc` needed).
//!
//! Besides the generated code there is only [`packed`], the framing of the
//! packed verification batches (the byte layout of two `bytes` fields),
//! shared by the server and its clients. Wire types are converted to domain
//! types at the server's edge, in one place.

#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

/// Generated messages and services of package `serial.v1`.
pub mod serial {
    pub mod v1 {
        tonic::include_proto!("serial.v1");
    }
}

#[warn(missing_docs, clippy::all)]
pub mod packed;

/// Encoded `FileDescriptorSet` of every `.proto` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("serial_v1_descriptor");
