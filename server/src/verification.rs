//! `VerificationService`: single, batch and streaming verification answered
//! from the verifier's in-memory index, plus the DSCSA saleable-return check.
//! Parsing of each item (fields or any encoding) happens here; the answer
//! comes from `verifier::View::verify_many`, which never waits behind a
//! writer.

use crate::access::{AccessControl, Principal, principal};
use std::pin::Pin;
use std::sync::Arc;

use proto::serial::v1 as pb;
use proto::serial::v1::verification_service_server::VerificationService;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use verifier::{
    AdditionalInfo, EuAlert, FailureReason, FieldMatch, Given, PackState, Purpose, Query,
    StatusIndex, Verdict,
};

use crate::convert::{self, invalid};
use crate::grpc::Api;

mod packed;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Most items per VerifyBatch or VerifyStream batch (`max_verify_batch_items`).
pub(crate) const VERIFY_BATCH_ITEMS_MAX: usize = 4096;

/// Batches of one VerifyStream read ahead before their answers are sent.
pub(crate) const VERIFY_STREAM_IN_FLIGHT: usize = 8;

/// Longest encoded identifier accepted (bytes).
pub(crate) const ENCODED_LENGTH_MAX: usize = 512;

/// One item, parsed and checked.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) gtin: gs1::Gtin,
    pub(crate) gtin_value: u64,
    pub(crate) serial: gs1::Serial,
    pub(crate) lot: Option<gs1::Lot>,
    pub(crate) expiry: Option<gs1::Expiry>,
    /// Sent encoded: the answer echoes the identifier as understood.
    pub(crate) encoded: bool,
}

impl Item {
    fn query(&self) -> Query<'_> {
        Query {
            gtin: self.gtin_value,
            serial: self.serial.as_str().as_bytes(),
            given: Given {
                lot: self.lot.as_ref().map(|lot| lot.as_str()),
                expiry: self.expiry,
            },
        }
    }
}

/// The validation rule a GS1 parse error breaks.
pub(crate) fn rule_of(error: &gs1::Gs1Error) -> pb::ValidationRule {
    use gs1::Rule;
    use pb::ValidationRule as V;
    match error.rule() {
        Rule::Empty | Rule::EmptyValue | Rule::MissingPrimaryKey | Rule::RequiresAi { .. } => {
            V::Required
        }
        Rule::InputTooLong { .. } | Rule::WrongLength { .. } | Rule::TooLong { .. } => V::Length,
        Rule::NotDigit { .. } | Rule::InvalidChar { .. } | Rule::NotUtf8 => V::Charset,
        Rule::BadCheckDigit { .. } => V::CheckDigit,
        Rule::InvalidDate { .. } => V::Date,
        Rule::DuplicateAi => V::Duplicate,
        _ => V::Syntax,
    }
}

pub(crate) fn violation(field: &str, error: &gs1::Gs1Error) -> pb::FieldViolation {
    convert::violation(field, rule_of(error), error.to_string())
}

pub(crate) fn gtin_value(gtin: &gs1::Gtin) -> u64 {
    // 14 checked digits always parse.
    gtin.as_str().parse().unwrap_or(0)
}

