//! The serialsvc server: the gRPC and HTTP edge and the wiring that starts it.
//!
//! Only this crate knows wire types: prost messages are converted to domain
//! types here, in one place per message, where input validation happens. The
//! `serialsvc` binary (src/main.rs) only resolves the [`config`] and calls [`run`].
//!
//! Every RPC of the `serial.v1` contract is registered and implemented; every
//! call but health checking and reflection needs an API token ([`access`]).

mod access;
mod aggregation;
pub mod config;
mod convert;
mod drain;
mod epcis;
mod events;
mod grpc;
mod http;
mod master_data;
mod pools;
mod reconcile;
mod serve;
mod server_info;
mod status;
mod telemetry;
mod tls;
mod verification;
mod vrs;

pub use access::{ADMIN_TOKEN_FILE, VerifyLimits};
pub use issuer::IssuerConfig;
pub use serve::{BoundAddresses, ServeConfig, run};
pub use tls::TlsFiles;

/// Checks a 13-digit GLN with its check digit (e.g. `--responder-gln`);
/// the error names `field` and the rule.
pub fn check_gln(field: &str, text: &str) -> Result<(), String> {
    verification::gln(field, text).map(|_| ())
}
