//! `serial.v1.EventService`: the event feed (`Watch`) and the audit-trail
//! check (`VerifyAuditTrail`). Events are read from storage, where each was
//! committed in the same batch as the change it reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proto::serial::v1 as pb;
use proto::serial::v1::event_service_server::EventService;
use storage::Store;
use storage::value::EventRecord;
use tonic::{Request, Response, Status};

use crate::convert::{self, invalid};
use crate::grpc::Api;
use crate::pools::ResponseStream;

/// Most events in one `WatchResponse` (published as `max_watch_events`).
pub(crate) const WATCH_EVENTS_MAX: usize = 256;
/// Most watchers at once; more are refused `RESOURCE_EXHAUSTED`.
pub(crate) const WATCHERS_MAX: usize = 64;
/// How often a watcher with nothing to send looks for new events.
const WATCH_POLL: Duration = Duration::from_millis(20);
/// How often an idle watcher gets a keep-alive message with the head.
const WATCH_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a watcher may leave its buffer full before the stream ends
/// (the client then resumes from its last sequence + 1).
const WATCH_SLOW_CLIENT: Duration = Duration::from_secs(30);
/// Messages buffered per watcher.
const WATCH_BUFFER: usize = 4;

static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// One of a bounded number of concurrent long requests (watchers, exports,
/// reports), counted while it lives.
pub(crate) struct Slot(&'static AtomicUsize);

impl Slot {
    /// Takes a slot of `counter`, or answers RESOURCE_EXHAUSTED naming
    /// `what` when `max` are already taken.
    pub(crate) fn take(
        counter: &'static AtomicUsize,
        max: usize,
        what: &str,
    ) -> Result<Self, Status> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "{max} {what} are already running; retry later"
            )));
        }
        Ok(Slot(counter))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The wire form of a stored event.
pub(crate) fn event_message(event: &EventRecord) -> Result<pb::Event, Status> {
    let (header, serials) = issuer::events::decode_body(&event.body).map_err(|error| {
        tracing::error!(sequence = event.sequence, %error, "stored event body does not decode");
        Status::data_loss(format!("event {}: {error}", event.sequence))
    })?;
    let time = convert::timestamp(event.time_micros);
    let event_time = if header.event_time_micros == 0 {
        time
    } else {
        convert::timestamp(header.event_time_micros)
    };
    let aggregation = matches!(
        header.kind,
        issuer::events::kind::PACKED | issuer::events::kind::UNPACKED
    );
    let children = if !aggregation {
        Vec::new()
    } else if header.gtin == 0 {
        serials
            .iter()
            .map(|sscc| pb::AggregationChild {
                child: Some(pb::aggregation_child::Child::Sscc(sscc.clone())),
            })
            .collect()
    } else {
        serials
            .iter()
            .map(|serial| pb::AggregationChild {
                child: Some(pb::aggregation_child::Child::Pack(pb::PackIdentifier {
                    identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
                        gtin: format!("{:014}", header.gtin),
                        serial: serial.clone(),
                        lot: None,
                        expiry: None,
                    })),
                })),
            })
            .collect()
    };
    // SSCC children are not serials of a GTIN.
    let serials = if aggregation && header.gtin == 0 {
        Vec::new()
    } else {
        serials
    };
    let pool_id = match (header.pool_id, header.kind) {
        (0, _) => String::new(),
        (id, issuer::events::kind::SSCC_POOL_ALLOCATED) => format!("sscc-{id}"),
        (id, _) => id.to_string(),
    };
    Ok(pb::Event {
        sequence: event.sequence,
        time: Some(time),
        event_time: Some(event_time),
        principal: header.principal,
        kind: i32::from(header.kind),
        gtin: if header.gtin == 0 {
            String::new()
        } else {
            format!("{:014}", header.gtin)
        },
        serials,
        lot: header.lot,
        expiry: convert::expiry_date(&header.expiry),
        reason: i32::from(header.reason),
        reason_text: header.reason_text,
        pool_id,
        sscc: header.sscc,
        children,
        request_id: header.request_id,
        location: header.location,
        actor: header.actor,
        token_id: header.token_id,
        line_id: header.line_id,
        count: header.count,
        flag_action: i32::from(header.flag_action),
        chain_hash: event.chain_hash().to_vec(),
        ..Default::default()
    })
}

/// Which events a watcher wants.
struct Filter {
    kinds: Vec<i32>,
    gtin: String,
}

impl Filter {
    fn admits(&self, event: &pb::Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && (self.gtin.is_empty() || self.gtin == event.gtin)
    }
}

/// Reads the events from `next` on (at most [`WATCH_EVENTS_MAX`]), on a
/// blocking thread.
async fn read_events(store: &Arc<Store>, next: u64) -> Result<Vec<EventRecord>, Status> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.events_from(next, WATCH_EVENTS_MAX))
        .await
        .map_err(|_| Status::unavailable("server shutting down"))?
        .map_err(|error| Status::internal(format!("read events: {error}")))
}

