//! The clients' token: every call carries the server's bootstrap admin
//! token (`<data_dir>/admin.token`), as an operator's tools would.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the token.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// The bearer of the admin token in `data_dir` (none when it cannot be read).
pub fn bearer(data_dir: &Path) -> Bearer {
    Bearer(
        std::fs::read_to_string(data_dir.join("admin.token"))
            .ok()
            .and_then(|token| format!("Bearer {}", token.trim()).parse().ok()),
    )
}

/// `channel` with the admin token of the server whose data is in `data_dir`.
pub fn authenticated(channel: tonic::transport::Channel, data_dir: &Path) -> Channel {
    InterceptedService::new(channel, bearer(data_dir))
}
