//! `serialctl health`: the gRPC health check.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::Connection;

#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// Service to ask about (for example `serial.v1.PoolService`); empty means the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

/// Prints the serving status; exit status 0 only when SERVING.
pub(crate) async fn run(connection: Connection, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let mut client = HealthClient::new(connection.channel().await?);
    let response = client
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "health check failed: {}: {}",
                status.code(),
                status.message()
            )
        })?;
    let status = response.into_inner().status();
    println!("{}", status.as_str_name());
    Ok(
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
