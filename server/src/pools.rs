//! `serial.v1.PoolService`: pool requests streamed in chunks, commissioning
//! and returns of unused serials as bidirectional group streams.

use crate::access::{Principal, principal};
use std::pin::Pin;
use std::sync::Arc;

use issuer::{GroupItem, GroupOutcome, Issuer, ItemOutcome, PoolLimit, PoolTicket};
use proto::serial::v1 as pb;
use proto::serial::v1::pool_service_server::PoolService;
use proto::serial::v1::{CommissionOutcome, ReturnOutcome, ValidationRule};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, invalid, status};
use crate::grpc::Api;
use crate::master_data::{format_message, ratio_message};
use crate::status::{Answer, pipeline_groups};

/// Serials per `SerialChunk` message (published by GetLimits).
pub(crate) const CHUNK_SIZE: usize = 16_384;

/// Messages buffered per outbound stream: bounds memory per slow client.
const STREAM_BUFFER: usize = 4;

pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn page_offset(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("offset:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid("page_token", "not a token from a RequestPool stream"))
}

fn pool_request(
    request: pb::RequestPoolRequest,
    caller: &Principal,
) -> Result<(issuer::PoolRequest, u64), Status> {
    let offset = page_offset(&request.page_token)?;
    let format_override = request.format_override.map(|f| (f.alphabet, f.length));
    let pool = issuer::PoolRequest {
        request_id: convert::identifier("request_id", &request.request_id, true)?,
        gtin: convert::gtin("gtin", &request.gtin)?,
        count: request.count,
        line_id: convert::identifier("line_id", &request.line_id, true)?,
        location: convert::identifier("location", &request.location, false)?,
        profile_override: request.market_profile_override,
        format_override,
        selection_criteria: convert::selection_criteria(&request.selection_criteria)?,
        principal: caller.name.clone(),
    };
    caller.check_gtin("gtin", pool.gtin.as_str())?;
    caller.check_location("location", &pool.location)?;
    Ok((pool, offset))
}

fn header(ticket: &PoolTicket) -> pb::PoolHeader {
    let pool = &ticket.pool;
    let record = &pool.record;
    let status = if record.granted == record.requested {
        pb::PoolStatus::Ok
    } else {
        pb::PoolStatus::InsufficientSerialNumbers
    };
    let limiting_factor = match pool.limit {
        PoolLimit::None => pb::SerialLimit::Unspecified,
        PoolLimit::GuessingRule => pb::SerialLimit::GuessingRule,
        PoolLimit::SerialSpace => pb::SerialLimit::SerialSpace,
    };
    let format = issuer::format::Format::from_stored(&record.format).ok();
    pb::PoolHeader {
        pool_id: pool.pool_id.to_string(),
        gtin: pool.figures.gtin.as_str().to_owned(),
        requested_count: record.requested,
        granted_count: record.granted,
        status: status as i32,
        limiting_factor: limiting_factor as i32,
        ratio_after: Some(ratio_message(&pool.figures)),
        market_profile: record.format.profile.clone(),
        format: format.as_ref().map(format_message),
        created_at: Some(convert::timestamp(record.created_micros)),
    }
}

/// Streams a pool: header, then each chunk once it is durable, then the summary.
async fn stream_pool(
    issuer: Arc<Issuer>,
    mut ticket: PoolTicket,
    resume_offset: u64,
    sender: mpsc::Sender<Result<pb::RequestPoolResponse, Status>>,
) {
    use pb::request_pool_response::Message;
    let send = |message| {
        let sender = sender.clone();
        async move {
            sender
                .send(Ok(pb::RequestPoolResponse {
                    message: Some(message),
                }))
                .await
                .is_ok()
        }
    };
    if !send(Message::Header(header(&ticket))).await {
        return;
    }
    let pool_id = ticket.pool.pool_id;
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    let (mut offset, mut messages, mut index) = (0u64, 0u64, 0u32);
    loop {
        let progress = ticket.progress.borrow_and_update().clone();
        if index >= progress.chunks {
            if progress.finished {
                break;
            }
            if let Some(error) = progress.failed {
                let _ = sender
                    .send(Err(Status::unavailable(format!(
                        "{error}; resume with page_token offset:{offset}"
                    ))))
                    .await;
                return;
            }
            if ticket.progress.changed().await.is_err() {
                let _ = sender
                    .send(Err(Status::unavailable(format!(
                        "pool writer stopped; resume with page_token offset:{offset}"
                    ))))
                    .await;
                return;
            }
            continue;
        }
        let serials = match issuer.pool_chunk(pool_id, index).await {
            Ok(serials) => serials,
            Err(error) => {
                let _ = sender.send(Err(status(error))).await;
                return;
            }
        };
        index += 1;
        for part in serials.chunks(CHUNK_SIZE) {
            for serial in part {
                checksum.update(serial.as_bytes());
                checksum.update(b"\n");
            }
            let start = offset;
            offset += part.len() as u64;
            if offset <= resume_offset {
                continue;
            }
            let skip = usize::try_from(resume_offset.saturating_sub(start)).unwrap_or(0);
            messages += 1;
            let chunk = pb::SerialChunk {
                offset: start + skip as u64,
                serials: part[skip..].to_vec(),
                next_page_token: format!("offset:{offset}"),
            };
            if !send(Message::Chunk(chunk)).await {
                return;
            }
        }
    }
    let summary = pb::PoolSummary {
        pool_id: pool_id.to_string(),
        serial_count: offset,
        chunk_count: messages,
        serials_xxh3: checksum.digest(),
    };
    let _ = send(Message::Summary(summary)).await;
}

/// One item of a bulk group, from a bare serial or a pack identifier.
fn group_item(
    gtin: &gs1::Gtin,
    lot: Option<&gs1::Lot>,
    index: usize,
    item: GroupInput<'_>,
) -> GroupItem {
    match item {
        GroupInput::Serial(text) => {
            gs1::Serial::new(text).map_err(|e| format!("serials[{index}]: {e}"))
        }
        GroupInput::Identifier(identifier) => {
            use pb::pack_identifier::Identifier;
            let field = format!("items[{index}]");
            let (item_gtin, serial, item_lot) = match &identifier.identifier {
                None => return Err(format!("{field}: required")),
                Some(Identifier::Fields(fields)) => {
                    let item_gtin =
                        gs1::Gtin::new(&fields.gtin).map_err(|e| format!("{field}.gtin: {e}"))?;
                    let serial = gs1::Serial::new(&fields.serial)
                        .map_err(|e| format!("{field}.serial: {e}"))?;
                    let item_lot = match fields.lot.as_deref() {
                        None | Some("") => None,
                        Some(text) => {
                            Some(gs1::Lot::new(text).map_err(|e| format!("{field}.lot: {e}"))?)
                        }
                    };
                    (item_gtin, serial, item_lot)
                }
                Some(Identifier::Encoded(text)) => {
                    let (data, _) = gs1::parse_any(text.as_bytes())
                        .map_err(|e| format!("{field}.encoded: {e}"))?;
                    let item_gtin = data
                        .gtin()
                        .cloned()
                        .ok_or_else(|| format!("{field}.encoded: no GTIN (01)"))?;
                    let serial = data
                        .serial()
                        .cloned()
                        .ok_or_else(|| format!("{field}.encoded: no serial (21)"))?;
                    (item_gtin, serial, data.lot().cloned())
                }
            };
            if &item_gtin != gtin {
                return Err(format!(
                    "{field}: GTIN {item_gtin} differs from the group's {gtin}"
                ));
            }
            if let (Some(item_lot), Some(lot)) = (&item_lot, lot)
                && item_lot != lot
            {
                return Err(format!(
                    "{field}: lot {} differs from the group's {}",
                    item_lot.as_str(),
                    lot.as_str()
                ));
            }
            Ok(serial)
        }
    }
}

enum GroupInput<'a> {
    Serial(&'a str),
    Identifier(&'a pb::PackIdentifier),
}

fn group_items(
    gtin: &gs1::Gtin,
    lot: Option<&gs1::Lot>,
    serials: &[String],
    identifiers: &[pb::PackIdentifier],
) -> Result<Vec<GroupItem>, Status> {
    match (serials.is_empty(), identifiers.is_empty()) {
        (false, false) => Err(invalid("items", "send either serials or items, not both")),
        (true, true) => Err(invalid("serials", "required (or items)")),
        (false, true) => Ok(serials
            .iter()
            .enumerate()
            .map(|(i, s)| group_item(gtin, lot, i, GroupInput::Serial(s)))
            .collect()),
        (true, false) => Ok(identifiers
            .iter()
            .enumerate()
            .map(|(i, p)| group_item(gtin, lot, i, GroupInput::Identifier(p)))
            .collect()),
    }
}

pub(crate) fn group_status(result: &Result<(), Status>) -> pb::GroupStatus {
    match result {
        Ok(()) => pb::GroupStatus {
            code: 0,
            message: String::new(),
            violations: Vec::new(),
        },
        Err(status) => pb::GroupStatus {
            code: status.code() as i32,
            message: status.message().to_owned(),
            violations: Vec::new(),
        },
    }
}

pub(crate) fn state_code(state: Option<issuer::records::SerialState>) -> i32 {
    use issuer::records::SerialState;
    (match state {
        None => pb::PackState::Unknown,
        Some(SerialState::Allocated) => pb::PackState::Allocated,
        Some(SerialState::Active) => pb::PackState::Active,
        Some(SerialState::Decommissioned) => pb::PackState::Decommissioned,
        Some(SerialState::Voided) => pb::PackState::Voided,
    }) as i32
}

fn counts(outcome: &GroupOutcome) -> pb::ItemCounts {
    let applied = outcome.items.iter().filter(|(o, _)| o.applied()).count() as u32;
    let unchanged = outcome.items.iter().filter(|(o, _)| o.unchanged()).count() as u32;
    pb::ItemCounts {
        applied,
        unchanged,
        refused: outcome.items.len() as u32 - applied - unchanged,
    }
}

/// Items this answer changed, for the metrics; 0 for a replayed answer
/// (counted when it was first applied).
fn newly_applied(outcome: &GroupOutcome) -> u64 {
    if outcome.replayed {
        0
    } else {
        outcome.items.iter().filter(|(o, _)| o.applied()).count() as u64
    }
}

fn malformed_violation(items: &[GroupItem], index: usize) -> Option<pb::FieldViolation> {
    match &items[index] {
        Err(reason) => {
            let (field, description) = reason.split_once(": ").unwrap_or(("serial", reason));
            Some(convert::violation(
                field,
                ValidationRule::Syntax,
                description,
            ))
        }
        Ok(_) => None,
    }
}

fn commission_outcome(outcome: ItemOutcome) -> CommissionOutcome {
    match outcome {
        ItemOutcome::Commissioned => CommissionOutcome::Commissioned,
        ItemOutcome::AlreadyCommissioned => CommissionOutcome::AlreadyCommissioned,
        ItemOutcome::UnknownSerial => CommissionOutcome::UnknownSerial,
        ItemOutcome::NotInPool => CommissionOutcome::NotInPool,
        ItemOutcome::Voided | ItemOutcome::Returned | ItemOutcome::AlreadyVoided => {
            CommissionOutcome::Voided
        }
        ItemOutcome::LotConflict => CommissionOutcome::LotConflict,
        ItemOutcome::Decommissioned | ItemOutcome::AlreadyActive => {
            CommissionOutcome::Decommissioned
        }
        ItemOutcome::Malformed => CommissionOutcome::Malformed,
    }
}

fn return_outcome(outcome: ItemOutcome) -> ReturnOutcome {
    match outcome {
        ItemOutcome::Returned => ReturnOutcome::Voided,
        ItemOutcome::AlreadyVoided | ItemOutcome::Voided => ReturnOutcome::AlreadyVoided,
        ItemOutcome::UnknownSerial => ReturnOutcome::UnknownSerial,
        ItemOutcome::NotInPool => ReturnOutcome::NotInPool,
        ItemOutcome::Malformed => ReturnOutcome::Malformed,
        _ => ReturnOutcome::Commissioned,
    }
}

fn optional_pool_id(text: Option<&str>) -> Result<Option<u64>, Status> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => convert::pool_id("pool_id", text).map(Some),
    }
}

