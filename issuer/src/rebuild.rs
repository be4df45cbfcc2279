//! Rebuilding the verifier's status index from RocksDB at start-up (RocksDB
//! is the source of truth; the index is derived). Runs before any writer
//! accepts work (`Issuer::call` refuses with `Starting` until the index is
//! ready), so nothing changes underneath the scan.

use std::time::{Duration, Instant};

use storage::{Family, Store};
use verifier::{LotId, SerialEntry, StatusIndex};

use crate::error::IssuerError;
use crate::records::{LotRecord, LotStatus, ProductRecord, SerialRecord};
use crate::shard_of;

/// Serials put into the index per call (one partition lock per batch).
const BATCH: usize = 8192;

/// How far a rebuild has got; reported about once a second and at the end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    /// Products loaded.
    pub products: u64,
    /// Lots loaded.
    pub lots: u64,
    /// Serials loaded so far.
    pub serials: u64,
    /// Time since the rebuild began.
    pub elapsed: Duration,
    /// True on the last report.
    pub finished: bool,
}

/// Loads every product, lot and serial state from `store` into `index` (one
/// partition per shard, as the issuer assigns them), then marks it ready.
pub fn rebuild_index(
    store: &Store,
    index: &StatusIndex,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<RebuildProgress, IssuerError> {
    let started = Instant::now();
    let shards = index.partitions();
    let mut report = RebuildProgress {
        products: 0,
        lots: 0,
        serials: 0,
        elapsed: Duration::ZERO,
        finished: false,
    };

    let mut failure: Option<IssuerError> = None;
    let prefix = [Family::Products.prefix()];
    store.scan_prefix(
        Family::Products,
        &prefix,
        &prefix,
        |key, version, payload| match (gtin_of(key), ProductRecord::decode(version, payload)) {
            (Some(gtin), Ok(record)) => {
                index.put_product(
                    gtin,
                    shard_of(&format!("{gtin:014}"), shards),
                    record.withdrawn,
                );
                report.products += 1;
                true
            }
            (None, _) => {
                failure = Some(corrupt("product key", key));
                false
            }
            (_, Err(error)) => {
                failure = Some(error.into());
                false
            }
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }

    let mut lots = Vec::new();
    let prefix = [Family::Lots.prefix()];
    store.scan_prefix(Family::Lots, &prefix, &prefix, |key, version, payload| {
        let decoded = (|| -> Result<_, IssuerError> {
            let gtin = gtin_of(key).ok_or_else(|| corrupt("lot key", key))?;
            let lot = std::str::from_utf8(key.get(9..).unwrap_or(&[]))
                .map_err(|_| corrupt("lot key", key))?
                .to_owned();
            let record = LotRecord::decode(version, payload)?;
            let expiry =
                gs1::Expiry::new(&record.expiry).map_err(|_| corrupt("lot expiry", key))?;
            Ok((gtin, lot, expiry, record.status == LotStatus::Recalled))
        })();
        match decoded {
            Ok(lot) => {
                lots.push(lot);
                true
            }
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    report.lots = lots.len() as u64;
    index.put_lots(
        lots.iter()
            .map(|(gtin, lot, expiry, recalled)| (*gtin, lot.as_str(), *expiry, *recalled)),
    )?;

    // Serial keys are `S + GTIN (8 bytes) + serial`, sorted by GTIN: batch
    // consecutive serials of one GTIN.
    let mut batch_gtin = 0u64;
    let mut serials: Vec<u8> = Vec::with_capacity(BATCH * 20);
    let mut entries: Vec<(usize, usize, SerialEntry)> = Vec::with_capacity(BATCH);
    let mut lot_cache: Option<(u64, String, Option<LotId>)> = None;
    let mut last_report = Instant::now();
    let flush = |gtin: u64,
                 serials: &mut Vec<u8>,
                 entries: &mut Vec<(usize, usize, SerialEntry)>|
     -> Result<(), IssuerError> {
        if entries.is_empty() {
            return Ok(());
        }
        index.put_serials(
            gtin,
            entries
                .iter()
                .map(|(start, end, entry)| (&serials[*start..*end], *entry)),
        )?;
        serials.clear();
        entries.clear();
        Ok(())
    };
    let prefix = [Family::Serials.prefix()];
    store.scan_prefix(
        Family::Serials,
        &prefix,
        &prefix,
        |key, version, payload| {
            let step = (|| -> Result<(), IssuerError> {
                let gtin = gtin_of(key).ok_or_else(|| corrupt("serial key", key))?;
                if gtin != batch_gtin || entries.len() == BATCH {
                    flush(batch_gtin, &mut serials, &mut entries)?;
                    batch_gtin = gtin;
                }
                let record = SerialRecord::decode(version, payload)?;
                let lot = if record.lot.is_empty() {
                    None
                } else {
                    match &lot_cache {
                        Some((g, text, id)) if *g == gtin && *text == record.lot => *id,
                        _ => {
                            let id = index.lot_id(gtin, &record.lot);
                            lot_cache = Some((gtin, record.lot.clone(), id));
                            id
                        }
                    }
                };
                let start = serials.len();
                serials.extend_from_slice(key.get(9..).unwrap_or(&[]));
                entries.push((
                    start,
                    serials.len(),
                    crate::writer::index_entry(&record, lot),
                ));
                report.serials += 1;
                Ok(())
            })();
            if let Err(error) = step {
                failure = Some(error);
                return false;
            }
            if report.serials % 65_536 == 0 && last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                report.elapsed = started.elapsed();
                progress(report);
            }
            true
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    flush(batch_gtin, &mut serials, &mut entries)?;
    report.elapsed = started.elapsed();
    report.finished = true;
    index.set_ready();
    progress(report);
    Ok(report)
}

fn gtin_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn corrupt(what: &'static str, key: &[u8]) -> IssuerError {
    IssuerError::Corrupt(crate::codec::DecodeError {
        record: what,
        detail: format!("malformed key {key:02x?}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtin_of_reads_the_big_endian_field() {
        let key = storage::keys::serial(9_520_123_456_788, b"ABC");
        assert_eq!(super::gtin_of(&key), Some(9_520_123_456_788));
        assert_eq!(super::gtin_of(b"S12"), None);
    }
}
