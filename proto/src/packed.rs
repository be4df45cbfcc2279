//! The packed encoding of verification batches (`packed_items`,
//! `packed_results`; the layout is documented in
//! `serial/v1/verification.proto`).
//!
//! This is framing only: it cuts the bytes into items and results. It does
//! not judge whether a GTIN's check digit is right or a serial is CSET 82;
//! the server validates every field it reads, as for the field encoding.

/// Bytes of a GTIN-14 in an item.
pub const GTIN_BYTES: usize = 14;

/// Bytes of an expiry in an item (YYMMDD).
pub const EXPIRY_BYTES: usize = 6;

/// The expiry bytes that say "expiry not given".
pub const NO_EXPIRY: &[u8; EXPIRY_BYTES] = b"000000";

/// Bytes of one packed result.
pub const RESULT_BYTES: usize = 8;

/// Fewest bytes an item takes: GTIN, serial length, one serial byte, lot
/// length, expiry.
pub const ITEM_BYTES_MIN: usize = GTIN_BYTES + 1 + 1 + 1 + EXPIRY_BYTES;

/// One item as framed: the raw bytes of each field, not yet validated.
/// A serial or lot length outside its rule is kept as sent, for the server
/// to refuse with the field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedItem<'a> {
    /// 14 bytes, meant to be the GTIN-14's digits.
    pub gtin: &'a [u8],
    /// The serial's bytes (length as sent, 0–255).
    pub serial: &'a [u8],
    /// The lot's bytes; `None` when the length byte was 0.
    pub lot: Option<&'a [u8]>,
    /// 6 bytes, meant to be YYMMDD; `None` when `000000`.
    pub expiry: Option<&'a [u8]>,
}

/// A batch that ends inside an item: the byte offset where the item began
/// and how many items were complete before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// Offset of the incomplete item's first byte.
    pub offset: usize,
    /// Items framed before it.
    pub items: usize,
}

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the batch ends inside item {} (which begins at byte {})",
            self.items, self.offset
        )
    }
}

/// Appends one item. `lot` and `expiry` are left out with `None`.
///
/// # Panics
/// When `gtin` is not 14 bytes, `expiry` not 6, or the serial or lot is
/// longer than 255 bytes: a caller's defect, never input from the wire.
pub fn encode_item(
    out: &mut Vec<u8>,
    gtin: &str,
    serial: &str,
    lot: Option<&str>,
    expiry: Option<&str>,
) {
    assert_eq!(gtin.len(), GTIN_BYTES, "a packed GTIN is 14 digits");
    out.extend_from_slice(gtin.as_bytes());
    push_text(out, serial.as_bytes());
    push_text(out, lot.unwrap_or("").as_bytes());
    match expiry {
        Some(expiry) => {
            assert_eq!(expiry.len(), EXPIRY_BYTES, "a packed expiry is YYMMDD");
            out.extend_from_slice(expiry.as_bytes());
        }
        None => out.extend_from_slice(NO_EXPIRY),
    }
}

fn push_text(out: &mut Vec<u8>, text: &[u8]) {
    let length = u8::try_from(text.len()).expect("a packed serial or lot is at most 255 bytes");
    out.push(length);
    out.extend_from_slice(text);
}

/// Cuts a batch into items, in order. Stops at `limit` items plus one, so a
/// caller can tell "too many" without framing a huge batch.
pub fn decode_items(bytes: &[u8], limit: usize) -> Result<Vec<PackedItem<'_>>, Truncated> {
    let mut decoded = Vec::with_capacity((bytes.len() / ITEM_BYTES_MIN).min(limit + 1));
    for item in items(bytes).take(limit.saturating_add(1)) {
        decoded.push(item?);
    }
    Ok(decoded)
}

/// The items of a batch, one by one, without collecting them; after a
/// [`Truncated`] it yields nothing more.
pub fn items(bytes: &[u8]) -> Items<'_> {
    Items {
        bytes,
        offset: 0,
        count: 0,
    }
}

/// The iterator of [`items`].
#[derive(Debug, Clone)]
pub struct Items<'a> {
    bytes: &'a [u8],
    offset: usize,
    count: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<PackedItem<'a>, Truncated>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.offset..).filter(|r| !r.is_empty())?;
        match decode_item(rest) {
            Some((item, tail)) => {
                self.offset = self.bytes.len() - tail.len();
                self.count += 1;
                Some(Ok(item))
            }
            None => {
                let truncated = Truncated {
                    offset: self.offset,
                    items: self.count,
                };
                self.offset = self.bytes.len();
                Some(Err(truncated))
            }
        }
    }
}

