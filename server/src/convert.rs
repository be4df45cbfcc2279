//! The one place where wire values become domain values: every input check of
//! the gRPC edge, and the mapping from domain errors to gRPC status codes
//! (DESIGN.md §4).

use issuer::IssuerError;
use proto::serial::v1::{FieldViolation, ValidationRule};
use tonic::Status;

/// Longest request id, line id or location accepted.
pub(crate) const IDENTIFIER_LENGTH_MAX: usize = 64;

/// Longest product name accepted.
pub(crate) const NAME_LENGTH_MAX: usize = 200;

/// Selection criteria per pool request, and the longest key and value.
pub(crate) const CRITERIA_MAX: usize = 16;
const CRITERION_KEY_LENGTH_MAX: usize = 64;
const CRITERION_VALUE_LENGTH_MAX: usize = 256;

/// Maps a domain error to its gRPC status (the table in DESIGN.md §4).
pub(crate) fn status(error: IssuerError) -> Status {
    let message = error.to_string();
    match error {
        IssuerError::InvalidArgument { .. } => Status::invalid_argument(message),
        IssuerError::NotFound(_) => Status::not_found(message),
        IssuerError::FailedPrecondition(_) => Status::failed_precondition(message),
        IssuerError::AlreadyExists(_) => Status::already_exists(message),
        IssuerError::Exhausted(_) | IssuerError::Overloaded { .. } => {
            Status::resource_exhausted(message)
        }
        IssuerError::Storage(_)
        | IssuerError::Corrupt(_)
        | IssuerError::ShuttingDown
        | IssuerError::Interrupted(_)
        | IssuerError::Starting
        | IssuerError::Index(_) => Status::unavailable(message),
    }
}

/// An INVALID_ARGUMENT naming the field and the rule.
pub(crate) fn invalid(field: &str, rule: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {rule}"))
}

pub(crate) fn gtin(field: &str, text: &str) -> Result<gs1::Gtin, Status> {
    if text.is_empty() {
        return Err(invalid(field, "required"));
    }
    gs1::Gtin::new(text).map_err(|e| invalid(field, e))
}

pub(crate) fn lot(field: &str, text: &str) -> Result<gs1::Lot, Status> {
    if text.is_empty() {
        return Err(invalid(field, "required"));
    }
    gs1::Lot::new(text).map_err(|e| invalid(field, e))
}

pub(crate) fn expiry(field: &str, text: &str) -> Result<gs1::Expiry, Status> {
    if text.is_empty() {
        return Err(invalid(field, "required"));
    }
    gs1::Expiry::new(text).map_err(|e| invalid(field, e))
}

/// A US NDC: 10 digits once hyphens are removed, and the very NDC carried
/// inside the GTIN (indicator digit, "03", the 10 NDC digits, check digit).
pub(crate) fn ndc(field: &str, text: &str, gtin: &gs1::Gtin) -> Result<String, Status> {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            field,
            format!("{text:?} is not a 10-digit NDC (hyphens allowed)"),
        ));
    }
    let inside = gtin.as_str().get(3..13).unwrap_or_default();
    if gtin.as_str().get(1..3) != Some("03") || inside != digits {
        return Err(invalid(
            field,
            format!(
                "NDC {digits} is not the one inside GTIN {gtin} (expected indicator + 03 + NDC + check digit)"
            ),
        ));
    }
    Ok(digits)
}

/// A request id, line id or location: 1–64 characters of GS1 CSET 82.
pub(crate) fn identifier(field: &str, text: &str, required: bool) -> Result<String, Status> {
    if text.is_empty() {
        return if required {
            Err(invalid(field, "required"))
        } else {
            Ok(String::new())
        };
    }
    if text.len() > IDENTIFIER_LENGTH_MAX {
        return Err(invalid(
            field,
            format!("{} characters, at most {IDENTIFIER_LENGTH_MAX}", text.len()),
        ));
    }
    if let Some((position, byte)) = text.bytes().enumerate().find(|(_, b)| !gs1::is_cset82(*b)) {
        return Err(invalid(
            field,
            format!(
                "character {:?} at position {position} is not in GS1 CSET 82",
                byte as char
            ),
        ));
    }
    Ok(text.to_owned())
}