/// Parses one pack identifier, keeping the decoded strings' buffers (no
/// copy per field on the hot path). Field paths are relative to the item.
pub(crate) fn parse_item(identifier: pb::PackIdentifier) -> Result<Item, pb::FieldViolation> {
    use pb::ValidationRule as V;
    use pb::pack_identifier::Identifier;
    match identifier.identifier {
        None => Err(convert::violation(
            "identifier",
            V::Required,
            "give fields or encoded",
        )),
        Some(Identifier::Fields(fields)) => {
            let gtin =
                gs1::Gtin::from_string(fields.gtin).map_err(|e| violation("fields.gtin", &e))?;
            let serial = gs1::Serial::from_string(fields.serial)
                .map_err(|e| violation("fields.serial", &e))?;
            let lot = match fields.lot {
                None => None,
                Some(text) => {
                    Some(gs1::Lot::from_string(text).map_err(|e| violation("fields.lot", &e))?)
                }
            };
            let expiry = match fields.expiry.as_deref() {
                None => None,
                Some(text) => {
                    Some(gs1::Expiry::new(text).map_err(|e| violation("fields.expiry", &e))?)
                }
            };
            Ok(Item {
                gtin_value: gtin_value(&gtin),
                gtin,
                serial,
                lot,
                expiry,
                encoded: false,
            })
        }
        Some(Identifier::Encoded(text)) => {
            if text.len() > ENCODED_LENGTH_MAX {
                return Err(convert::violation(
                    "encoded",
                    V::Length,
                    format!("{} bytes; at most {ENCODED_LENGTH_MAX}", text.len()),
                ));
            }
            let (data, _) =
                gs1::parse_any(text.as_bytes()).map_err(|e| violation("encoded", &e))?;
            let gtin = data
                .gtin()
                .cloned()
                .ok_or_else(|| convert::violation("encoded", V::Required, "no GTIN (AI 01)"))?;
            let serial = data
                .serial()
                .cloned()
                .ok_or_else(|| convert::violation("encoded", V::Required, "no serial (AI 21)"))?;
            Ok(Item {
                gtin_value: gtin_value(&gtin),
                gtin,
                serial,
                lot: data.lot().cloned(),
                expiry: data.expiry(),
                encoded: true,
            })
        }
    }
}

/// Parses the `item` of a single-pack request: required, and a malformed
/// item refuses the request naming `item.<field>` and the rule.
pub(crate) fn parse_required_item(item: Option<pb::PackIdentifier>) -> Result<Item, Status> {
    let item = item.ok_or_else(|| invalid("item", "required"))?;
    parse_item(item).map_err(|v| invalid(&format!("item.{}", v.field), v.description))
}

/// Verifies parsed items against one view of the index.
pub(crate) fn verify_parsed(
    index: &StatusIndex,
    items: &[&Item],
    purpose: Purpose,
    today: gs1::CalendarDate,
) -> Vec<Verdict> {
    let queries: Vec<Query<'_>> = items.iter().map(|item| item.query()).collect();
    let mut verdicts = Vec::with_capacity(queries.len());
    index
        .view()
        .verify_many(&queries, today, purpose, &mut verdicts);
    verdicts
}

/// Parses and verifies a batch; malformed items and items outside the
/// caller's scope are answered individually. Counts the lookups and unknown
/// serials against the caller's enumeration window.
pub(crate) fn verify_identifiers(
    index: &StatusIndex,
    identifiers: Vec<pb::PackIdentifier>,
    purpose: Purpose,
    caller: &Principal,
    access: &AccessControl,
) -> Vec<pb::VerificationResult> {
    let scoped = !caller.scope.is_unrestricted();
    let parsed: Vec<Result<Item, pb::FieldViolation>> = identifiers
        .into_iter()
        .enumerate()
        .map(|(position, identifier)| {
            let item = parse_item(identifier)?;
            if scoped && !caller.scope.covers_gtin(item.gtin.as_str()) {
                return Err(
                    caller.item_violation(&format!("items[{position}].gtin"), item.gtin.as_str())
                );
            }
            Ok(item)
        })
        .collect();
    let good: Vec<&Item> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
    let verdicts = verify_parsed(index, &good, purpose, convert::today());
    let mut verdicts = verdicts.into_iter();
    let results: Vec<pb::VerificationResult> = parsed
        .into_iter()
        .map(|item| match item {
            Ok(item) => match verdicts.next() {
                Some(verdict) => result_message(&item, &verdict),
                None => malformed(convert::violation(
                    "identifier",
                    pb::ValidationRule::Unspecified,
                    "internal: no verdict",
                )),
            },
            Err(violation) => malformed(violation),
        })
        .collect();
    publish(access, caller, count(&results));
    results
}

