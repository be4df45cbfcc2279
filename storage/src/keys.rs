//! Column families and key encodings.
//!
//! Every key starts with a one-byte family prefix (so a key read from the wrong
//! family is detected), followed by fixed-width big-endian fields so that byte
//! order is numeric order; a variable-length field, if any, comes last.
//! GTINs are stored as the integer value of their 14 digits (< 10^14 < 2^47).

/// The column families of a serialsvc data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Format version and installation facts.
    Meta,
    /// Product master data, by GTIN.
    Products,
    /// Lot master data, by GTIN and lot.
    Lots,
    /// One record per issued (GTIN, serial): the uniqueness set and its state.
    Serials,
    /// Pools of serials handed to packaging lines.
    Pools,
    /// Idempotency records: client request id → stored outcome.
    Requests,
    /// The event log, by gap-free sequence number.
    Events,
    /// Aggregation: parent → children and child → parent.
    Hierarchy,
    /// Principals and token hashes.
    Access,
}

impl Family {
    /// Every family, in the order they are opened.
    pub const ALL: [Family; 9] = [
        Family::Meta,
        Family::Products,
        Family::Lots,
        Family::Serials,
        Family::Pools,
        Family::Requests,
        Family::Events,
        Family::Hierarchy,
        Family::Access,
    ];

    /// The RocksDB column family name.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Meta => "meta",
            Family::Products => "products",
            Family::Lots => "lots",
            Family::Serials => "serials",
            Family::Pools => "pools",
            Family::Requests => "requests",
            Family::Events => "events",
            Family::Hierarchy => "hierarchy",
            Family::Access => "access",
        }
    }

    /// The one-byte prefix of every key in this family.
    pub const fn prefix(self) -> u8 {
        match self {
            Family::Meta => b'M',
            Family::Products => b'P',
            Family::Lots => b'L',
            Family::Serials => b'S',
            Family::Pools => b'O',
            Family::Requests => b'R',
            Family::Events => b'E',
            Family::Hierarchy => b'H',
            Family::Access => b'A',
        }
    }
}

/// Largest GTIN-14 value; keys refuse anything above it.
pub const GTIN_MAX: u64 = 99_999_999_999_999;

/// Longest serial or lot accepted in a key (GS1: 20 characters).
pub const TEXT_LENGTH_MAX: usize = 20;

/// Longest client request id accepted in a key.
pub const REQUEST_ID_LENGTH_MAX: usize = 64;

fn with_prefix(family: Family, capacity: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + capacity);
    key.push(family.prefix());
    key
}

/// `M` + name bytes.
pub fn meta(name: &str) -> Vec<u8> {
    let mut key = with_prefix(Family::Meta, name.len());
    key.extend_from_slice(name.as_bytes());
    key
}

/// `P` + GTIN (u64 BE).
pub fn product(gtin: u64) -> Vec<u8> {
    debug_assert!(gtin <= GTIN_MAX);
    let mut key = with_prefix(Family::Products, 8);
    key.extend_from_slice(&gtin.to_be_bytes());
    key
}

/// `L` + GTIN (u64 BE) + lot bytes.
pub fn lot(gtin: u64, lot: &[u8]) -> Vec<u8> {
    debug_assert!(gtin <= GTIN_MAX && lot.len() <= TEXT_LENGTH_MAX);
    let mut key = with_prefix(Family::Lots, 8 + lot.len());
    key.extend_from_slice(&gtin.to_be_bytes());
    key.extend_from_slice(lot);
    key
}

/// `S` + GTIN (u64 BE) + serial bytes. All serials of a GTIN are contiguous.
pub fn serial(gtin: u64, serial: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + serial.len());
    serial_into(&mut key, gtin, serial);
    key
}

/// Replaces `key` with the key [`serial`] returns, reusing its allocation
/// (for writers of many serial keys).
pub fn serial_into(key: &mut Vec<u8>, gtin: u64, serial: &[u8]) {
    debug_assert!(gtin <= GTIN_MAX && serial.len() <= TEXT_LENGTH_MAX);
    key.clear();
    key.push(Family::Serials.prefix());
    key.extend_from_slice(&gtin.to_be_bytes());
    key.extend_from_slice(serial);
}

