//! `StatusService`: bulk decommission and undo streams with per-item
//! outcomes, lot recall, product withdrawal and pack flags. Validation of
//! every field happens here; the rules live in `issuer::status`.

use std::sync::Arc;

use issuer::status::{DecommissionOutcome, UndoOutcome};
use issuer::{Issuer, StatusAction, StatusAnswer, StatusGroup, StatusItem};
use proto::serial::v1 as pb;
use proto::serial::v1::status_service_server::StatusService;
use tonic::{Request, Response, Status, Streaming};
use verifier::DecommissionReason;

use crate::access::{Principal, principal};
use crate::convert::{self, invalid, status};
use crate::grpc::Api;
use crate::pools::{ResponseStream, group_status, state_code};
use crate::verification::{parse_item, parse_required_item};

/// Longest note or reason text accepted, in characters.
pub(crate) const NOTE_LENGTH_MAX: usize = 256;

/// Groups of one Decommission or Undo stream submitted to the writers
/// before the first of them is answered (`max_groups_in_flight`).
pub(crate) const GROUPS_IN_FLIGHT: usize = 4;

pub(crate) type Answer<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Reads groups, submits each to the writers at once and in order (`start`
/// validates and submits synchronously, then returns the wait for its
/// answer), and answers them in order; at most [`GROUPS_IN_FLIGHT`] wait at
/// a time, after which the stream is not read (HTTP/2 flow control holds the
/// client).
pub(crate) fn pipeline_groups<In, Out, F>(
    issuer: Arc<Issuer>,
    mut inbound: Streaming<In>,
    start: F,
) -> ResponseStream<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: Fn(&Issuer, In) -> Answer<Out> + Send + 'static,
{
    let (waiting, mut ready) = tokio::sync::mpsc::channel::<Answer<Out>>(GROUPS_IN_FLIGHT);
    let (sender, receiver) = tokio::sync::mpsc::channel(GROUPS_IN_FLIGHT);
    let failure = sender.clone();
    tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(group)) => {
                    if waiting.send(start(&issuer, group)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = failure.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(answer) = ready.recv().await {
            if sender.send(Ok(answer.await)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(crate::drain::Tracked::new(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
    ))
}

pub(crate) fn reason(
    field: &str,
    code: i32,
    required: bool,
) -> Result<Option<DecommissionReason>, Status> {
    if code == 0 && !required {
        return Ok(None);
    }
    u8::try_from(code)
        .ok()
        .and_then(DecommissionReason::from_code)
        .map(Some)
        .ok_or_else(|| invalid(field, format!("{code} is not a decommission reason (1–8)")))
}

pub(crate) fn text(field: &str, value: &str, required: bool) -> Result<String, Status> {
    let count = value.chars().count();
    if (required && count == 0) || count > NOTE_LENGTH_MAX || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{}..={NOTE_LENGTH_MAX} printable characters",
                u8::from(required)
            ),
        ));
    }
    Ok(value.to_owned())
}

/// Parsed items plus, per position, the violation of a malformed one.
fn items(
    identifiers: &[pb::PackIdentifier],
) -> (
    Vec<Result<StatusItem, String>>,
    Vec<Option<pb::FieldViolation>>,
) {
    identifiers
        .iter()
        .map(|identifier| match parse_item(identifier.clone()) {
            Ok(item) => (
                Ok(StatusItem {
                    gtin: item.gtin,
                    serial: item.serial,
                    lot: item.lot,
                    expiry: item.expiry,
                }),
                None,
            ),
            Err(violation) => (
                Err(format!("{}: {}", violation.field, violation.description)),
                Some(violation),
            ),
        })
        .unzip()
}