/// The metric label of an answered lookup.
fn label_of(verdict: &Verdict) -> crate::telemetry::VerificationResult {
    use crate::telemetry::VerificationResult as R;
    if verdict.verified {
        R::Verified
    } else if !verdict.product_known || verdict.state == PackState::Unknown {
        R::Unknown
    } else {
        R::NotVerified
    }
}

/// Counts results by label (indexed by `VerificationResult`) in the metrics
/// and against the caller's enumeration window.
fn publish(access: &AccessControl, caller: &Principal, counts: [u64; 4]) {
    use crate::telemetry::VerificationResult as R;
    let handles = crate::telemetry::handles();
    for (label, count) in [R::Verified, R::NotVerified, R::Unknown, R::Malformed]
        .into_iter()
        .zip(counts)
    {
        handles.verified(label, count);
    }
    observe(access, caller, &counts);
}

/// Counts answered lookups and unknown serials against the caller's window.
fn observe(access: &AccessControl, caller: &Principal, counts: &[u64; 4]) {
    use crate::telemetry::VerificationResult as R;
    let lookups = counts[R::Verified as usize]
        + counts[R::NotVerified as usize]
        + counts[R::Unknown as usize];
    access.observe_verifications(caller, lookups, counts[R::Unknown as usize]);
}

/// Counts results by label; answers the counts.
fn count(results: &[pb::VerificationResult]) -> [u64; 4] {
    use crate::telemetry::VerificationResult as R;
    let mut counts = [0u64; 4];
    for result in results {
        let label = match (
            &result.error,
            result.vrs.as_ref().is_some_and(|v| v.verified),
        ) {
            (Some(_), _) => R::Malformed,
            (None, true) => R::Verified,
            (None, false)
                if !result.product_known || result.state == pb::PackState::Unknown as i32 =>
            {
                R::Unknown
            }
            (None, false) => R::NotVerified,
        };
        counts[label as usize] += 1;
    }
    counts
}

fn malformed(violation: pb::FieldViolation) -> pb::VerificationResult {
    pb::VerificationResult {
        error: Some(violation),
        ..Default::default()
    }
}

pub(crate) fn state_code(state: PackState) -> pb::PackState {
    match state {
        PackState::Unknown => pb::PackState::Unknown,
        PackState::Allocated => pb::PackState::Allocated,
        PackState::Active => pb::PackState::Active,
        PackState::Decommissioned => pb::PackState::Decommissioned,
        PackState::Voided => pb::PackState::Voided,
    }
}

fn field_match(value: FieldMatch) -> pb::FieldMatch {
    match value {
        FieldMatch::Matched => pb::FieldMatch::Matched,
        FieldMatch::Mismatched => pb::FieldMatch::Mismatched,
        FieldMatch::NotProvided => pb::FieldMatch::NotProvided,
        FieldMatch::NotChecked => pb::FieldMatch::NotChecked,
    }
}

fn failure_code(value: Option<FailureReason>) -> pb::VerificationFailureReason {
    use pb::VerificationFailureReason as R;
    match value {
        None => R::Unspecified,
        Some(FailureReason::NoMatchGtinSerial) => R::NoMatchGtinSerial,
        Some(FailureReason::NoMatchGtinSerialLotExpiry) => R::NoMatchGtinSerialLotExpiry,
        Some(FailureReason::NoMatchGtinSerialLot) => R::NoMatchGtinSerialLot,
        Some(FailureReason::NoMatchGtinSerialExpiry) => R::NoMatchGtinSerialExpiry,
        Some(FailureReason::NotForRedistribution) => R::NotForRedistribution,
    }
}

fn info_code(value: Option<AdditionalInfo>) -> pb::AdditionalInfo {
    match value {
        None => pb::AdditionalInfo::Unspecified,
        Some(AdditionalInfo::Expired) => pb::AdditionalInfo::Expired,
        Some(AdditionalInfo::Recalled) => pb::AdditionalInfo::Recalled,
        Some(AdditionalInfo::Suspect) => pb::AdditionalInfo::Suspect,
        Some(AdditionalInfo::Illegitimate) => pb::AdditionalInfo::Illegitimate,
    }
}