fn decode_item(bytes: &[u8]) -> Option<(PackedItem<'_>, &[u8])> {
    let (gtin, rest) = bytes.split_at_checked(GTIN_BYTES)?;
    let (&serial_length, rest) = rest.split_first()?;
    let (serial, rest) = rest.split_at_checked(usize::from(serial_length))?;
    let (&lot_length, rest) = rest.split_first()?;
    let (lot, rest) = rest.split_at_checked(usize::from(lot_length))?;
    let (expiry, rest) = rest.split_at_checked(EXPIRY_BYTES)?;
    Some((
        PackedItem {
            gtin,
            serial,
            lot: (lot_length > 0).then_some(lot),
            expiry: (expiry != NO_EXPIRY).then_some(expiry),
        },
        rest,
    ))
}

/// Flag bits of byte 4 of a result.
pub mod flag {
    /// The GTIN is a registered product.
    pub const PRODUCT_KNOWN: u8 = 1 << 0;
    /// The effective expiry of record is past.
    pub const EXPIRED: u8 = 1 << 1;
    /// The lot is recalled.
    pub const RECALLED: u8 = 1 << 2;
    /// The product is withdrawn.
    pub const WITHDRAWN: u8 = 1 << 3;
    /// Flagged suspect.
    pub const SUSPECT: u8 = 1 << 4;
    /// Flagged illegitimate.
    pub const ILLEGITIMATE: u8 = 1 << 5;
    /// VRS `verified`.
    pub const VERIFIED: u8 = 1 << 6;
    /// The item is malformed; its error is in `packed_errors`.
    pub const MALFORMED: u8 = 1 << 7;
}

/// One result: the enum values of `VerificationResult`'s fields and the
/// flag bits of [`flag`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PackedResult {
    /// `PackState` value.
    pub state: u8,
    /// `DecommissionReason` value.
    pub decommission_reason: u8,
    /// `FieldMatch` value of the lot.
    pub lot_match: u8,
    /// `FieldMatch` value of the expiry.
    pub expiry_match: u8,
    /// Bits of [`flag`].
    pub flags: u8,
    /// `VerificationFailureReason` value.
    pub failure_reason: u8,
    /// `AdditionalInfo` value.
    pub additional_info: u8,
    /// `EuAlertCode` value.
    pub alert: u8,
}

impl PackedResult {
    /// The record of a malformed item.
    pub const MALFORMED: Self = Self {
        state: 0,
        decommission_reason: 0,
        lot_match: 0,
        expiry_match: 0,
        flags: flag::MALFORMED,
        failure_reason: 0,
        additional_info: 0,
        alert: 0,
    };

    /// The 8 bytes on the wire.
    pub fn to_bytes(self) -> [u8; RESULT_BYTES] {
        [
            self.state,
            self.decommission_reason,
            self.lot_match,
            self.expiry_match,
            self.flags,
            self.failure_reason,
            self.additional_info,
            self.alert,
        ]
    }

    /// Reads 8 bytes.
    pub fn from_bytes(bytes: [u8; RESULT_BYTES]) -> Self {
        let [
            state,
            decommission_reason,
            lot_match,
            expiry_match,
            flags,
            failure_reason,
            additional_info,
            alert,
        ] = bytes;
        Self {
            state,
            decommission_reason,
            lot_match,
            expiry_match,
            flags,
            failure_reason,
            additional_info,
            alert,
        }
    }

    /// Whether a flag bit is set.
    pub fn has(self, bit: u8) -> bool {
        self.flags & bit != 0
    }
}

