//! The operations clients run against the server, one function each, and
//! how their errors are classified (failed, or indeterminate: the outcome is
//! unknown and the request must be retried with the same request id).

use std::time::Duration;

use crate::auth::Channel;
use proto::serial::v1 as pb;
use proto::serial::v1::request_pool_response::Message;
use tonic::{Code, Status};

/// The lot every commissioning uses, and its expiry (YYMMDD, years ahead).
pub const LOT: &str = "CHAOS1";
/// The expiry of [`LOT`].
pub const EXPIRY: &str = "351231";
/// The location of decommissions.
pub const LOCATION: &str = "CHAOS-SITE";

/// One request a client sends. Writes carry their request id; a retry sends
/// the same value again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `PoolService.RequestPool`.
    Pool {
        /// Idempotency key.
        request_id: String,
        /// GTIN-14.
        gtin: String,
        /// Serials asked for.
        count: u64,
    },
    /// One `PoolService.Commission` group.
    Commission {
        /// Idempotency key.
        request_id: String,
        /// GTIN-14.
        gtin: String,
        /// The serials.
        serials: Vec<String>,
    },
    /// One `StatusService.Decommission` group (reason dispensed).
    Decommission {
        /// Idempotency key.
        request_id: String,
        /// GTIN-14.
        gtin: String,
        /// The serials.
        serials: Vec<String>,
    },
    /// `VerificationService.VerifyBatch` (a read).
    Verify {
        /// GTIN-14.
        gtin: String,
        /// The serials.
        serials: Vec<String>,
    },
}

impl Op {
    /// The operation's kind as a short word.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Pool { .. } => "pool",
            Op::Commission { .. } => "commission",
            Op::Decommission { .. } => "decommission",
            Op::Verify { .. } => "verify",
        }
    }

    /// The request id of a write; `None` for a read.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Op::Pool { request_id, .. }
            | Op::Commission { request_id, .. }
            | Op::Decommission { request_id, .. } => Some(request_id),
            Op::Verify { .. } => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The serials of a pool, in stream order.
    Pool(Vec<String>),
    /// Per-item outcome codes of a group (commission or decommission).
    Group(Vec<i32>),
    /// Per-item `PackState` codes of a verification.
    States(Vec<i32>),
}

/// Whether an error leaves the outcome unknown (retry with the same request
/// id) rather than telling that nothing happened.
pub fn indeterminate(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
    )
}

/// How long after its deadline a client gives up on an answer by itself.
pub const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// Runs `op` on `channel` with `deadline`: sent to the server as the gRPC
/// deadline (`grpc-timeout`), and enforced here too (plus
/// [`DEADLINE_SLACK`]), so a stalled server cannot hold a client.
pub async fn execute(channel: &Channel, op: &Op, deadline: Duration) -> Result<Answer, Status> {
    match tokio::time::timeout(
        deadline + DEADLINE_SLACK,
        execute_inner(channel, op, deadline),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded("client deadline")),
    }
}

/// A request carrying `deadline` as its gRPC timeout.
fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

async fn execute_inner(channel: &Channel, op: &Op, deadline: Duration) -> Result<Answer, Status> {
    match op {
        Op::Pool {
            request_id,
            gtin,
            count,
        } => request_pool(channel, request_id, gtin, *count, deadline).await,
        Op::Commission {
            request_id,
            gtin,
            serials,
        } => {
            let group = pb::CommissionRequest {
                request_id: request_id.clone(),
                gtin: gtin.clone(),
                lot: LOT.into(),
                serials: serials.clone(),
                ..Default::default()
            };
            let mut client = pb::pool_service_client::PoolServiceClient::new(channel.clone());
            let mut answers = client
                .commission(request(tokio_stream::iter([group]), deadline))
                .await?
                .into_inner();
            let answer = answers
                .message()
                .await?
                .ok_or_else(|| Status::unknown("commission stream ended without an answer"))?;
            group_answer(
                answer.status,
                answer.results.iter().map(|r| r.outcome).collect(),
            )
        }
        Op::Decommission {
            request_id,
            gtin,
            serials,
        } => {
            let group = pb::DecommissionRequest {
                request_id: request_id.clone(),
                reason: pb::DecommissionReason::Dispensed as i32,
                location: LOCATION.into(),
                actor: "chaos".into(),
                items: serials.iter().map(|s| item(gtin, s)).collect(),
                ..Default::default()
            };
            let mut client = pb::status_service_client::StatusServiceClient::new(channel.clone());
            let mut answers = client
                .decommission(request(tokio_stream::iter([group]), deadline))
                .await?
                .into_inner();
            let answer = answers
                .message()
                .await?
                .ok_or_else(|| Status::unknown("decommission stream ended without an answer"))?;
            group_answer(
                answer.status,
                answer.results.iter().map(|r| r.outcome).collect(),
            )
        }
        Op::Verify { gtin, serials } => {
            let mut client =
                pb::verification_service_client::VerificationServiceClient::new(channel.clone());
            let answer = client
                .verify_batch(request(
                    pb::VerifyBatchRequest {
                        items: serials.iter().map(|s| item(gtin, s)).collect(),
                        ..Default::default()
                    },
                    deadline,
                ))
                .await?
                .into_inner();
            Ok(Answer::States(
                answer.results.iter().map(|r| r.state).collect(),
            ))
        }
    }
}