fn decommission_alert(outcome: u8) -> pb::EuAlertCode {
    use DecommissionOutcome as O;
    use pb::EuAlertCode as A;
    match DecommissionOutcome::from_code(outcome) {
        Some(O::AlreadySet) => A::StatusAlreadySet,
        Some(O::AlreadyInactive | O::Recalled | O::Withdrawn | O::Expired) => {
            A::PackAlreadyInactive
        }
        Some(O::UnknownProduct) => A::UnknownProduct,
        Some(O::UnknownSerial | O::NotCommissioned) => A::UnknownSerial,
        Some(O::UnknownLot) => A::UnknownBatch,
        Some(O::LotMismatch) => A::BatchDoesNotMatchSerial,
        Some(O::ExpiryMismatch) => A::ExpiryDoesNotMatchBatch,
        _ => A::Unspecified,
    }
}

fn undo_alert(outcome: u8) -> pb::EuAlertCode {
    use UndoOutcome as O;
    use pb::EuAlertCode as A;
    let outcome = match outcome {
        1 => O::Reactivated,
        2 => O::AlreadyActive,
        3 => O::WindowExceeded,
        4 => O::DifferentUser,
        5 => O::DifferentLocation,
        6 => O::NotUndoable,
        7 => O::Recalled,
        8 => O::Withdrawn,
        9 => O::Expired,
        11 => O::UnknownProduct,
        12 => O::UnknownSerial,
        13 => O::NotCommissioned,
        14 => O::UnknownLot,
        15 => O::LotMismatch,
        16 => O::ExpiryMismatch,
        _ => return A::Unspecified,
    };
    match outcome {
        O::AlreadyActive => A::StatusAlreadySet,
        O::WindowExceeded => A::UndoWindowExceeded,
        O::DifferentUser => A::UndoByDifferentUser,
        O::DifferentLocation => A::UndoAtDifferentLocation,
        O::NotUndoable | O::Recalled | O::Withdrawn | O::Expired => A::UndoNotAllowed,
        O::UnknownProduct => A::UnknownProduct,
        O::UnknownSerial | O::NotCommissioned => A::UnknownSerial,
        O::UnknownLot => A::UnknownBatch,
        O::LotMismatch => A::BatchDoesNotMatchSerial,
        O::ExpiryMismatch => A::ExpiryDoesNotMatchBatch,
        _ => A::Unspecified,
    }
}

fn counts(answer: &StatusAnswer, applied: u8, unchanged: u8) -> pb::ItemCounts {
    let applied_count = answer.items.iter().filter(|r| r.outcome == applied).count() as u32;
    let unchanged_count = answer
        .items
        .iter()
        .filter(|r| r.outcome == unchanged)
        .count() as u32;
    pb::ItemCounts {
        applied: applied_count,
        unchanged: unchanged_count,
        refused: answer.items.len() as u32 - applied_count - unchanged_count,
    }
}

/// The group-level fields both stream kinds share.
struct GroupFields<'a> {
    request_id: &'a str,
    location: &'a str,
    actor: &'a str,
    note: &'a str,
    event_time: Option<&'a prost_types::Timestamp>,
    items: &'a [pb::PackIdentifier],
}

/// A submitted group: the pending answer and, per item, the violation of a
/// malformed one and whether it was outside the caller's scope (so not
/// submitted, answered PERMISSION_DENIED).
type Submitted = (
    issuer::PendingStatus,
    Vec<Option<pb::FieldViolation>>,
    Vec<bool>,
);

/// Validates a group and submits it (see [`Submitted`]).
fn submit(
    issuer: &Issuer,
    caller: &Principal,
    action: StatusAction,
    group: GroupFields<'_>,
) -> Result<Submitted, Status> {
    convert::identifier("request_id", group.request_id, true)?;
    let location = convert::identifier("location", group.location, true)?;
    caller.check_location("location", &location)?;
    let actor = convert::identifier("actor", group.actor, false)?;
    let note = text("note", group.note, false)?;
    let event_time_micros = convert::event_time("event_time", group.event_time)?;
    let (mut parsed, mut violations) = items(group.items);
    let mut denied = vec![false; parsed.len()];
    for (index, item) in parsed.iter_mut().enumerate() {
        let outside = matches!(item, Ok(item) if !caller.scope.covers_gtin(item.gtin.as_str()));
        if outside && let Ok(inside) = item {
            let gtin = inside.gtin.as_str().to_owned();
            violations[index] = Some(caller.item_violation(&format!("items[{index}].gtin"), &gtin));
            *item = Err(format!("items[{index}].gtin: outside the token's scope"));
            denied[index] = true;
        }
    }
    let pending = issuer
        .submit_status(StatusGroup {
            request_id: group.request_id.to_owned(),
            action,
            party: caller.name.clone(),
            actor,
            location,
            note,
            event_time_micros,
            items: parsed,
        })
        .map_err(status)?;
    Ok((pending, violations, denied))
}

