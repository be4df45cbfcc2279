//! Rebuilding the verifier's status index from RocksDB at start-up (RocksDB
//! is the source of truth; the index is derived). Runs before any writer
//! accepts work (`Issuer::call` refuses with `Starting` until the index is
//! ready), so nothing changes underneath the scan.

use std::time::{Duration, Instant};

use storage::{Family, Store};
use verifier::{LotId, PackState, SerialEntry, StatusIndex};

use crate::error::IssuerError;
use crate::records::{LotRecord, LotStatus, ProductRecord, SerialView};
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
    let mut expected = vec![0u64; shards];
    let prefix = [Family::Products.prefix()];
    store.scan_prefix(
        Family::Products,
        &prefix,
        &prefix,
        |key, version, payload| match (gtin_of(key), ProductRecord::decode(version, payload)) {
            (Some(gtin), Ok(record)) => {
                let shard = shard_of(&format!("{gtin:014}"), shards);
                index.put_product(gtin, shard, record.withdrawn);
                // `issued` counts every serial of the GTIN: size the tables once.
                expected[shard] += record.issued;
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

    for (partition, serials) in expected.iter().enumerate() {
        index.reserve(partition, *serials);
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
    // consecutive serials of one GTIN. This thread scans and decodes; a
    // second one fills the index, so the two halves use both cores.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(4);
    let scanned = std::thread::scope(|scope| {
        let inserter = scope.spawn(move || -> Result<(), IssuerError> {
            for batch in receiver {
                index.put_serials(
                    batch.gtin,
                    batch
                        .entries
                        .iter()
                        .map(|(start, end, entry)| (&batch.serials[*start..*end], *entry)),
                )?;
            }
            Ok(())
        });
        let scanned = scan_serials(store, index, &sender, &mut report, started, &mut progress);
        drop(sender);
        let inserted = inserter.join().unwrap_or_else(|_| {
            Err(IssuerError::FailedPrecondition(
                "index inserter panicked".into(),
            ))
        });
        scanned.and(inserted)
    });
    scanned?;
    report.elapsed = started.elapsed();
    report.finished = true;
    index.set_ready();
    progress(report);
    Ok(report)
}

/// Serials of one GTIN on their way to the index: packed serial bytes and
/// (start, end, entry) per serial.
struct Batch {
    gtin: u64,
    serials: Vec<u8>,
    entries: Vec<(usize, usize, SerialEntry)>,
}

impl Batch {
    fn new(gtin: u64) -> Self {
        Batch {
            gtin,
            serials: Vec::with_capacity(BATCH * 20),
            entries: Vec::with_capacity(BATCH),
        }
    }
}

fn scan_serials(
    store: &Store,
    index: &StatusIndex,
    sender: &std::sync::mpsc::SyncSender<Batch>,
    report: &mut RebuildProgress,
    started: Instant,
    progress: &mut impl FnMut(RebuildProgress),
) -> Result<(), IssuerError> {
    let mut failure: Option<IssuerError> = None;
    let mut batch = Batch::new(0);
    let mut lot_cache: Option<(u64, String, Option<LotId>)> = None;
    let mut last_report = Instant::now();
    let send = |batch: Batch| -> Result<(), IssuerError> {
        if batch.entries.is_empty() {
            return Ok(());
        }
        // The inserter only stops early on an error, which it returns.
        sender
            .send(batch)
            .map_err(|_| IssuerError::FailedPrecondition("index inserter stopped".into()))
    };
    let prefix = [Family::Serials.prefix()];
    store.scan_prefix(
        Family::Serials,
        &prefix,
        &prefix,
        |key, version, payload| {
            let step = (|| -> Result<(), IssuerError> {
                let gtin = gtin_of(key).ok_or_else(|| corrupt("serial key", key))?;
                if gtin != batch.gtin || batch.entries.len() == BATCH {
                    send(std::mem::replace(&mut batch, Batch::new(gtin)))?;
                }
                let record = SerialView::decode(version, payload)?;
                let lot = if record.lot.is_empty() {
                    None
                } else {
                    match &lot_cache {
                        Some((g, text, id)) if *g == gtin && text == record.lot => *id,
                        _ => {
                            let id = index.lot_id(gtin, record.lot);
                            lot_cache = Some((gtin, record.lot.to_owned(), id));
                            id
                        }
                    }
                };
                let start = batch.serials.len();
                batch.serials.extend_from_slice(key.get(9..).unwrap_or(&[]));
                let entry = SerialEntry {
                    state: PackState::from_code(record.state as u8).unwrap_or(PackState::Unknown),
                    reason: record.reason,
                    flags: record.flags,
                    lot,
                };
                batch.entries.push((start, batch.serials.len(), entry));
                report.serials += 1;
                Ok(())
            })();
            if let Err(error) = step {
                failure = Some(error);
                return false;
            }
            if report.serials.is_multiple_of(65_536)
                && last_report.elapsed() >= Duration::from_secs(1)
            {
                last_report = Instant::now();
                report.elapsed = started.elapsed();
                progress(*report);
            }
            true
        },
    )?;
    if let Some(error) = failure {
        return Err(error);
    }
    send(batch)
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
