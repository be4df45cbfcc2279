//! Rendering events for export: EPCIS 2.0 JSON-LD (DOMAIN.md §7) and JSON
//! Lines in the proto3 JSON mapping. Pure functions over `pb::Event`; the
//! Export RPC (events.rs) streams what they produce.
//!
//! EPCIS mapping:
//! - commissioning: `ObjectEvent` ADD, bizStep `commissioning`, disposition
//!   `active`, lot and expiry in `ilmd`;
//! - decommissioning: `ObjectEvent` DELETE, bizStep and disposition from the
//!   reason (dispensed: `dispensing`/`dispensed`, destroyed:
//!   `destroying`/`destroyed`, stolen: `decommissioning`/`stolen`, the
//!   others `decommissioning`/`inactive`), the reason in `serialsvc:reason`;
//! - undo: `ObjectEvent` OBSERVE, disposition `active`, bizStep
//!   `urn:serialsvc:bizstep:undo`;
//! - returns of unused serials: `ObjectEvent` DELETE, `decommissioning`/`inactive`;
//! - lot recall: `ObjectEvent` OBSERVE on the lot's LGTIN class, disposition `recalled`;
//! - product withdrawal: `ObjectEvent` OBSERVE on the product's class,
//!   disposition `urn:serialsvc:disp:withdrawn`;
//! - pack flags: `ObjectEvent` OBSERVE, bizStep `inspecting`, disposition
//!   `non_sellable_other` (set) or `active` (cleared);
//! - packing: `AggregationEvent` ADD, bizStep `packing`, `parentID` the
//!   SSCC's EPC URI, `childEPCs` the packs' SGTIN or the cases' SSCC URIs;
//!   unpacking: the same with DELETE and `unpacking`;
//! - a decommission that cascaded from an SSCC carries it in
//!   `serialsvc:sscc`.
//!
//! Master data, pool allocation and access events have no EPCIS form and are
//! left out of EPCIS documents (JSON Lines has every kind). Values outside
//! the CBV are URIs under `urn:serialsvc:`; extension fields use the
//! `serialsvc:` prefix, declared in the document's `@context`.

use proto::serial::v1 as pb;
use serde_json::{Map, Value, json};

/// The EPCIS 2.0 JSON-LD context.
pub(crate) const EPCIS_CONTEXT: &str =
    "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
/// Namespace of this service's extension fields and vocabulary.
pub(crate) const NAMESPACE: &str = "urn:serialsvc:epcis:";