/// One wire result per item: its outcome, its state after, and for a
/// malformed item the violation that says why.
fn per_item<R>(
    outcome: &GroupOutcome,
    items: &[GroupItem],
    make: impl Fn(ItemOutcome, i32, Option<pb::FieldViolation>) -> R,
) -> Vec<R> {
    outcome
        .items
        .iter()
        .enumerate()
        .map(|(index, (item, state))| {
            make(*item, state_code(*state), malformed_violation(items, index))
        })
        .collect()
}

/// Validates a commission group and hands it to its writer now (see
/// [`crate::status::pipeline_groups`]); returns the wait for its answer.
fn start_commission(
    issuer: &Issuer,
    caller: &Principal,
    request: pb::CommissionRequest,
) -> Answer<pb::CommissionResponse> {
    let request_id = request.request_id.clone();
    let submitted = (|| {
        convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let lot = convert::lot("lot", &request.lot)?;
        let expiry = match request.expiry.as_deref() {
            None | Some("") => None,
            Some(text) => Some(convert::expiry("expiry", text)?),
        };
        let pool_id = optional_pool_id(request.pool_id.as_deref())?;
        let context = issuer::EventContext {
            line_id: convert::identifier("line_id", &request.line_id, false)?,
            location: convert::identifier("location", &request.location, false)?,
            event_time_micros: convert::event_time("event_time", request.event_time.as_ref())?,
            principal: caller.name.clone(),
        };
        caller.check_location("location", &context.location)?;
        let items = group_items(&gtin, Some(&lot), &request.serials, &request.items)?;
        let group = issuer::CommissionGroup {
            request_id: request.request_id.clone(),
            gtin,
            lot,
            expiry,
            pool_id,
            context,
            items: items.clone(),
        };
        let pending = issuer.submit_commission(group).map_err(status)?;
        Ok::<_, Status>((pending, items))
    })();
    answer_group(request_id, submitted, |item, state, error| {
        pb::CommissionResult {
            outcome: commission_outcome(item) as i32,
            state,
            error,
        }
    })
}