#[tonic::async_trait]
impl EventService for Api {
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<ResponseStream<pb::WatchResponse>>, Status> {
        let request = request.into_inner();
        for kind in &request.kinds {
            if pb::EventKind::try_from(*kind).map_or(true, |k| k == pb::EventKind::Unspecified) {
                return Err(invalid("kinds", format!("{kind} is not an event kind")));
            }
        }
        let gtin = if request.gtin.is_empty() {
            String::new()
        } else {
            convert::gtin("gtin", &request.gtin)?.as_str().to_owned()
        };
        let head = self.store.next_event_sequence() - 1;
        let mut next = match request.from_sequence {
            0 => head + 1,
            from if from > head + 1 => {
                return Err(Status::out_of_range(format!(
                    "from_sequence {from} is beyond the head {head} + 1"
                )));
            }
            from => from,
        };
        let slot = Slot::take(&WATCHERS, WATCHERS_MAX, "watchers")?;
        let filter = Filter {
            kinds: request.kinds,
            gtin,
        };
        let store = Arc::clone(&self.store);
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _slot = slot;
            let mut last_sent = Instant::now();
            loop {
                if crate::drain::shutting_down() {
                    let _ = sender
                        .send(Err(Status::unavailable(format!(
                            "server shutting down; resume from sequence {next}"
                        ))))
                        .await;
                    return;
                }
                let records = match read_events(&store, next).await {
                    Ok(records) => records,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let head = store.next_event_sequence() - 1;
                let mut events = Vec::with_capacity(records.len());
                for record in &records {
                    match event_message(record) {
                        Ok(event) if filter.admits(&event) => events.push(event),
                        Ok(_) => {}
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    }
                }
                if let Some(last) = records.last() {
                    next = last.sequence + 1;
                }
                let keep_alive = last_sent.elapsed() >= WATCH_KEEP_ALIVE;
                if !events.is_empty() || keep_alive {
                    let message = pb::WatchResponse {
                        events,
                        head_sequence: head.max(next - 1),
                    };
                    match tokio::time::timeout(WATCH_SLOW_CLIENT, sender.send(Ok(message))).await {
                        Ok(Ok(())) => last_sent = Instant::now(),
                        Ok(Err(_)) => return, // the client went away
                        Err(_) => {
                            let _ = sender.try_send(Err(Status::resource_exhausted(format!(
                                "the client read too slowly; resume from sequence {next}"
                            ))));
                            return;
                        }
                    }
                }
                if records.len() < WATCH_EVENTS_MAX {
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH_POLL) => {}
                        _ = sender.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<ResponseStream<pb::ExportResponse>>, Status> {
        let request = request.into_inner();
        let epcis = match pb::ExportFormat::try_from(request.format) {
            Ok(pb::ExportFormat::EpcisJsonLd) => true,
            Ok(pb::ExportFormat::Jsonl) => false,
            _ => {
                return Err(invalid(
                    "format",
                    "EXPORT_FORMAT_EPCIS_JSON_LD or EXPORT_FORMAT_JSONL",
                ));
            }
        };
        let head = self.store.next_event_sequence() - 1;
        let since = request.since_sequence.max(1);
        if since > head + 1 {
            return Err(Status::out_of_range(format!(
                "since_sequence {since} is beyond the head {head} + 1"
            )));
        }
        let until = match request.until_sequence {
            0 => head + 1,
            until if until < since => {
                return Err(invalid(
                    "until_sequence",
                    format!("{until} is before since_sequence {since}"),
                ));
            }
            until => until,
        };
        let until_micros = convert::event_time("until_time", request.until_time.as_ref())
            .map_err(|_| invalid("until_time", "not a time after 1970 and before now + 5 min"))?;
        let gtin = if request.gtin.is_empty() {
            String::new()
        } else {
            convert::gtin("gtin", &request.gtin)?.as_str().to_owned()
        };
        let slot = Slot::take(&EXPORTS, EXPORTS_MAX, "exports")?;
        let store = Arc::clone(&self.store);
        let issuer = Arc::clone(&self.issuer);
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _slot = slot;
            let result = export_range(
                &store,
                &issuer,
                ExportRange {
                    epcis,
                    since,
                    until,
                    until_micros,
                    gtin,
                },
                &sender,
            )
            .await;
            if let Err(status) = result {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(crate::drain::Tracked::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))))
    }

    async fn verify_audit_trail(
        &self,
        _request: Request<pb::VerifyAuditTrailRequest>,
    ) -> Result<Response<pb::VerifyAuditTrailResponse>, Status> {
        let store = Arc::clone(&self.store);
        let report = tokio::task::spawn_blocking(move || {
            store.verify_chain(|sequence| {
                tracing::info!(sequence, "audit trail check in progress");
            })
        })
        .await
        .map_err(|_| Status::unavailable("server shutting down"))?
        // A storage failure (corruption, I/O) is UNAVAILABLE, like every other
        // storage failure (DESIGN.md §4); the store has fail-stopped.
        .map_err(|error| Status::unavailable(format!("read events: {error}")))?;
        if let Some((sequence, reason)) = &report.first_break {
            tracing::error!(sequence, reason, "audit trail broken");
        }
        let (break_sequence, break_reason) = report.first_break.unwrap_or_default();
        Ok(Response::new(pb::VerifyAuditTrailResponse {
            events: report.events,
            unchained: report.unchained,
            head_sequence: report.head_sequence,
            head_hash: report.head_hash.to_vec(),
            break_sequence,
            break_reason,
        }))
    }
}

/// Bytes of document per `ExportResponse` chunk (published as `export_chunk_bytes`).
pub(crate) const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Most exports at once; more are refused `RESOURCE_EXHAUSTED`.
pub(crate) const EXPORTS_MAX: usize = 4;

static EXPORTS: AtomicUsize = AtomicUsize::new(0);

/// What one export covers.
struct ExportRange {
    epcis: bool,
    since: u64,
    until: u64,
    until_micros: Option<u64>,
    gtin: String,
}

type ExportSender = tokio::sync::mpsc::Sender<Result<pb::ExportResponse, Status>>;

/// Sends the document's next bytes, in chunks of at most [`EXPORT_CHUNK_BYTES`].
async fn send_chunks(sender: &ExportSender, buffer: &mut Vec<u8>, all: bool) -> bool {
    while buffer.len() >= EXPORT_CHUNK_BYTES || (all && !buffer.is_empty()) {
        let rest = buffer.split_off(buffer.len().min(EXPORT_CHUNK_BYTES));
        let chunk = std::mem::replace(buffer, rest);
        let message = pb::ExportResponse {
            message: Some(pb::export_response::Message::Chunk(chunk)),
        };
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

async fn export_range(
    store: &Arc<Store>,
    issuer: &Arc<issuer::Issuer>,
    range: ExportRange,
    sender: &ExportSender,
) -> Result<(), Status> {
    let now = convert::now_micros();
    let mut buffer: Vec<u8> = Vec::new();
    if range.epcis {
        buffer.extend_from_slice(crate::epcis::document_start(now).as_bytes());
    }
    let mut prefix_lengths: std::collections::HashMap<String, Option<u8>> =
        std::collections::HashMap::new();
    let (mut count, mut first, mut last, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut next = range.since;
    'scan: while next < range.until {
        let records = read_events(store, next).await?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            if record.sequence >= range.until
                || range.until_micros.is_some_and(|t| record.time_micros >= t)
            {
                next = record.sequence;
                break 'scan;
            }
            next = record.sequence + 1;
            let event = event_message(record)?;
            if !range.gtin.is_empty() && event.gtin != range.gtin {
                continue;
            }
            let text = if range.epcis {
                let ssccs = if event.sscc.is_empty() && event.children.is_empty() {
                    std::collections::HashMap::new()
                } else {
                    let mut wanted = vec![event.sscc.clone()];
                    wanted.extend(event.children.iter().filter_map(|c| match &c.child {
                        Some(pb::aggregation_child::Child::Sscc(sscc)) => Some(sscc.clone()),
                        _ => None,
                    }));
                    issuer
                        .sscc_prefix_lengths(wanted)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                };
                let length = match prefix_lengths.get(&event.gtin) {
                    Some(length) => *length,
                    None if event.gtin.is_empty() => None,
                    None => {
                        let length = match gs1::Gtin::new(&event.gtin) {
                            Ok(gtin) => issuer
                                .product(gtin)
                                .await
                                .map_err(|e| Status::internal(e.to_string()))?
                                .map(|p| p.record.company_prefix_length),
                            Err(_) => None,
                        };
                        prefix_lengths.insert(event.gtin.clone(), length);
                        length
                    }
                };
                let Some(json) = crate::epcis::epcis_event(&event, length, &ssccs) else {
                    continue;
                };
                let mut text = if count == 0 {
                    String::new()
                } else {
                    ",".to_owned()
                };
                text.push_str(&json.to_string());
                text
            } else {
                let mut line = crate::epcis::jsonl_event(&event).to_string();
                line.push('\n');
                line
            };
            if count == 0 {
                first = record.sequence;
            }
            last = record.sequence;
            count += 1;
            bytes += text.len() as u64;
            buffer.extend_from_slice(text.as_bytes());
            if !send_chunks(sender, &mut buffer, false).await {
                return Ok(());
            }
        }
    }
    if range.epcis {
        buffer.extend_from_slice(crate::epcis::DOCUMENT_END.as_bytes());
        bytes +=
            (crate::epcis::document_start(now).len() + crate::epcis::DOCUMENT_END.len()) as u64;
    }
    if !send_chunks(sender, &mut buffer, true).await {
        return Ok(());
    }
    let summary = pb::ExportSummary {
        first_sequence: first,
        last_sequence: last,
        event_count: count,
        byte_count: bytes,
        next_sequence: next,
    };
    let _ = sender
        .send(Ok(pb::ExportResponse {
            message: Some(pb::export_response::Message::Summary(summary)),
        }))
        .await;
    Ok(())
}
