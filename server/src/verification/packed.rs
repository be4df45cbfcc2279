//! Verification batches in the packed encoding (`packed_items` →
//! `packed_results` + `packed_errors`): the fields of each item are
//! validated where they lie in the request's bytes, and each answer is 8
//! bytes, so a batch costs no allocation per item.

use proto::packed::{self, PackedItem, PackedResult, flag};
use proto::serial::v1 as pb;
use tonic::Status;
use verifier::{Given, Purpose, Query, StatusIndex, Verdict};

use super::{VERIFY_BATCH_ITEMS_MAX, check_batch_size, state_code, violation};
use crate::access::{AccessControl, Principal};
use crate::convert::{self, invalid};

/// A packed batch's answer: the results (8 bytes per item) and the errors of
/// the malformed items.
pub(crate) type Answer = (Vec<u8>, Vec<pb::PackedItemError>);

/// Answers a packed batch: frames it (refusing a batch that ends inside an
/// item or holds too many items), admits its items against the caller's
/// limits, then validates and verifies them.
pub(crate) fn verify(
    index: &StatusIndex,
    bytes: &[u8],
    caller: &Principal,
    access: &AccessControl,
) -> Result<Answer, Status> {
    let items = packed::decode_items(bytes, VERIFY_BATCH_ITEMS_MAX)
        .map_err(|truncated| invalid("packed_items", truncated))?;
    check_batch_size(items.len())?;
    access.admit_verifications(caller, items.len())?;
    Ok(answer(index, &items, caller, access))
}

/// Refuses a request that gives both encodings.
pub(crate) fn one_encoding(items: usize, packed_bytes: usize) -> Result<(), Status> {
    if items > 0 && packed_bytes > 0 {
        return Err(invalid(
            "packed_items",
            "give items or packed_items, not both",
        ));
    }
    Ok(())
}

/// The GTIN of the item before, validated and scope-checked once for a run
/// of items of one product.
struct LastGtin<'a> {
    bytes: &'a [u8],
    value: Result<u64, pb::FieldViolation>,
}

/// Validates an item's fields into a query; a broken rule names the field
/// ("gtin", "serial", "lot", "expiry").
fn query<'a>(
    item: &PackedItem<'a>,
    last: &mut Option<LastGtin<'a>>,
    caller: &Principal,
) -> Result<Query<'a>, pb::FieldViolation> {
    let gtin = match last {
        Some(last) if last.bytes == item.gtin => last.value.clone()?,
        _ => {
            let value = gtin_value(item.gtin, caller);
            let result = value.clone();
            *last = Some(LastGtin {
                bytes: item.gtin,
                value,
            });
            result?
        }
    };
    let serial = gs1::text_from_bytes(item.serial)
        .and_then(|text| gs1::Serial::check(text).map(|()| text))
        .map_err(|e| violation("serial", &e))?;
    let lot = match item.lot {
        None => None,
        Some(bytes) => Some(
            gs1::text_from_bytes(bytes)
                .and_then(|text| gs1::Lot::check(text).map(|()| text))
                .map_err(|e| violation("lot", &e))?,
        ),
    };
    let expiry = match item.expiry {
        None => None,
        Some(bytes) => Some(
            gs1::text_from_bytes(bytes)
                .and_then(gs1::Expiry::new)
                .map_err(|e| violation("expiry", &e))?,
        ),
    };
    Ok(Query {
        gtin,
        serial: serial.as_bytes(),
        given: Given { lot, expiry },
    })
}

fn gtin_value(bytes: &[u8], caller: &Principal) -> Result<u64, pb::FieldViolation> {
    let text = gs1::text_from_bytes(bytes).map_err(|e| violation("gtin", &e))?;
    let value = gs1::Gtin::check_value(text).map_err(|e| violation("gtin", &e))?;
    if !caller.scope.is_unrestricted() && !caller.scope.covers_gtin(text) {
        return Err(caller.item_violation("gtin", text));
    }
    Ok(value)
}

/// The 8-byte record of a verdict.
pub(crate) fn result_of(verdict: &Verdict) -> PackedResult {
    let mut flags = 0;
    for (set, bit) in [
        (verdict.product_known, flag::PRODUCT_KNOWN),
        (verdict.expired, flag::EXPIRED),
        (verdict.recalled, flag::RECALLED),
        (verdict.withdrawn, flag::WITHDRAWN),
        (verdict.suspect, flag::SUSPECT),
        (verdict.illegitimate, flag::ILLEGITIMATE),
        (verdict.verified, flag::VERIFIED),
    ] {
        if set {
            flags |= bit;
        }
    }
    // Every enum of the contract has fewer than 256 values.
    let byte = |value: i32| u8::try_from(value).unwrap_or(u8::MAX);
    PackedResult {
        state: byte(state_code(verdict.state) as i32),
        decommission_reason: byte(verdict.reason.map_or(0, |reason| reason as i32)),
        lot_match: byte(super::field_match(verdict.lot_match) as i32),
        expiry_match: byte(super::field_match(verdict.expiry_match) as i32),
        flags,
        failure_reason: byte(super::failure_code(verdict.failure) as i32),
        additional_info: byte(super::info_code(verdict.info) as i32),
        alert: byte(super::alert_code(verdict.alert) as i32),
    }
}

/// Validates and verifies framed items against one view of the index;
/// counts the answers in the metrics and the caller's enumeration window.
fn answer(
    index: &StatusIndex,
    items: &[PackedItem<'_>],
    caller: &Principal,
    access: &AccessControl,
) -> Answer {
    let mut last = None;
    let mut queries = Vec::with_capacity(items.len());
    // The position of each query's item.
    let mut positions = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (position, item) in items.iter().enumerate() {
        match query(item, &mut last, caller) {
            Ok(query) => {
                queries.push(query);
                positions.push(position);
            }
            Err(violation) => errors.push(pb::PackedItemError {
                index: u32::try_from(position).unwrap_or(u32::MAX),
                violation: Some(violation),
            }),
        }
    }
    let mut verdicts = Vec::with_capacity(queries.len());
    index
        .view()
        .verify_many(&queries, convert::today(), Purpose::Verify, &mut verdicts);
    let mut counts = [0u64; 4];
    counts[crate::telemetry::VerificationResult::Malformed as usize] = errors.len() as u64;
    let mut results = vec![0u8; items.len() * packed::RESULT_BYTES];
    let mut put = |position: usize, result: PackedResult| {
        let at = position * packed::RESULT_BYTES;
        results[at..at + packed::RESULT_BYTES].copy_from_slice(&result.to_bytes());
    };
    for error in &errors {
        put(error.index as usize, PackedResult::MALFORMED);
    }
    for (&position, verdict) in positions.iter().zip(&verdicts) {
        counts[super::label_of(verdict) as usize] += 1;
        put(position, result_of(verdict));
    }
    super::publish(access, caller, counts);
    (results, errors)
}