fn start_decommission(
    issuer: &Issuer,
    caller: &Principal,
    request: pb::DecommissionRequest,
) -> Answer<pb::DecommissionResponse> {
    let request_id = request.request_id.clone();
    let refuse = |request_id: String, error: Status| -> Answer<pb::DecommissionResponse> {
        Box::pin(std::future::ready(pb::DecommissionResponse {
            request_id,
            status: Some(group_status(&Err(error))),
            results: Vec::new(),
            counts: None,
        }))
    };
    let submitted = reason("reason", request.reason, true)
        .and_then(|reason| reason.ok_or_else(|| invalid("reason", "required")))
        .and_then(|reason| {
            submit(
                issuer,
                caller,
                StatusAction::Decommission(reason),
                GroupFields {
                    request_id: &request.request_id,
                    location: &request.location,
                    actor: &request.actor,
                    note: &request.note,
                    event_time: request.event_time.as_ref(),
                    items: &request.items,
                },
            )
        });
    let (pending, violations, denied) = match submitted {
        Ok(submitted) => submitted,
        Err(error) => return refuse(request_id, error),
    };
    Box::pin(async move {
        match pending.wait().await {
            Err(error) => pb::DecommissionResponse {
                request_id,
                status: Some(group_status(&Err(status(error)))),
                results: Vec::new(),
                counts: None,
            },
            Ok(answer) => pb::DecommissionResponse {
                request_id,
                status: Some(group_status(&Ok(()))),
                counts: Some(counts(
                    &answer,
                    DecommissionOutcome::Decommissioned as u8,
                    DecommissionOutcome::AlreadySet as u8,
                )),
                results: answer
                    .items
                    .iter()
                    .zip(violations)
                    .zip(denied)
                    .map(|((item, error), denied)| pb::DecommissionResult {
                        outcome: if denied {
                            pb::DecommissionOutcome::PermissionDenied as i32
                        } else {
                            i32::from(item.outcome)
                        },
                        state: state_code(item.state),
                        current_reason: i32::from(item.reason),
                        alert: decommission_alert(item.outcome) as i32,
                        error,
                    })
                    .collect(),
            },
        }
    })
}

fn start_undo(
    issuer: &Issuer,
    caller: &Principal,
    request: pb::UndoRequest,
) -> Answer<pb::UndoResponse> {
    let request_id = request.request_id.clone();
    let submitted =
        reason("expected_reason", request.expected_reason, false).and_then(|expected| {
            submit(
                issuer,
                caller,
                StatusAction::Undo(expected),
                GroupFields {
                    request_id: &request.request_id,
                    location: &request.location,
                    actor: &request.actor,
                    note: &request.note,
                    event_time: None,
                    items: &request.items,
                },
            )
        });
    let refused = |request_id: String, error: Status| pb::UndoResponse {
        request_id,
        status: Some(group_status(&Err(error))),
        results: Vec::new(),
        counts: None,
    };
    let (pending, violations, denied) = match submitted {
        Ok(submitted) => submitted,
        Err(error) => return Box::pin(std::future::ready(refused(request_id, error))),
    };
    Box::pin(async move {
        match pending.wait().await {
            Err(error) => refused(request_id, status(error)),
            Ok(answer) => pb::UndoResponse {
                request_id,
                status: Some(group_status(&Ok(()))),
                counts: Some(counts(
                    &answer,
                    UndoOutcome::Reactivated as u8,
                    UndoOutcome::AlreadyActive as u8,
                )),
                results: answer
                    .items
                    .iter()
                    .zip(violations)
                    .zip(denied)
                    .map(|((item, error), denied)| pb::UndoResult {
                        outcome: if denied {
                            pb::UndoOutcome::PermissionDenied as i32
                        } else {
                            i32::from(item.outcome)
                        },
                        state: state_code(item.state),
                        current_reason: i32::from(item.reason),
                        alert: undo_alert(item.outcome) as i32,
                        error,
                        decommissioned_at: (item.decommissioned_micros > 0)
                            .then(|| convert::timestamp(item.decommissioned_micros)),
                    })
                    .collect(),
            },
        }
    })
}