pub(crate) fn name(field: &str, text: &str) -> Result<String, Status> {
    let count = text.chars().count();
    if count == 0 || count > NAME_LENGTH_MAX || text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("1..={NAME_LENGTH_MAX} printable characters required"),
        ));
    }
    Ok(text.to_owned())
}

pub(crate) fn selection_criteria(
    criteria: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>, Status> {
    if criteria.len() > CRITERIA_MAX {
        return Err(invalid(
            "selection_criteria",
            format!("{} entries, at most {CRITERIA_MAX}", criteria.len()),
        ));
    }
    let mut sorted: Vec<(String, String)> = criteria
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sorted.sort();
    for (key, value) in &sorted {
        let key_ok = !key.is_empty()
            && key.len() <= CRITERION_KEY_LENGTH_MAX
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !key_ok {
            return Err(invalid(
                "selection_criteria",
                format!("key {key:?} must be 1..=64 characters of [A-Za-z0-9._-]"),
            ));
        }
        if value.chars().count() > CRITERION_VALUE_LENGTH_MAX {
            return Err(invalid(
                &format!("selection_criteria[{key}]"),
                format!("value longer than {CRITERION_VALUE_LENGTH_MAX} characters"),
            ));
        }
    }
    Ok(sorted)
}

pub(crate) fn pool_id(field: &str, text: &str) -> Result<u64, Status> {
    text.parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            invalid(
                field,
                format!("{text:?} is not a pool id (a positive decimal number)"),
            )
        })
}

/// A per-item violation for bulk answers.
pub(crate) fn violation(
    field: &str,
    rule: ValidationRule,
    description: impl Into<String>,
) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        rule: rule as i32,
        description: description.into(),
    }
}

/// How far in the future a client's event time may be (clock skew).
pub(crate) const EVENT_TIME_SKEW_MICROS: u64 = 5 * 60 * 1_000_000;

/// A client-reported event time (EPCIS eventTime) in microseconds since the
/// epoch: not before the epoch, and not after now plus five minutes of skew.
pub(crate) fn event_time(
    field: &str,
    time: Option<&prost_types::Timestamp>,
) -> Result<Option<u64>, Status> {
    let Some(time) = time else {
        return Ok(None);
    };
    if time.seconds < 0 || !(0..1_000_000_000).contains(&time.nanos) {
        return Err(invalid(
            field,
            format!(
                "{}s {}ns is not a time after 1970-01-01T00:00:00Z",
                time.seconds, time.nanos
            ),
        ));
    }
    let micros = micros_of(time);
    let now = now_micros();
    if micros > now.saturating_add(EVENT_TIME_SKEW_MICROS) {
        return Err(invalid(
            field,
            format!(
                "{} s after the server's clock; at most 300 s of clock skew is allowed",
                (micros - now) / 1_000_000
            ),
        ));
    }
    Ok(Some(micros))
}

/// The server clock: microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A protobuf timestamp as microseconds since the epoch (times before the
/// epoch count as the epoch).
pub(crate) fn micros_of(time: &prost_types::Timestamp) -> u64 {
    (time.seconds.max(0) as u64)
        .saturating_mul(1_000_000)
        .saturating_add(time.nanos.max(0) as u64 / 1000)
}

/// Microseconds since the epoch as a protobuf timestamp.
pub(crate) fn timestamp(micros: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from((micros % 1_000_000) * 1000).unwrap_or(0),
    }
}

/// Today's date (UTC), the reference for resolving and comparing expiries.
pub(crate) fn today() -> gs1::CalendarDate {
    verifier::today_utc()
}

/// The wire form of an expiry: as encoded plus the effective ISO date.
pub(crate) fn expiry_date(yymmdd: &str) -> Option<proto::serial::v1::ExpiryDate> {
    let expiry = gs1::Expiry::new(yymmdd).ok()?;
    Some(proto::serial::v1::ExpiryDate {
        yymmdd: yymmdd.to_owned(),
        iso_date: expiry.effective_date(today()).to_string(),
    })
}
