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

/// Version of the event value payload written by this build.
pub const EVENT_VERSION: u8 = 1;

/// A stored event: when it was committed and the body its writer supplied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// Gap-free, increasing sequence number (also the key).
    pub sequence: u64,
    /// Commit time, microseconds since the Unix epoch (UTC).
    pub time_micros: u64,
    /// The writer's encoding of what happened (opaque to storage).
    pub body: Vec<u8>,
}

/// Encodes an event value: envelope(`EVENT_VERSION`, time_micros u64 BE ++ body).
pub fn encode_event(time_micros: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + body.len());
    payload.extend_from_slice(&time_micros.to_be_bytes());
    payload.extend_from_slice(body);
    encode(EVENT_VERSION, &payload)
}

/// Decodes an event value read under `sequence`.
pub fn decode_event(sequence: u64, value: &[u8]) -> Result<EventRecord, String> {
    let (version, payload) = decode(value).map_err(|e| e.to_string())?;
    if version != EVENT_VERSION {
        return Err(format!("event version {version} is not {EVENT_VERSION}"));
    }
    if payload.len() < 8 {
        return Err(format!(
            "event payload of {} bytes lacks its time",
            payload.len()
        ));
    }
    let (time, body) = payload.split_at(8);
    let time_micros = u64::from_be_bytes(time.try_into().map_err(|_| "time field")?);
    Ok(EventRecord {
        sequence,
        time_micros,
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
            encode_event(1, b"x"),
            encode(1, b"\x00\x00\x00\x00\x00\x00\x00\x01x")
        );
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
        fn event_round_trip(seq: u64, time: u64, body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let value = encode_event(time, &body);
            prop_assert_eq!(
                decode_event(seq, &value),
                Ok(EventRecord { sequence: seq, time_micros: time, body })
            );
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = decode_event(0, &bytes);
        }
    }
}