#[tonic::async_trait]
impl StatusService for Api {
    async fn decommission(
        &self,
        request: Request<Streaming<pb::DecommissionRequest>>,
    ) -> Result<Response<ResponseStream<pb::DecommissionResponse>>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(pipeline_groups(
            Arc::clone(&self.issuer),
            request.into_inner(),
            move |issuer, group| start_decommission(issuer, &caller, group),
        )))
    }

    async fn undo(
        &self,
        request: Request<Streaming<pb::UndoRequest>>,
    ) -> Result<Response<ResponseStream<pb::UndoResponse>>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(pipeline_groups(
            Arc::clone(&self.issuer),
            request.into_inner(),
            move |issuer, group| start_undo(issuer, &caller, group),
        )))
    }

    async fn recall_lot(
        &self,
        request: Request<pb::RecallLotRequest>,
    ) -> Result<Response<pb::RecallLotResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let request_id = convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let lot = convert::lot("lot", &request.lot)?;
        let reason = text("reason", &request.reason, true)?;
        let (lot, change) = self
            .issuer
            .recall_lot(request_id, gtin, lot, reason, caller.name.clone())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RecallLotResponse {
            lot: Some(crate::master_data::lot_message(&lot)),
            already_recalled: change.already,
            active_packs_affected: change.active_packs_affected,
        }))
    }

    async fn withdraw_product(
        &self,
        request: Request<pb::WithdrawProductRequest>,
    ) -> Result<Response<pb::WithdrawProductResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let request_id = convert::identifier("request_id", &request.request_id, true)?;
        let gtin = convert::gtin("gtin", &request.gtin)?;
        caller.check_gtin("gtin", gtin.as_str())?;
        let reason = text("reason", &request.reason, true)?;
        let (product, change) = self
            .issuer
            .withdraw_product(request_id, gtin, reason, caller.name.clone())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::WithdrawProductResponse {
            product: Some(crate::master_data::product_message(&product)),
            already_withdrawn: change.already,
            active_packs_affected: change.active_packs_affected,
        }))
    }

    async fn flag_pack(
        &self,
        request: Request<pb::FlagPackRequest>,
    ) -> Result<Response<pb::FlagPackResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let request_id = convert::identifier("request_id", &request.request_id, true)?;
        let item = parse_required_item(request.item)?;
        caller.check_gtin("item.gtin", item.gtin.as_str())?;
        let action = match pb::PackFlagAction::try_from(request.action) {
            Ok(pb::PackFlagAction::SetSuspect) => issuer::PackFlagAction::SetSuspect,
            Ok(pb::PackFlagAction::SetIllegitimate) => issuer::PackFlagAction::SetIllegitimate,
            Ok(pb::PackFlagAction::Clear) => issuer::PackFlagAction::Clear,
            _ => return Err(invalid("action", "SET_SUSPECT, SET_ILLEGITIMATE or CLEAR")),
        };
        let reason = text("reason", &request.reason, true)?;
        let flags = self
            .issuer
            .flag_pack(
                request_id,
                item.gtin,
                item.serial,
                action,
                reason,
                caller.name.clone(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FlagPackResponse {
            state: state_code(Some(flags.state)),
            suspect: flags.suspect,
            illegitimate: flags.illegitimate,
            unchanged: flags.unchanged,
        }))
    }
}
