//! The body of every event the writer commits: what changed, for which GTIN,
//! by which request, principal and location, and when the client says it
//! happened. `storage` adds the sequence, the commit time and the hash chain.
//!
//! Layout (after the one-byte [`EVENT_BODY_VERSION`]): kind u8, GTIN u64,
//! request id, principal, location, line id (texts), event time u64 (0 = the
//! commit time), pool id u64, lot, expiry (texts), reason u8, reason text,
//! count u64, flag action u8, SSCC, actor, token id (texts), then the
//! serials packed as a pool chunk (one-byte length, bytes). Bodies of the
//! layout before the actor and token id ([`EVENT_BODY_VERSION_2`]) are read
//! with the principal as the actor (it was the actor then) and no token id;
//! bodies of the layout before the SSCC ([`EVENT_BODY_VERSION_1`]) also with
//! an empty SSCC; bodies written before that start with the kind (1–10) and
//! are read with their kind and GTIN only.

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::records::{decode_chunk, encode_chunk};

/// First byte of a body in this layout (no legacy body starts with it).
pub const EVENT_BODY_VERSION: u8 = 0xE3;
/// First byte of a body of the layout without the actor and token id.
pub const EVENT_BODY_VERSION_2: u8 = 0xE2;
/// First byte of a body of the layout without the SSCC.
pub const EVENT_BODY_VERSION_1: u8 = 0xE1;

/// Event kinds (the numbering of `serial.v1.EventKind`).
pub mod kind {
    /// A product was registered.
    pub const PRODUCT_ADDED: u8 = 1;
    /// A lot was registered.
    pub const LOT_ADDED: u8 = 2;
    /// A pool segment was committed (count = its serials).
    pub const POOL_ALLOCATED: u8 = 3;
    /// Serials were commissioned.
    pub const COMMISSIONED: u8 = 4;
    /// Unused serials were returned (voided).
    pub const RETURNED: u8 = 5;
    /// Packs were decommissioned.
    pub const DECOMMISSIONED: u8 = 6;
    /// Decommissions were undone.
    pub const UNDONE: u8 = 7;
    /// A lot was recalled.
    pub const LOT_RECALLED: u8 = 8;
    /// A product was withdrawn.
    pub const PRODUCT_WITHDRAWN: u8 = 9;
    /// A pack was flagged or unflagged.
    pub const PACK_FLAGGED: u8 = 10;
    /// An API token was created (token id in the event).
    pub const TOKEN_CREATED: u8 = 14;
    /// An API token was revoked (token id in the event, reason as text).
    pub const TOKEN_REVOKED: u8 = 15;
    /// An SSCC pool was allocated (count = its SSCCs).
    pub const SSCC_POOL_ALLOCATED: u8 = 11;
    /// Children were packed into the SSCC: packs of the GTIN, or (GTIN 0)
    /// the SSCCs listed as serials.
    pub const PACKED: u8 = 12;
    /// Children were unpacked from the SSCC (as for [`PACKED`]).
    pub const UNPACKED: u8 = 13;
}

/// What one event says, but its serials (see [`encode_body`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u8,
    /// GTIN as its 14-digit value (0 when none).
    pub gtin: u64,
    /// The client's request id of the change.
    pub request_id: String,
    /// Who made the change: the name of the API token that asked for it.
    pub principal: String,
    /// Where (GLN or site code).
    pub location: String,
    /// Packaging line.
    pub line_id: String,
    /// When it happened as the client reported it, µs since the epoch; 0 = the commit time.
    pub event_time_micros: u64,
    /// Pool id (pools; commissioning or returns that named a pool).
    pub pool_id: u64,
    /// Lot.
    pub lot: String,
    /// Expiry of the lot, YYMMDD.
    pub expiry: String,
    /// Decommission reason code (decommission; undo: the reason undone, 0 = any).
    pub reason: u8,
    /// Free text: recall, withdrawal or flag reason, decommission note.
    pub reason_text: String,
    /// Serials allocated (pool segments).
    pub count: u64,
    /// Flag action code (pack flags).
    pub flag_action: u8,
    /// The SSCC (18 digits): the parent of a packing or unpacking, the root
    /// of a decommission that cascaded; empty when none.
    pub sscc: String,
    /// Who at the location (operator or workstation id), as the client said.
    pub actor: String,
    /// The API token created or revoked (TOKEN_CREATED, TOKEN_REVOKED).
    pub token_id: String,
}

/// Encodes an event body with its serials.
pub fn encode_body<'a>(
    header: &EventHeader,
    serials: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut body = Encoder::default()
        .u8(EVENT_BODY_VERSION)
        .u8(header.kind)
        .u64(header.gtin)
        .text(&header.request_id)
        .text(&header.principal)
        .text(&header.location)
        .text(&header.line_id)
        .u64(header.event_time_micros)
        .u64(header.pool_id)
        .text(&header.lot)
        .text(&header.expiry)
        .u8(header.reason)
        .text(&header.reason_text)
        .u64(header.count)
        .u8(header.flag_action)
        .text(&header.sscc)
        .text(&header.actor)
        .text(&header.token_id)
        .finish();
    body.extend_from_slice(&encode_chunk(serials));
    body
}

