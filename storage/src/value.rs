//! The value envelope: `[version: u8][crc32c: u32 BE][payload]`.
//!
//! The checksum covers the version byte and the payload, so a flipped bit in
//! either is detected on read (RocksDB's own block checksums do not cover a value
//! that was corrupted before it was written, nor a mis-decoded one).

/// Bytes before the payload.
pub const HEADER_LENGTH: usize = 5;

/// Wraps a payload with its version byte and checksum.
pub fn encode(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_LENGTH + payload.len());
    value.push(version);
    value.extend_from_slice(&checksum(version, payload).to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// Why an envelope could not be opened.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Fewer bytes than the header.
    #[error("value of {0} bytes is shorter than its 5-byte header")]
    Truncated(usize),
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of what was read.
        computed: u32,
    },
}

/// Checks the envelope and returns `(version, payload)`.
pub fn decode(value: &[u8]) -> Result<(u8, &[u8]), EnvelopeError> {
    if value.len() < HEADER_LENGTH {
        return Err(EnvelopeError::Truncated(value.len()));
    }
    let version = value[0];
    let stored = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let payload = &value[HEADER_LENGTH..];
    let computed = checksum(version, payload);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    Ok((version, payload))
}

fn checksum(version: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[version]), payload)
}

/// Version of the event value payload written by this build (2 added the
/// hash chain; version-1 events are still read, as unchained).
pub const EVENT_VERSION: u8 = 2;

/// Bytes of an event chain hash (SHA-256).
pub const CHAIN_HASH_LENGTH: usize = 32;

/// A chain hash.
pub type ChainHash = [u8; CHAIN_HASH_LENGTH];

/// A stored event: when it was committed and the body its writer supplied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// Gap-free, increasing sequence number (also the key).
    pub sequence: u64,
    /// Commit time, microseconds since the Unix epoch (UTC).
    pub time_micros: u64,
    /// The chain hash of the event before it (all zeros before the first);
    /// `None` for a version-1 event, written before the chain existed.
    pub previous_hash: Option<ChainHash>,
    /// The writer's encoding of what happened (opaque to storage).
    pub body: Vec<u8>,
}

impl EventRecord {
    /// This event's chain hash: SHA-256 over the previous hash, the sequence
    /// and time (u64 BE) and the body. Each event stores its predecessor's,
    /// so altering any stored event breaks the chain at its successor.
    pub fn chain_hash(&self) -> ChainHash {
        chain_hash(
            &self.previous_hash.unwrap_or([0; CHAIN_HASH_LENGTH]),
            self.sequence,
            self.time_micros,
            &self.body,
        )
    }
}

/// The chain hash of an event with these fields (see [`EventRecord::chain_hash`]).
pub fn chain_hash(previous: &ChainHash, sequence: u64, time_micros: u64, body: &[u8]) -> ChainHash {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(previous);
    hasher.update(sequence.to_be_bytes());
    hasher.update(time_micros.to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// Encodes an event value: envelope(`EVENT_VERSION`, time_micros u64 BE ++
/// previous hash ++ body).
pub fn encode_event(time_micros: u64, previous_hash: &ChainHash, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + CHAIN_HASH_LENGTH + body.len());
    payload.extend_from_slice(&time_micros.to_be_bytes());
    payload.extend_from_slice(previous_hash);
    payload.extend_from_slice(body);
    encode(EVENT_VERSION, &payload)
}

/// Decodes an event value read under `sequence`.
pub fn decode_event(sequence: u64, value: &[u8]) -> Result<EventRecord, String> {
    let (version, payload) = decode(value).map_err(|e| e.to_string())?;
    let header = match version {
        1 => 8,
        EVENT_VERSION => 8 + CHAIN_HASH_LENGTH,
        _ => {
            return Err(format!(
                "event version {version} is not 1 or {EVENT_VERSION}"
            ));
        }
    };
    if payload.len() < header {
        return Err(format!(
            "event payload of {} bytes lacks its {header}-byte header",
            payload.len()
        ));
    }
    let (time, rest) = payload.split_at(8);
    let time_micros = u64::from_be_bytes(time.try_into().map_err(|_| "time field")?);
    let (previous_hash, body) = if version == 1 {
        (None, rest)
    } else {
        let (hash, body) = rest.split_at(CHAIN_HASH_LENGTH);
        (Some(hash.try_into().map_err(|_| "hash field")?), body)
    };
    Ok(EventRecord {
        sequence,
        time_micros,
        previous_hash,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        // crc32c("\x01abc") computed independently (Python crc32c package).
        assert_eq!(encode(1, b"abc"), b"\x01\xc3\x0d\x7d\xb2abc".to_vec());
        assert_eq!(
            encode_event(1, &[7; 32], b"x"),
            encode(2, &[&[0, 0, 0, 0, 0, 0, 0, 1][..], &[7; 32], b"x"].concat())
        );
        // Version 1 (before the chain) still reads, unchained.
        let v1 = decode_event(5, &encode(1, b"\x00\x00\x00\x00\x00\x00\x00\x01x")).unwrap();
        assert_eq!(
            (v1.time_micros, v1.previous_hash, v1.body),
            (1, None, b"x".to_vec())
        );
        // SHA-256 of 32 zero bytes, then sequence 1 and time 2 (u64 BE), then "x",
        // computed independently (Python hashlib).
        let hash = chain_hash(&[0; 32], 1, 2, b"x");
        assert_eq!(hash[..4], [0xc3, 0xea, 0xaf, 0x80], "{hash:02x?}");
    }

    #[test]
    fn detects_every_single_bit_flip() {
        let value = encode(1, b"serial record payload");
        for bit in 0..value.len() * 8 {
            let mut damaged = value.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged).is_err(), "flip of bit {bit} undetected");
        }
    }

    #[test]
    fn rejects_short_values() {
        assert_eq!(decode(b"\x01\x00"), Err(EnvelopeError::Truncated(2)));
    }

    proptest! {
        #[test]
        fn round_trip(version: u8, payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let value = encode(version, &payload);
            prop_assert_eq!(decode(&value), Ok((version, payload.as_slice())));
        }

        #[test]
        fn event_round_trip(seq: u64, time: u64, hash: [u8; 32], body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let value = encode_event(time, &hash, &body);
            prop_assert_eq!(
                decode_event(seq, &value),
                Ok(EventRecord { sequence: seq, time_micros: time, previous_hash: Some(hash), body })
            );
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = decode_event(0, &bytes);
        }
    }
}