/// Validates a group of unused serials and hands it to its writer now;
/// returns the wait for its answer.
fn start_return(
    issuer: &Issuer,
    caller: &Principal,
    request: pb::ReturnSerialsRequest,
) -> Answer<pb::ReturnSerialsResponse> {
    let request_id = request.request_id.clone();
    let submitted = (|| {
        convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let pool_id = optional_pool_id(request.pool_id.as_deref())?;
        let context = issuer::EventContext {
            line_id: convert::identifier("line_id", &request.line_id, false)?,
            location: convert::identifier("location", &request.location, false)?,
            event_time_micros: None,
            principal: caller.name.clone(),
        };
        caller.check_location("location", &context.location)?;
        let items = group_items(&gtin, None, &request.serials, &request.items)?;
        let group = issuer::ReturnGroup {
            request_id: request.request_id.clone(),
            gtin,
            context,
            pool_id,
            items: items.clone(),
        };
        let pending = issuer.submit_return(group).map_err(status)?;
        Ok::<_, Status>((pending, items))
    })();
    answer_group(request_id, submitted, |item, state, error| {
        pb::ReturnSerialsResult {
            outcome: return_outcome(item) as i32,
            state,
            error,
        }
    })
}

/// The answer message of one Commission or ReturnSerials group.
trait GroupResponse: Send + 'static {
    /// One item's result.
    type Result;
    /// The message: the group's status, per-item results and counts.
    fn new(
        request_id: String,
        status: pb::GroupStatus,
        results: Vec<Self::Result>,
        counts: Option<pb::ItemCounts>,
    ) -> Self;
    /// The counter of serials this kind of group newly changed.
    fn applied() -> &'static metrics::Counter;
}