/// Reads `packed_results`: `None` when its length is not a whole number of
/// records.
pub fn decode_results(bytes: &[u8]) -> Option<Vec<PackedResult>> {
    if !bytes.len().is_multiple_of(RESULT_BYTES) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(RESULT_BYTES)
            .map(|record| {
                let mut array = [0u8; RESULT_BYTES];
                array.copy_from_slice(record);
                PackedResult::from_bytes(array)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_item_with_and_without_lot_and_expiry() {
        let mut bytes = Vec::new();
        encode_item(
            &mut bytes,
            "09520123456788",
            "ABC123",
            Some("L1"),
            Some("281231"),
        );
        encode_item(&mut bytes, "09520123456788", "X", None, None);
        assert_eq!(
            &bytes[..14 + 1 + 6 + 1 + 2 + 6],
            b"09520123456788\x06ABC123\x02L1281231"
        );
        let items = decode_items(&bytes, 10).unwrap();
        assert_eq!(
            items,
            vec![
                PackedItem {
                    gtin: b"09520123456788",
                    serial: b"ABC123",
                    lot: Some(b"L1"),
                    expiry: Some(b"281231"),
                },
                PackedItem {
                    gtin: b"09520123456788",
                    serial: b"X",
                    lot: None,
                    expiry: None,
                },
            ]
        );
    }

    #[test]
    fn a_batch_ending_inside_an_item_names_where() {
        let mut bytes = Vec::new();
        encode_item(&mut bytes, "09520123456788", "ABC", None, None);
        let first = bytes.len();
        encode_item(&mut bytes, "09520123456788", "DEF", None, None);
        bytes.pop();
        assert_eq!(
            decode_items(&bytes, 10),
            Err(Truncated {
                offset: first,
                items: 1
            })
        );
        assert!(
            decode_items(&bytes, 10)
                .unwrap_err()
                .to_string()
                .contains("item 1")
        );
    }

    #[test]
    fn framing_stops_one_past_the_limit() {
        let mut bytes = Vec::new();
        for _ in 0..10 {
            encode_item(&mut bytes, "09520123456788", "ABC", None, None);
        }
        assert_eq!(decode_items(&bytes, 3).unwrap().len(), 4);
        assert_eq!(decode_items(&bytes, 10).unwrap().len(), 10);
        assert_eq!(decode_items(&[], 10).unwrap().len(), 0);
    }

    #[test]
    fn results_have_a_fixed_layout() {
        let result = PackedResult {
            state: 2,
            decommission_reason: 0,
            lot_match: 1,
            expiry_match: 1,
            flags: flag::PRODUCT_KNOWN | flag::VERIFIED,
            failure_reason: 0,
            additional_info: 0,
            alert: 0,
        };
        assert_eq!(result.to_bytes(), [2, 0, 1, 1, 0b0100_0001, 0, 0, 0]);
        assert!(result.has(flag::VERIFIED) && !result.has(flag::MALFORMED));
        assert_eq!(decode_results(&[0; 9]), None);
        assert_eq!(
            decode_results(&PackedResult::MALFORMED.to_bytes()),
            Some(vec![PackedResult::MALFORMED])
        );
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[!-~]{1,20}").expect("regex")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Items round-trip through the framing.
        #[test]
        fn items_round_trip(
            items in proptest::collection::vec(
                ("[0-9]{14}", text(), proptest::option::of(text()),
                 proptest::option::of("[0-9]{2}(0[1-9]|1[0-2])[0-2][0-9]")),
                0..40,
            )
        ) {
            let mut bytes = Vec::new();
            for (gtin, serial, lot, expiry) in &items {
                encode_item(&mut bytes, gtin, serial, lot.as_deref(), expiry.as_deref());
            }
            let decoded = decode_items(&bytes, items.len()).unwrap();
            prop_assert_eq!(decoded.len(), items.len());
            for (item, (gtin, serial, lot, expiry)) in decoded.iter().zip(&items) {
                prop_assert_eq!(item.gtin, gtin.as_bytes());
                prop_assert_eq!(item.serial, serial.as_bytes());
                prop_assert_eq!(item.lot, lot.as_deref().map(str::as_bytes));
                prop_assert_eq!(item.expiry, expiry.as_deref().map(str::as_bytes));
            }
        }

        /// Any bytes frame into items or a truncation, never a panic, and
        /// the framed items cover the input exactly.
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match decode_items(&bytes, usize::MAX - 1) {
                Ok(items) => {
                    let covered: usize = items
                        .iter()
                        .map(|i| GTIN_BYTES + 2 + i.serial.len() + i.lot.map_or(0, <[u8]>::len) + EXPIRY_BYTES)
                        .sum();
                    prop_assert_eq!(covered, bytes.len());
                }
                Err(truncated) => prop_assert!(truncated.offset < bytes.len()),
            }
        }

        /// The iterator yields what `decode_items` collects, then stops.
        #[test]
        fn the_iterator_agrees(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let iterated: Vec<_> = items(&bytes).collect();
            match decode_items(&bytes, usize::MAX - 1) {
                Ok(decoded) => prop_assert_eq!(iterated, decoded.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(truncated) => {
                    prop_assert_eq!(iterated.last(), Some(&Err(truncated)));
                    prop_assert_eq!(iterated.len(), truncated.items + 1);
                }
            }
        }

        /// Results round-trip through their 8 bytes.
        #[test]
        fn results_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let whole = &bytes[..bytes.len() / RESULT_BYTES * RESULT_BYTES];
            let results = decode_results(whole).unwrap();
            let encoded: Vec<u8> = results.iter().flat_map(|r| r.to_bytes()).collect();
            prop_assert_eq!(encoded, whole.to_vec());
        }
    }
}