/// Decodes an event body: its header and serials.
pub fn decode_body(body: &[u8]) -> Result<(EventHeader, Vec<String>), DecodeError> {
    let mut d = Decoder::new("event body", body);
    let first = d.u8()?;
    if ![
        EVENT_BODY_VERSION,
        EVENT_BODY_VERSION_2,
        EVENT_BODY_VERSION_1,
    ]
    .contains(&first)
    {
        // A body of the first layout: kind, GTIN, then kind-specific bytes.
        if !(kind::PRODUCT_ADDED..=kind::PACK_FLAGGED).contains(&first) {
            return Err(d.error(format!("unknown event body version {first:#04x}")));
        }
        let gtin = d.u64()?;
        return Ok((
            EventHeader {
                kind: first,
                gtin,
                ..EventHeader::default()
            },
            Vec::new(),
        ));
    }
    let mut header = EventHeader {
        kind: d.u8()?,
        gtin: d.u64()?,
        request_id: d.text()?,
        principal: d.text()?,
        location: d.text()?,
        line_id: d.text()?,
        event_time_micros: d.u64()?,
        pool_id: d.u64()?,
        lot: d.text()?,
        expiry: d.text()?,
        reason: d.u8()?,
        reason_text: d.text()?,
        count: d.u64()?,
        flag_action: d.u8()?,
        sscc: if first == EVENT_BODY_VERSION_1 {
            String::new()
        } else {
            d.text()?
        },
        actor: String::new(),
        token_id: String::new(),
    };
    if first == EVENT_BODY_VERSION {
        header.actor = d.text()?;
        header.token_id = d.text()?;
    } else {
        header.actor.clone_from(&header.principal);
    }
    let serials = decode_chunk(crate::records::RECORD_VERSION, d.rest())?;
    Ok((header, serials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_and_legacy_bodies() {
        let header = EventHeader {
            kind: kind::DECOMMISSIONED,
            gtin: 1,
            request_id: "r".into(),
            reason: 1,
            ..EventHeader::default()
        };
        let body = encode_body(&header, [b"AB".as_slice()]);
        let mut expected = vec![0xE3, 6, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'r'];
        expected.extend_from_slice(&[0; 6]); // principal, location, line
        expected.extend_from_slice(&[0; 16]); // event time, pool
        expected.extend_from_slice(&[0; 4]); // lot, expiry
        expected.extend_from_slice(&[1, 0, 0]); // reason, reason text
        expected.extend_from_slice(&[0; 9]); // count, flag action
        expected.extend_from_slice(&[0; 2]); // sscc
        expected.extend_from_slice(&[0; 4]); // actor, token id
        expected.extend_from_slice(&[2, b'A', b'B']);
        assert_eq!(body, expected);
        // The layout before the actor and token id: without their four bytes.
        let mut second = expected.clone();
        second[0] = EVENT_BODY_VERSION_2;
        second.drain(second.len() - 7..second.len() - 3);
        assert_eq!(
            decode_body(&second).unwrap(),
            (header.clone(), vec!["AB".to_owned()])
        );
        // The layout before the SSCC: also without its two bytes.
        let mut first = second.clone();
        first[0] = EVENT_BODY_VERSION_1;
        first.drain(first.len() - 5..first.len() - 3);
        assert_eq!(
            decode_body(&first).unwrap(),
            (header, vec!["AB".to_owned()])
        );
        let legacy = [&[kind::LOT_ADDED][..], &7u64.to_be_bytes(), b"LOT1"].concat();
        let (old, serials) = decode_body(&legacy).unwrap();
        assert_eq!((old.kind, old.gtin, serials.len()), (kind::LOT_ADDED, 7, 0));
        assert!(decode_body(&[0x7f]).is_err());
    }

    proptest! {
        #[test]
        fn bodies_round_trip(
            kind in 1u8..=15, gtin in 0u64..100_000_000_000_000, request_id in "[ -~]{0,64}",
            sscc in "[0-9]{0,18}",
            principal in "[ -~]{0,20}", actor in "[ -~]{0,20}", token_id in "[!-~]{0,20}", lot in "[!-~]{0,20}", event_time_micros: u64, count: u64,
            serials in proptest::collection::vec("[!-~]{1,20}", 0..20),
        ) {
            let header = EventHeader {
                kind, gtin, request_id, principal, lot, event_time_micros, count, sscc,
                actor, token_id, ..EventHeader::default()
            };
            let body = encode_body(&header, serials.iter().map(|s| s.as_bytes()));
            prop_assert_eq!(decode_body(&body).unwrap(), (header, serials));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_body(&bytes);
        }
    }
}