/// The document's text before the first event.
pub(crate) fn document_start(creation_micros: u64) -> String {
    let head = json!({
        "@context": [EPCIS_CONTEXT, {"serialsvc": NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": crate::vrs::rfc3339_millis(creation_micros),
    });
    let mut text = head.to_string();
    text.pop(); // the closing brace: the body follows
    text.push_str(r#","epcisBody":{"eventList":["#);
    text
}

/// The document's text after the last event.
pub(crate) const DOCUMENT_END: &str = "]}}";

/// `urn:epc:id:sgtin:…` of a GTIN-14 and serial, split at the company prefix.
fn sgtin(gtin: &str, serial: &str, prefix_length: u8) -> Option<String> {
    let data = gs1::Gs1Data::new()
        .with_gtin(gs1::Gtin::new(gtin).ok()?)
        .with_serial(gs1::Serial::new(serial).ok()?);
    gs1::format_epc_uri(
        &data,
        gs1::CompanyPrefixLength::new(usize::from(prefix_length)).ok()?,
    )
    .ok()
}

/// The EPC class (`urn:epc:class:lgtin:` with a lot, `urn:epc:idpat:sgtin:`
/// without) of a GTIN-14.
fn class(gtin: &str, lot: Option<&str>, prefix_length: u8) -> Option<String> {
    let length = usize::from(prefix_length);
    if gtin.len() != 14 || !(6..=12).contains(&length) {
        return None;
    }
    let (indicator, rest) = gtin.split_at(1);
    let prefix = &rest[..length];
    let reference = format!("{indicator}{}", &rest[length..12]); // without the check digit
    Some(match lot {
        Some(lot) => format!(
            "urn:epc:class:lgtin:{prefix}.{reference}.{}",
            percent_encoding::utf8_percent_encode(lot, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("urn:epc:idpat:sgtin:{prefix}.{reference}.*"),
    })
}

/// `urn:epc:id:sscc:…` of an 18-digit SSCC, split at the company prefix.
fn sscc_uri(sscc: &str, prefix_length: u8) -> Option<String> {
    let data = gs1::Gs1Data::new().with_sscc(gs1::Sscc::new(sscc).ok()?);
    gs1::format_epc_uri(
        &data,
        gs1::CompanyPrefixLength::new(usize::from(prefix_length)).ok()?,
    )
    .ok()
}

/// A location as an EPCIS read point: a GLN as its GS1 Digital Link URI,
/// anything else under this service's namespace.
fn read_point(location: &str) -> Option<Value> {
    if location.is_empty() {
        return None;
    }
    let id = if location.len() == 13 && location.bytes().all(|b| b.is_ascii_digit()) {
        format!("https://id.gs1.org/414/{location}")
    } else {
        format!(
            "urn:serialsvc:location:{}",
            percent_encoding::utf8_percent_encode(location, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    Some(json!({ "id": id }))
}

fn reason_name(code: i32) -> &'static str {
    match pb::DecommissionReason::try_from(code) {
        Ok(pb::DecommissionReason::Dispensed) => "dispensed",
        Ok(pb::DecommissionReason::Destroyed) => "destroyed",
        Ok(pb::DecommissionReason::Exported) => "exported",
        Ok(pb::DecommissionReason::Stolen) => "stolen",
        Ok(pb::DecommissionReason::Sample) => "sample",
        Ok(pb::DecommissionReason::FreeSample) => "free-sample",
        Ok(pb::DecommissionReason::Locked) => "locked",
        Ok(pb::DecommissionReason::CheckedOut) => "checked-out",
        _ => "unspecified",
    }
}

fn time_micros(time: Option<&prost_types::Timestamp>) -> u64 {
    time.map_or(0, crate::convert::micros_of)
}

/// One event as an EPCIS 2.0 JSON-LD event, or `None` for kinds with no
/// EPCIS form (and for events that name no object). `prefix_length` is the
/// GTIN's company prefix length (`None` when the event has no GTIN),
/// `ssccs` the company prefix lengths of the SSCCs it names.
pub(crate) fn epcis_event(
    event: &pb::Event,
    prefix_length: Option<u8>,
    ssccs: &std::collections::HashMap<String, u8>,
) -> Option<Value> {
    use pb::EventKind as K;
    let kind = K::try_from(event.kind).ok()?;
    if matches!(kind, K::Packed | K::Unpacked) {
        return aggregation_event(event, prefix_length, ssccs);
    }
    let prefix_length = prefix_length?;
    if event.serials.is_empty() && !matches!(kind, K::LotRecalled | K::ProductWithdrawn) {
        return None;
    }
    let epcs = || -> Value {
        Value::Array(
            event
                .serials
                .iter()
                .filter_map(|serial| sgtin(&event.gtin, serial, prefix_length))
                .map(Value::String)
                .collect(),
        )
    };
    let mut out = event_head("ObjectEvent", event);
    let (action, biz_step, disposition) = match kind {
        K::Commissioned => {
            out.insert("epcList".into(), epcs());
            let mut ilmd = Map::new();
            ilmd.insert("cbvmda:lotNumber".into(), json!(event.lot));
            if let Some(expiry) = &event.expiry {
                ilmd.insert("cbvmda:itemExpirationDate".into(), json!(expiry.iso_date));
            }
            out.insert("ilmd".into(), Value::Object(ilmd));
            ("ADD", "commissioning".to_owned(), "active".to_owned())
        }
        K::Decommissioned => {
            out.insert("epcList".into(), epcs());
            out.insert("serialsvc:reason".into(), json!(reason_name(event.reason)));
            let (step, disposition) = match pb::DecommissionReason::try_from(event.reason) {
                Ok(pb::DecommissionReason::Dispensed) => ("dispensing", "dispensed"),
                Ok(pb::DecommissionReason::Destroyed) => ("destroying", "destroyed"),
                Ok(pb::DecommissionReason::Stolen) => ("decommissioning", "stolen"),
                _ => ("decommissioning", "inactive"),
            };
            ("DELETE", step.to_owned(), disposition.to_owned())
        }
        K::Undone => {
            out.insert("epcList".into(), epcs());
            (
                "OBSERVE",
                "urn:serialsvc:bizstep:undo".to_owned(),
                "active".to_owned(),
            )
        }
        K::Returned => {
            out.insert("epcList".into(), epcs());
            out.insert("serialsvc:reason".into(), json!("returned-unused"));
            (
                "DELETE",
                "decommissioning".to_owned(),
                "inactive".to_owned(),
            )
        }
        K::LotRecalled => {
            let class = class(&event.gtin, Some(&event.lot), prefix_length)?;
            out.insert("quantityList".into(), json!([{ "epcClass": class }]));
            ("OBSERVE", "holding".to_owned(), "recalled".to_owned())
        }
        K::ProductWithdrawn => {
            let class = class(&event.gtin, None, prefix_length)?;
            out.insert("quantityList".into(), json!([{ "epcClass": class }]));
            (
                "OBSERVE",
                "holding".to_owned(),
                "urn:serialsvc:disp:withdrawn".to_owned(),
            )
        }
        K::PackFlagged => {
            out.insert("epcList".into(), epcs());
            let cleared = event.flag_action == pb::PackFlagAction::Clear as i32;
            let disposition = if cleared {
                "active"
            } else {
                "non_sellable_other"
            };
            ("OBSERVE", "inspecting".to_owned(), disposition.to_owned())
        }
        _ => return None,
    };
    out.insert("action".into(), json!(action));
    out.insert("bizStep".into(), json!(biz_step));
    out.insert("disposition".into(), json!(disposition));
    if let Some(point) = read_point(&event.location) {
        out.insert("readPoint".into(), point);
    }
    if !event.request_id.is_empty() {
        out.insert("serialsvc:requestID".into(), json!(event.request_id));
    }
    if !event.actor.is_empty() {
        out.insert("serialsvc:actor".into(), json!(event.actor));
    }
    if !event.reason_text.is_empty() {
        out.insert("serialsvc:note".into(), json!(event.reason_text));
    }
    if !event.sscc.is_empty() {
        out.insert("serialsvc:sscc".into(), json!(event.sscc));
    }
    Some(Value::Object(out))
}

/// The fields every EPCIS event starts with: type, times, time zone, id.
fn event_head(kind: &str, event: &pb::Event) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    out.insert(
        "eventTime".into(),
        json!(crate::vrs::rfc3339_millis(time_micros(
            event.event_time.as_ref()
        ))),
    );
    out.insert(
        "recordTime".into(),
        json!(crate::vrs::rfc3339_millis(time_micros(event.time.as_ref()))),
    );
    out.insert("eventTimeZoneOffset".into(), json!("+00:00"));
    out.insert(
        "eventID".into(),
        json!(format!("{NAMESPACE}event:{}", event.sequence)),
    );
    out
}

/// A packing or unpacking as an EPCIS `AggregationEvent`.
fn aggregation_event(
    event: &pb::Event,
    prefix_length: Option<u8>,
    ssccs: &std::collections::HashMap<String, u8>,
) -> Option<Value> {
    let parent = sscc_uri(&event.sscc, *ssccs.get(&event.sscc)?)?;
    let children: Vec<Value> = event
        .children
        .iter()
        .filter_map(|child| match &child.child {
            Some(pb::aggregation_child::Child::Sscc(sscc)) => sscc_uri(sscc, *ssccs.get(sscc)?),
            Some(pb::aggregation_child::Child::Pack(pb::PackIdentifier {
                identifier: Some(pb::pack_identifier::Identifier::Fields(fields)),
            })) => sgtin(&fields.gtin, &fields.serial, prefix_length?),
            _ => None,
        })
        .map(Value::String)
        .collect();
    if children.is_empty() {
        return None;
    }
    let packing = event.kind == pb::EventKind::Packed as i32;
    let mut out = event_head("AggregationEvent", event);
    out.insert("parentID".into(), json!(parent));
    out.insert("childEPCs".into(), Value::Array(children));
    out.insert(
        "action".into(),
        json!(if packing { "ADD" } else { "DELETE" }),
    );
    out.insert(
        "bizStep".into(),
        json!(if packing { "packing" } else { "unpacking" }),
    );
    if let Some(point) = read_point(&event.location) {
        out.insert("readPoint".into(), point);
    }
    if !event.request_id.is_empty() {
        out.insert("serialsvc:requestID".into(), json!(event.request_id));
    }
    if !event.actor.is_empty() {
        out.insert("serialsvc:actor".into(), json!(event.actor));
    }
    Some(Value::Object(out))
}

/// One event as a JSON object in the proto3 JSON mapping (lowerCamelCase
/// names, 64-bit integers as strings, enums by name, timestamps in RFC 3339,
/// bytes in base64, default values left out).
pub(crate) fn jsonl_event(event: &pb::Event) -> Value {
    let mut out = Map::new();
    let mut text = |name: &str, value: &str| {
        if !value.is_empty() {
            out.insert(name.into(), json!(value));
        }
    };
    text("principal", &event.principal);
    text("gtin", &event.gtin);
    text("lot", &event.lot);
    text("reasonText", &event.reason_text);
    text("poolId", &event.pool_id);
    text("requestId", &event.request_id);
    text("location", &event.location);
    text("actor", &event.actor);
    text("lineId", &event.line_id);
    text("sscc", &event.sscc);
    text("tokenId", &event.token_id);
    out.insert("sequence".into(), json!(event.sequence.to_string()));
    for (name, time) in [("time", &event.time), ("eventTime", &event.event_time)] {
        if let Some(time) = time {
            out.insert(
                name.into(),
                json!(crate::vrs::rfc3339_millis(time_micros(Some(time)))),
            );
        }
    }
    if let Ok(kind) = pb::EventKind::try_from(event.kind) {
        out.insert("kind".into(), json!(kind.as_str_name()));
    }
    if !event.serials.is_empty() {
        out.insert("serials".into(), json!(event.serials));
    }
    let children: Vec<Value> = event
        .children
        .iter()
        .filter_map(|c| match &c.child {
            Some(pb::aggregation_child::Child::Sscc(sscc)) => Some(json!({ "sscc": sscc })),
            Some(pb::aggregation_child::Child::Pack(pb::PackIdentifier {
                identifier: Some(pb::pack_identifier::Identifier::Fields(fields)),
            })) => Some(json!({
                "pack": { "fields": { "gtin": fields.gtin, "serial": fields.serial } }
            })),
            _ => None,
        })
        .collect();
    if !children.is_empty() {
        out.insert("children".into(), Value::Array(children));
    }
    if let Some(expiry) = &event.expiry {
        out.insert(
            "expiry".into(),
            json!({ "yymmdd": expiry.yymmdd, "isoDate": expiry.iso_date }),
        );
    }
    if event.reason != 0
        && let Ok(reason) = pb::DecommissionReason::try_from(event.reason)
    {
        out.insert("reason".into(), json!(reason.as_str_name()));
    }
    if event.flag_action != 0
        && let Ok(action) = pb::PackFlagAction::try_from(event.flag_action)
    {
        out.insert("flagAction".into(), json!(action.as_str_name()));
    }
    if event.count != 0 {
        out.insert("count".into(), json!(event.count.to_string()));
    }
    if !event.chain_hash.is_empty() {
        use base64::Engine;
        out.insert(
            "chainHash".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&event.chain_hash)),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epc_uris_and_classes_split_at_the_company_prefix() {
        assert_eq!(
            sgtin("09520123456788", "ABC/1", 7).as_deref(),
            Some("urn:epc:id:sgtin:9520123.045678.ABC%2F1")
        );
        assert_eq!(
            class("09520123456788", Some("L 1"), 7).as_deref(),
            Some("urn:epc:class:lgtin:9520123.045678.L%201")
        );
        assert_eq!(
            class("09520123456788", None, 7).as_deref(),
            Some("urn:epc:idpat:sgtin:9520123.045678.*")
        );
        assert_eq!(class("123", None, 7), None);
    }

    #[test]
    fn a_document_with_no_events_is_json() {
        let text = format!("{}{DOCUMENT_END}", document_start(0));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "EPCISDocument");
        assert_eq!(value["epcisBody"]["eventList"], json!([]));
    }
}