impl GroupResponse for pb::CommissionResponse {
    type Result = pb::CommissionResult;
    fn new(
        request_id: String,
        status: pb::GroupStatus,
        results: Vec<pb::CommissionResult>,
        counts: Option<pb::ItemCounts>,
    ) -> Self {
        pb::CommissionResponse {
            request_id,
            status: Some(status),
            results,
            counts,
        }
    }
    fn applied() -> &'static metrics::Counter {
        &crate::telemetry::handles().commissioned
    }
}

impl GroupResponse for pb::ReturnSerialsResponse {
    type Result = pb::ReturnSerialsResult;
    fn new(
        request_id: String,
        status: pb::GroupStatus,
        results: Vec<pb::ReturnSerialsResult>,
        counts: Option<pb::ItemCounts>,
    ) -> Self {
        pb::ReturnSerialsResponse {
            request_id,
            status: Some(status),
            results,
            counts,
        }
    }
    fn applied() -> &'static metrics::Counter {
        &crate::telemetry::handles().returned
    }
}

/// The wait for a submitted group (or its refusal), made into its answer:
/// per-item results by `result`, or the status of a group refused whole.
fn answer_group<Response: GroupResponse>(
    request_id: String,
    submitted: Result<(issuer::PendingGroup, Vec<GroupItem>), Status>,
    result: fn(ItemOutcome, i32, Option<pb::FieldViolation>) -> Response::Result,
) -> Answer<Response> {
    Box::pin(async move {
        let answered = match submitted {
            Ok((pending, items)) => pending
                .wait()
                .await
                .map(|outcome| (outcome, items))
                .map_err(status),
            Err(error) => Err(error),
        };
        match answered {
            Ok((outcome, items)) => {
                Response::applied().increment(newly_applied(&outcome));
                Response::new(
                    request_id,
                    group_status(&Ok(())),
                    per_item(&outcome, &items, result),
                    Some(counts(&outcome)),
                )
            }
            Err(error) => Response::new(request_id, group_status(&Err(error)), Vec::new(), None),
        }
    })
}