fn alert_code(value: Option<EuAlert>) -> pb::EuAlertCode {
    match value {
        None => pb::EuAlertCode::Unspecified,
        Some(EuAlert::UnknownProduct) => pb::EuAlertCode::UnknownProduct,
        Some(EuAlert::UnknownSerial) => pb::EuAlertCode::UnknownSerial,
        Some(EuAlert::UnknownBatch) => pb::EuAlertCode::UnknownBatch,
        Some(EuAlert::BatchDoesNotMatchSerial) => pb::EuAlertCode::BatchDoesNotMatchSerial,
        Some(EuAlert::ExpiryDoesNotMatchBatch) => pb::EuAlertCode::ExpiryDoesNotMatchBatch,
    }
}

/// The VRS `data` object of a verdict.
pub(crate) fn vrs_answer(verdict: &Verdict) -> pb::VrsAnswer {
    pb::VrsAnswer {
        verified: verdict.verified,
        verification_failure_reason: failure_code(verdict.failure) as i32,
        additional_info: info_code(verdict.info) as i32,
    }
}

fn result_message(item: &Item, verdict: &Verdict) -> pb::VerificationResult {
    pb::VerificationResult {
        // Echoed only for encoded items: a client that sent fields has them.
        identifier: item.encoded.then(|| pb::PackFields {
            gtin: item.gtin.as_str().to_owned(),
            serial: item.serial.as_str().to_owned(),
            lot: item.lot.as_ref().map(|lot| lot.as_str().to_owned()),
            expiry: item.expiry.map(|expiry| expiry.to_string()),
        }),
        product_known: verdict.product_known,
        state: state_code(verdict.state) as i32,
        decommission_reason: verdict.reason.map_or(0, |reason| reason as i32),
        lot_match: field_match(verdict.lot_match) as i32,
        expiry_match: field_match(verdict.expiry_match) as i32,
        expired: verdict.expired,
        recalled: verdict.recalled,
        withdrawn: verdict.withdrawn,
        suspect: verdict.suspect,
        illegitimate: verdict.illegitimate,
        vrs: Some(vrs_answer(verdict)),
        alert: alert_code(verdict.alert) as i32,
        error: None,
    }
}

fn ready(index: &StatusIndex) -> Result<(), Status> {
    if index.is_ready() {
        Ok(())
    } else {
        Err(Status::unavailable(
            "starting: the status index is being rebuilt from storage; retry shortly",
        ))
    }
}

fn check_batch_size(items: usize) -> Result<(), Status> {
    if items > VERIFY_BATCH_ITEMS_MAX {
        return Err(invalid(
            "items",
            format!(
                "{items} items; a batch holds at most {VERIFY_BATCH_ITEMS_MAX} (max_verify_batch_items)"
            ),
        ));
    }
    Ok(())
}

fn group_status(status: &Status) -> pb::GroupStatus {
    pb::GroupStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        violations: Vec::new(),
    }
}

/// Checks a 13-digit GLN (check digit included).
pub(crate) fn gln(field: &str, text: &str) -> Result<String, String> {
    if text.len() != 13 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{field}: a GLN is 13 digits, got {text:?}"));
    }
    let expected = gs1::check_digit(&text[..12]);
    let given = text.as_bytes()[12] - b'0';
    if expected != given {
        return Err(format!(
            "{field}: check digit of GLN {text} must be {expected}"
        ));
    }
    Ok(text.to_owned())
}