async fn request_pool(
    channel: &Channel,
    request_id: &str,
    gtin: &str,
    count: u64,
    deadline: Duration,
) -> Result<Answer, Status> {
    let mut client = pb::pool_service_client::PoolServiceClient::new(channel.clone());
    let pool_request = pb::RequestPoolRequest {
        request_id: request_id.into(),
        gtin: gtin.into(),
        count,
        line_id: "CHAOS-LINE".into(),
        ..Default::default()
    };
    let mut stream = client
        .request_pool(self::request(pool_request, deadline))
        .await?
        .into_inner();
    let (mut granted, mut summary, mut serials) = (None, None, Vec::new());
    while let Some(message) = stream.message().await? {
        match message.message {
            Some(Message::Header(header)) => granted = Some(header.granted_count),
            Some(Message::Chunk(chunk)) => {
                if chunk.offset != serials.len() as u64 {
                    return Err(Status::internal(format!(
                        "chunk at offset {} after {} serials",
                        chunk.offset,
                        serials.len()
                    )));
                }
                serials.extend(chunk.serials);
            }
            Some(Message::Summary(s)) => summary = Some(s.serial_count),
            None => return Err(Status::internal("empty pool message")),
        }
    }
    // A stream cut before its summary is not an answer: the outcome is unknown.
    match (granted, summary) {
        (Some(g), Some(s)) if g == s && s == serials.len() as u64 => Ok(Answer::Pool(serials)),
        (_, None) => Err(Status::unavailable("pool stream ended before its summary")),
        _ => Err(Status::internal(format!(
            "pool header {granted:?}, summary {summary:?}, {} serials",
            serials.len()
        ))),
    }
}

fn group_answer(status: Option<pb::GroupStatus>, outcomes: Vec<i32>) -> Result<Answer, Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message)),
        _ => Ok(Answer::Group(outcomes)),
    }
}

/// A pack given by GTIN and serial only.
pub fn item(gtin: &str, serial: &str) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: gtin.into(),
            serial: serial.into(),
            lot: None,
            expiry: None,
        })),
    }
}

/// Registers `gtin` (EU FMD profile) and [`LOT`]; idempotent by request id.
pub async fn setup_product(channel: &Channel, gtin: &str) -> Result<(), Status> {
    let mut client = pb::master_data_service_client::MasterDataServiceClient::new(channel.clone());
    client
        .add_product(pb::AddProductRequest {
            request_id: format!("chaos-product-{gtin}"),
            gtin: gtin.into(),
            name: "Chaos product".into(),
            company_prefix_length: 7,
            market_profile: "eu-fmd".into(),
            custom_format: None,
            ndc: None,
            guessing_rule_enforced: None,
        })
        .await?;
    client
        .add_lot(pb::AddLotRequest {
            request_id: format!("chaos-lot-{gtin}"),
            gtin: gtin.into(),
            lot: LOT.into(),
            expiry: EXPIRY.into(),
        })
        .await?;
    Ok(())
}

/// `EventService.VerifyAuditTrail`: `Ok(events)` when the chain holds.
pub async fn audit_trail(channel: &Channel) -> Result<Result<u64, String>, Status> {
    let mut client = pb::event_service_client::EventServiceClient::new(channel.clone());
    let answer = client
        .verify_audit_trail(pb::VerifyAuditTrailRequest {})
        .await?
        .into_inner();
    Ok(if answer.break_sequence == 0 {
        Ok(answer.events)
    } else {
        Err(format!(
            "chain broken at sequence {}: {}",
            answer.break_sequence, answer.break_reason
        ))
    })
}

/// A valid GTIN-14 (mod-10 check digit) numbered `n` (0..1000).
pub fn gtin(n: u32) -> String {
    let body = format!("0952012{:06}", 400_000 + n);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtins_have_their_check_digit() {
        // 09520123456788 is the README's example; the formula must agree.
        let sum: u32 = "0952012345678"
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
            .sum();
        assert_eq!((10 - sum % 10) % 10, 8);
        assert_eq!(super::gtin(0).len(), 14);
    }
}