#[tonic::async_trait]
impl PoolService for Api {
    async fn get_limits(
        &self,
        _: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::GetLimitsResponse>, Status> {
        let config = self.issuer.config();
        Ok(Response::new(pb::GetLimitsResponse {
            max_serials_requestable: config.pool_count_max,
            max_serials_returnable: config.return_group_max as u32,
            chunk_size: CHUNK_SIZE as u32,
            max_items_per_group: config.commission_group_max as u32,
        }))
    }

    async fn request_pool(
        &self,
        request: Request<pb::RequestPoolRequest>,
    ) -> Result<Response<ResponseStream<pb::RequestPoolResponse>>, Status> {
        let caller = principal(&request)?;
        let (pool, offset) = pool_request(request.into_inner(), &caller)?;
        let ticket = self.issuer.request_pool(pool).await.map_err(status)?;
        crate::telemetry::handles().pool_answered(ticket.pool.limit, ticket.pool.record.granted);
        if offset > ticket.pool.record.granted {
            return Err(invalid(
                "page_token",
                format!(
                    "offset {offset} is past the pool's {} serials",
                    ticket.pool.record.granted
                ),
            ));
        }
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(stream_pool(
            Arc::clone(&self.issuer),
            ticket,
            offset,
            sender,
        ));
        Ok(Response::new(Box::pin(crate::drain::Tracked::new(
            ReceiverStream::new(receiver),
        ))))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::GetPoolResponse>, Status> {
        let caller = principal(&request)?;
        let pool_id = convert::pool_id("pool_id", &request.into_inner().pool_id)?;
        let record = self
            .issuer
            .pool(pool_id)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("pool {pool_id} does not exist")))?;
        let gtin = format!("{:014}", record.gtin);
        caller.check_gtin("pool_id", &gtin)?;
        let format = issuer::format::Format::from_stored(&record.format).ok();
        let status = if record.granted == record.requested {
            pb::PoolStatus::Ok
        } else {
            pb::PoolStatus::InsufficientSerialNumbers
        };
        Ok(Response::new(pb::GetPoolResponse {
            pool: Some(pb::Pool {
                pool_id: pool_id.to_string(),
                request_id: record.request_id.clone(),
                gtin,
                line_id: record.line_id.clone(),
                location: record.location.clone(),
                market_profile: record.format.profile.clone(),
                format: format.as_ref().map(format_message),
                selection_criteria: record.selection_criteria.iter().cloned().collect(),
                requested_count: record.requested,
                granted_count: record.granted,
                status: status as i32,
                commissioned_count: record.commissioned,
                returned_count: record.returned,
                outstanding_count: record.outstanding(),
                created_at: Some(convert::timestamp(record.created_micros)),
                principal: String::new(),
            }),
        }))
    }

    async fn commission(
        &self,
        request: Request<Streaming<pb::CommissionRequest>>,
    ) -> Result<Response<ResponseStream<pb::CommissionResponse>>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(pipeline_groups(
            Arc::clone(&self.issuer),
            request.into_inner(),
            move |issuer, group| start_commission(issuer, &caller, group),
        )))
    }

    async fn return_serials(
        &self,
        request: Request<Streaming<pb::ReturnSerialsRequest>>,
    ) -> Result<Response<ResponseStream<pb::ReturnSerialsResponse>>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(pipeline_groups(
            Arc::clone(&self.issuer),
            request.into_inner(),
            move |issuer, group| start_return(issuer, &caller, group),
        )))
    }
}