/// Checks a correlation UUID: 1–64 visible ASCII characters.
pub(crate) fn corr_uuid(field: &str, text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field}: 1–64 visible ASCII characters, got {} bytes",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// Answers one batch of a VerifyStream, in the encoding it came in; a batch
/// refused as a whole gives its id and the status.
fn stream_batch(
    index: &StatusIndex,
    batch: pb::VerifyStreamRequest,
    caller: &Principal,
    access: &AccessControl,
) -> Result<pb::VerifyStreamResponse, (u64, Status)> {
    let batch_id = batch.batch_id;
    let refused = |status| (batch_id, status);
    ready(index).map_err(refused)?;
    packed::one_encoding(batch.items.len(), batch.packed_items.len()).map_err(refused)?;
    if !batch.packed_items.is_empty() {
        let (packed_results, packed_errors) =
            packed::verify(index, &batch.packed_items, caller, access).map_err(refused)?;
        return Ok(pb::VerifyStreamResponse {
            batch_id,
            packed_results,
            packed_errors,
            status: Some(pb::GroupStatus::default()),
            ..Default::default()
        });
    }
    check_batch_size(batch.items.len()).map_err(refused)?;
    access
        .admit_verifications(caller, batch.items.len())
        .map_err(refused)?;
    Ok(pb::VerifyStreamResponse {
        batch_id,
        results: verify_identifiers(index, batch.items, Purpose::Verify, caller, access),
        status: Some(pb::GroupStatus::default()),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl VerificationService for Api {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let caller = principal(&request)?;
        let index = self.issuer.index();
        ready(index)?;
        let parsed = parse_required_item(request.into_inner().item)?;
        caller.check_gtin("item.gtin", parsed.gtin.as_str())?;
        self.access.admit_verifications(&caller, 1)?;
        let verdicts = verify_parsed(index, &[&parsed], Purpose::Verify, convert::today());
        let result = verdicts
            .first()
            .map(|verdict| result_message(&parsed, verdict))
            .ok_or_else(|| Status::internal("no verdict"))?;
        publish(&self.access, &caller, count(std::slice::from_ref(&result)));
        Ok(Response::new(pb::VerifyResponse {
            result: Some(result),
        }))
    }

    async fn verify_batch(
        &self,
        request: Request<pb::VerifyBatchRequest>,
    ) -> Result<Response<pb::VerifyBatchResponse>, Status> {
        let caller = principal(&request)?;
        let index = self.issuer.index();
        ready(index)?;
        let request = request.into_inner();
        packed::one_encoding(request.items.len(), request.packed_items.len())?;
        if !request.packed_items.is_empty() {
            let (packed_results, packed_errors) =
                packed::verify(index, &request.packed_items, &caller, &self.access)?;
            return Ok(Response::new(pb::VerifyBatchResponse {
                results: Vec::new(),
                packed_results,
                packed_errors,
            }));
        }
        check_batch_size(request.items.len())?;
        self.access
            .admit_verifications(&caller, request.items.len())?;
        Ok(Response::new(pb::VerifyBatchResponse {
            results: verify_identifiers(
                index,
                request.items,
                Purpose::Verify,
                &caller,
                &self.access,
            ),
            ..Default::default()
        }))
    }

    async fn verify_stream(
        &self,
        request: Request<Streaming<pb::VerifyStreamRequest>>,
    ) -> Result<Response<ResponseStream<pb::VerifyStreamResponse>>, Status> {
        let caller = principal(&request)?;
        let access = Arc::clone(&self.access);
        let mut incoming = request.into_inner();
        let index = Arc::clone(self.issuer.index());
        let (sender, receiver) = mpsc::channel(VERIFY_STREAM_IN_FLIGHT);
        tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let batch = match next {
                    Ok(batch) => batch,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let answer = match stream_batch(&index, batch, &caller, &access) {
                    Ok(answer) => answer,
                    Err((batch_id, status)) => pb::VerifyStreamResponse {
                        batch_id,
                        status: Some(group_status(&status)),
                        ..Default::default()
                    },
                };
                if sender.send(Ok(answer)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(crate::drain::Tracked::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))))
    }

    async fn check_saleable_return(
        &self,
        request: Request<pb::CheckSaleableReturnRequest>,
    ) -> Result<Response<pb::CheckSaleableReturnResponse>, Status> {
        let caller = principal(&request)?;
        let index = self.issuer.index();
        ready(index)?;
        let mut request = request.into_inner();
        let parsed = parse_required_item(request.item.take())?;
        caller.check_gtin("item.gtin", parsed.gtin.as_str())?;
        if parsed.lot.is_none() {
            return Err(invalid("item.lot", "required for a saleable-return check"));
        }
        if parsed.expiry.is_none() {
            return Err(invalid(
                "item.expiry",
                "required for a saleable-return check",
            ));
        }
        gln("requester_gln", &request.requester_gln).map_err(Status::invalid_argument)?;
        corr_uuid("corr_uuid", &request.corr_uuid).map_err(Status::invalid_argument)?;
        caller.check_location("requester_gln", &request.requester_gln)?;
        self.access.admit_verifications(&caller, 1)?;
        let verdicts = verify_parsed(index, &[&parsed], Purpose::SaleableReturn, convert::today());
        let verdict = verdicts
            .first()
            .ok_or_else(|| Status::internal("no verdict"))?;
        let unknown = !verdict.product_known || verdict.state == verifier::PackState::Unknown;
        self.access
            .observe_verifications(&caller, 1, u64::from(unknown));
        if !verdict.product_known {
            return Err(Status::not_found(format!(
                "GTIN {} is not served here",
                parsed.gtin
            )));
        }
        Ok(Response::new(pb::CheckSaleableReturnResponse {
            verification_timestamp: Some(convert::timestamp(convert::now_micros())),
            responder_gln: self.responder_gln.clone(),
            corr_uuid: request.corr_uuid,
            data: Some(vrs_answer(verdict)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gln_check_digit() {
        assert!(gln("g", "0614141000005").is_ok());
        assert!(gln("g", "0614141000006").unwrap_err().contains("must be 5"));
        assert!(gln("g", "061414100000").is_err());
        assert!(gln("g", "06141410000a5").is_err());
    }

    #[test]
    fn corr_uuid_limits() {
        assert!(corr_uuid("c", "b1f4c0de-0000-4000-8000-000000000001").is_ok());
        assert!(corr_uuid("c", "").is_err());
        assert!(corr_uuid("c", &"x".repeat(65)).is_err());
        assert!(corr_uuid("c", "a b").is_err());
    }

    #[test]
    fn malformed_items_name_the_field_and_rule() {
        let fields = |gtin: &str, serial: &str| pb::PackIdentifier {
            identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
                gtin: gtin.to_owned(),
                serial: serial.to_owned(),
                lot: None,
                expiry: None,
            })),
        };
        let check = |identifier: pb::PackIdentifier, field: &str, rule: pb::ValidationRule| {
            let error = parse_item(identifier).unwrap_err();
            assert_eq!(
                (error.field.as_str(), error.rule()),
                (field, rule),
                "{error:?}"
            );
        };
        check(
            fields("09520123456789", "A"),
            "fields.gtin",
            pb::ValidationRule::CheckDigit,
        );
        check(
            fields("0952012345678X", "A"),
            "fields.gtin",
            pb::ValidationRule::Charset,
        );
        check(
            fields("09520123456788", "A#"),
            "fields.serial",
            pb::ValidationRule::Charset,
        );
        check(
            fields("09520123456788", ""),
            "fields.serial",
            pb::ValidationRule::Required,
        );
        check(
            pb::PackIdentifier {
                identifier: Some(pb::pack_identifier::Identifier::Encoded(
                    "(01)09520123456788".to_owned(),
                )),
            },
            "encoded",
            pb::ValidationRule::Required,
        );
        check(
            pb::PackIdentifier {
                identifier: Some(pb::pack_identifier::Identifier::Encoded("x".repeat(600))),
            },
            "encoded",
            pb::ValidationRule::Length,
        );
        check(
            pb::PackIdentifier { identifier: None },
            "identifier",
            pb::ValidationRule::Required,
        );
    }
}
