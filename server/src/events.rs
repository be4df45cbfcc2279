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

/// Counts a watcher while it lives.
struct WatcherSlot;

impl WatcherSlot {
    fn take() -> Result<Self, Status> {
        let before = WATCHERS.fetch_add(1, Ordering::AcqRel);
        if before >= WATCHERS_MAX {
            WATCHERS.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "{WATCHERS_MAX} watchers are already open; retry later"
            )));
        }
        Ok(WatcherSlot)
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::AcqRel);
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
    Ok(pb::Event {
        sequence: event.sequence,
        time: Some(time),
        event_time: Some(event_time),
        principal: header.principal.clone(),
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
        pool_id: if header.pool_id == 0 {
            String::new()
        } else {
            header.pool_id.to_string()
        },
        request_id: header.request_id,
        location: header.location,
        actor: header.principal,
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
        let slot = WatcherSlot::take()?;
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
        .map_err(|error| Status::internal(format!("read events: {error}")))?;
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