/// Splits a serial key back into (GTIN, serial bytes).
pub fn decode_serial(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(&[Family::Serials.prefix()])?;
    if rest.len() < 9 || rest.len() > 8 + TEXT_LENGTH_MAX {
        return None;
    }
    let (gtin, serial) = rest.split_at(8);
    let gtin = u64::from_be_bytes(gtin.try_into().ok()?);
    (gtin <= GTIN_MAX).then_some((gtin, serial))
}

/// `O` + pool id (u64 BE).
pub fn pool(pool_id: u64) -> Vec<u8> {
    let mut key = with_prefix(Family::Pools, 8);
    key.extend_from_slice(&pool_id.to_be_bytes());
    key
}

/// `O` + pool id (u64 BE) + chunk index (u32 BE): the serials of one committed
/// segment of a pool, in the order they were handed out.
pub fn pool_chunk(pool_id: u64, index: u32) -> Vec<u8> {
    let mut key = pool(pool_id);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// `R` + request kind (one byte, so ids of different RPCs never clash) + id bytes.
pub fn request(kind: u8, request_id: &[u8]) -> Vec<u8> {
    debug_assert!(request_id.len() <= REQUEST_ID_LENGTH_MAX);
    let mut key = with_prefix(Family::Requests, 1 + request_id.len());
    key.push(kind);
    key.extend_from_slice(request_id);
    key
}

/// Kinds of key in the `access` family (the byte after `A`).
pub mod access {
    /// One API token by its number.
    pub const TOKEN: u8 = b'T';
    /// A CreateToken answer by the caller's token number and request id.
    pub const CREATE_REQUEST: u8 = b'C';
    /// A RevokeToken answer by the caller's token number and request id.
    pub const REVOKE_REQUEST: u8 = b'V';
}

/// `A` `T` + token number (u64 BE): one API token; key order is creation order.
pub fn token(number: u64) -> Vec<u8> {
    let mut key = with_prefix(Family::Access, 9);
    key.push(access::TOKEN);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The token number of a [`token`] key.
pub fn decode_token(key: &[u8]) -> Option<u64> {
    match key {
        [b'A', access::TOKEN, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// `A` + kind + caller's token number (u64 BE) + request id bytes: request
/// ids are scoped to the principal that sent them.
pub fn access_request(kind: u8, caller: u64, request_id: &[u8]) -> Vec<u8> {
    let mut key = with_prefix(Family::Access, 9 + request_id.len());
    key.push(kind);
    key.extend_from_slice(&caller.to_be_bytes());
    key.extend_from_slice(request_id);
    key
}

/// Kinds of key in the `hierarchy` family (the byte after `H`).
pub mod hierarchy {
    /// An SSCC's record: `H 01` + SSCC without its check digit (u64 BE).
    pub const SSCC: u8 = 1;
    /// A child SSCC of a parent: `H 02` + parent (u64 BE) + `00` + child (u64 BE).
    pub const CHILD: u8 = 2;
    /// A pack's parent: `H 03` + GTIN (u64 BE) + serial bytes.
    pub const PACK_PARENT: u8 = 3;
    /// An SSCC pool's record: `H 04` + pool id (u64 BE).
    pub const POOL: u8 = 4;
    /// A chunk of an SSCC pool: `H 05` + pool id (u64 BE) + chunk (u32 BE).
    pub const POOL_CHUNK: u8 = 5;
    /// SSCCs issued per (extension digit, company prefix): `H 06` + digit + prefix text.
    pub const ISSUED: u8 = 6;
    /// The second byte after a parent in a `CHILD` key: an SSCC child.
    pub const CHILD_SSCC: u8 = 0;
    /// The second byte after a parent in a `CHILD` key: a pack child.
    pub const CHILD_PACK: u8 = 1;
}

/// Largest SSCC without its check digit (17 digits).
pub const SSCC_MAX: u64 = 99_999_999_999_999_999;

fn hierarchy_key(kind: u8, capacity: usize) -> Vec<u8> {
    let mut key = with_prefix(Family::Hierarchy, 1 + capacity);
    key.push(kind);
    key
}

/// `H 01` + SSCC (its 17 data digits as u64 BE): numeric order, so the
/// SSCCs of one extension digit and company prefix are one key range.
pub fn sscc(sscc: u64) -> Vec<u8> {
    debug_assert!(sscc <= SSCC_MAX);
    let mut key = hierarchy_key(hierarchy::SSCC, 8);
    key.extend_from_slice(&sscc.to_be_bytes());
    key
}

/// `H 02` + parent SSCC: the prefix of all of a parent's child keys.
pub fn children(parent: u64) -> Vec<u8> {
    let mut key = hierarchy_key(hierarchy::CHILD, 8 + 1 + 20);
    key.extend_from_slice(&parent.to_be_bytes());
    key
}

/// `H 02` + parent + `00` + child SSCC: an SSCC in a parent.
pub fn child_sscc(parent: u64, child: u64) -> Vec<u8> {
    let mut key = children(parent);
    key.push(hierarchy::CHILD_SSCC);
    key.extend_from_slice(&child.to_be_bytes());
    key
}

/// `H 02` + parent + `01` + GTIN + serial: a pack in a parent.
pub fn child_pack(parent: u64, gtin: u64, serial: &[u8]) -> Vec<u8> {
    debug_assert!(gtin <= GTIN_MAX && serial.len() <= TEXT_LENGTH_MAX);
    let mut key = children(parent);
    key.push(hierarchy::CHILD_PACK);
    key.extend_from_slice(&gtin.to_be_bytes());
    key.extend_from_slice(serial);
    key
}

/// A child key's child: `Ok(sscc)` or `Err((gtin, serial))`.
pub fn decode_child(key: &[u8]) -> Option<Result<u64, (u64, &[u8])>> {
    let rest = key.strip_prefix(&[Family::Hierarchy.prefix(), hierarchy::CHILD])?;
    if rest.len() < 17 {
        return None;
    }
    let (kind, rest) = (rest[8], &rest[9..]);
    let (number, tail) = rest.split_at(8);
    let number = u64::from_be_bytes(number.try_into().ok()?);
    match kind {
        hierarchy::CHILD_SSCC if tail.is_empty() => Some(Ok(number)),
        hierarchy::CHILD_PACK if !tail.is_empty() && tail.len() <= TEXT_LENGTH_MAX => {
            Some(Err((number, tail)))
        }
        _ => None,
    }
}

/// `H 03` + GTIN + serial: the parent SSCC of a pack.
pub fn pack_parent(gtin: u64, serial: &[u8]) -> Vec<u8> {
    debug_assert!(gtin <= GTIN_MAX && serial.len() <= TEXT_LENGTH_MAX);
    let mut key = hierarchy_key(hierarchy::PACK_PARENT, 8 + serial.len());
    key.extend_from_slice(&gtin.to_be_bytes());
    key.extend_from_slice(serial);
    key
}

/// `H 04` + pool id: an SSCC pool.
pub fn sscc_pool(pool_id: u64) -> Vec<u8> {
    let mut key = hierarchy_key(hierarchy::POOL, 8);
    key.extend_from_slice(&pool_id.to_be_bytes());
    key
}

/// `H 05` + pool id + chunk index: the SSCCs of one chunk of an SSCC pool.
pub fn sscc_pool_chunk(pool_id: u64, index: u32) -> Vec<u8> {
    let mut key = hierarchy_key(hierarchy::POOL_CHUNK, 12);
    key.extend_from_slice(&pool_id.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// `H 06` + extension digit + company prefix: SSCCs issued from that space.
pub fn sscc_issued(extension_digit: u8, company_prefix: &[u8]) -> Vec<u8> {
    let mut key = hierarchy_key(hierarchy::ISSUED, 1 + company_prefix.len());
    key.push(extension_digit);
    key.extend_from_slice(company_prefix);
    key
}

/// `E` + sequence number (u64 BE): iteration order is sequence order.
pub fn event(sequence: u64) -> Vec<u8> {
    let mut key = with_prefix(Family::Events, 8);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The sequence number of an event key.
pub fn decode_event(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(&[Family::Events.prefix()])?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn serial_into_reuses_a_buffer_for_the_same_key() {
        let mut key = serial(1, b"A LONGER SERIAL 0001");
        serial_into(&mut key, 9_520_123_456_788, b"ABC");
        assert_eq!(key, serial(9_520_123_456_788, b"ABC"));
        assert_eq!(decode_serial(&key), Some((9_520_123_456_788, &b"ABC"[..])));
    }

    use super::*;
    use proptest::prelude::*;

    fn check(actual: Vec<u8>, expected: &[u8]) {
        assert_eq!(actual, expected, "golden bytes differ");
    }

    #[test]
    fn golden_bytes() {
        // GTIN 09520123456788 = 0x0000_08A8_9393_AD14.
        let gtin = 9_520_123_456_788u64;
        check(meta("format_version"), b"Mformat_version");
        check(product(gtin), b"P\x00\x00\x08\xa8\x93\x93\xad\x14");
        check(lot(gtin, b"ABC1"), b"L\x00\x00\x08\xa8\x93\x93\xad\x14ABC1");
        check(
            serial(gtin, b"XYZ"),
            b"S\x00\x00\x08\xa8\x93\x93\xad\x14XYZ",
        );
        check(pool(258), b"O\x00\x00\x00\x00\x00\x00\x01\x02");
        check(
            pool_chunk(258, 3),
            b"O\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x03",
        );
        check(request(3, b"req-1"), b"R\x03req-1");
        check(event(1), b"E\x00\x00\x00\x00\x00\x00\x00\x01");
        check(sscc(258), b"H\x01\x00\x00\x00\x00\x00\x00\x01\x02");
        check(
            child_sscc(1, 2),
            b"H\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02",
        );
        check(
            child_pack(1, gtin, b"XY"),
            b"H\x02\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x08\xa8\x93\x93\xad\x14XY",
        );
        check(
            pack_parent(gtin, b"XY"),
            b"H\x03\x00\x00\x08\xa8\x93\x93\xad\x14XY",
        );
        check(sscc_pool(2), b"H\x04\x00\x00\x00\x00\x00\x00\x00\x02");
        check(
            sscc_pool_chunk(2, 1),
            b"H\x05\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01",
        );
        check(sscc_issued(3, b"0614141"), b"H\x06\x030614141");
    }

    proptest! {
        #[test]
        fn child_keys_round_trip(parent in 0..=SSCC_MAX, child in 0..=SSCC_MAX,
                                 gtin in 0..=GTIN_MAX, serial in proptest::collection::vec(any::<u8>(), 1..=20)) {
            let sscc_key = child_sscc(parent, child);
            let pack_key = child_pack(parent, gtin, &serial);
            prop_assert_eq!(decode_child(&sscc_key), Some(Ok(child)));
            prop_assert_eq!(decode_child(&pack_key), Some(Err((gtin, serial.as_slice()))));
            prop_assert!(child_sscc(parent, child).starts_with(&children(parent)));
        }

        #[test]
        fn decoding_a_child_key_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_child(&bytes);
        }
    }

    #[test]
    fn family_names_and_prefixes_are_distinct() {
        let mut names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
        let mut prefixes: Vec<_> = Family::ALL.iter().map(|f| f.prefix()).collect();
        names.sort();
        names.dedup();
        prefixes.sort();
        prefixes.dedup();
        assert_eq!(names.len(), Family::ALL.len());
        assert_eq!(prefixes.len(), Family::ALL.len());
    }

    #[test]
    fn decoders_reject_foreign_keys() {
        assert_eq!(decode_serial(&event(1)), None);
        assert_eq!(decode_serial(b"S\x00"), None);
        assert_eq!(decode_event(&serial(1, b"A")), None);
        assert_eq!(decode_event(b"E\x00\x01"), None);
    }

    proptest! {
        #[test]
        fn serial_keys_round_trip_and_sort_by_gtin_then_serial(
            a in (0..=GTIN_MAX, proptest::collection::vec(33u8..127, 1..=20)),
            b in (0..=GTIN_MAX, proptest::collection::vec(33u8..127, 1..=20)),
        ) {
            let ka = serial(a.0, &a.1);
            let kb = serial(b.0, &b.1);
            prop_assert_eq!(decode_serial(&ka), Some((a.0, a.1.as_slice())));
            prop_assert_eq!(ka.cmp(&kb), (a.0, &a.1).cmp(&(b.0, &b.1)));
        }

        #[test]
        fn event_keys_round_trip_in_order(x: u64, y: u64) {
            prop_assert_eq!(decode_event(&event(x)), Some(x));
            prop_assert_eq!(event(x).cmp(&event(y)), x.cmp(&y));
        }

        #[test]
        fn token_keys_round_trip_in_creation_order(x: u64, y: u64) {
            prop_assert_eq!(decode_token(&token(x)), Some(x));
            prop_assert_eq!(token(x).cmp(&token(y)), x.cmp(&y));
            prop_assert!(!access_request(access::CREATE_REQUEST, x, b"r").starts_with(&token(y)[..2]));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_serial(&bytes);
            let _ = decode_event(&bytes);
            let _ = decode_token(&bytes);
        }
    }
}
