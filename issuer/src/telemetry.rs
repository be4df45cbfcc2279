//! Metrics of the write side, recorded where a caller hands work to a shard
//! writer and gets the answer back (the call boundary): how long a write took
//! end to end (queue wait, the synced RocksDB commit and the index update),
//! how many items it carried, and the packs each status part newly changed
//! (decommissions by reason, undos; a part answered from its stored outcome
//! is not counted again).
//!
//! Handles are created once, on first use, from whatever `metrics` recorder is
//! installed by then (the server installs its Prometheus recorder before it
//! starts the issuer); without one they are no-ops.

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use verifier::DecommissionReason;

use crate::StatusAction;

/// Histogram of write durations, seconds (`kind` label).
pub const WRITE_DURATION: &str = "serialsvc_write_duration_seconds";
/// Histogram of items per write (`kind` label).
pub const WRITE_ITEMS: &str = "serialsvc_write_items";

/// Counter of packs newly decommissioned (`reason` label).
pub const DECOMMISSIONS: &str = "serialsvc_decommissions_total";
/// Counter of decommissions newly undone.
pub const UNDOS: &str = "serialsvc_undos_total";

/// What a write did; the `kind` label of the write metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Product or lot registration.
    MasterData,
    /// A pool request (items: serials requested).
    Pool,
    /// A commissioning group.
    Commission,
    /// A return group.
    Return,
    /// One shard's part of a decommission or undo group.
    Status,
    /// A recall, withdrawal or pack flag.
    Flags,
    /// An SSCC pool, pack, unpack or hierarchy read (the aggregation writer).
    Aggregation,
}

impl WriteKind {
    /// Every kind, in label order.
    pub const ALL: [WriteKind; 7] = [
        WriteKind::MasterData,
        WriteKind::Pool,
        WriteKind::Commission,
        WriteKind::Return,
        WriteKind::Status,
        WriteKind::Flags,
        WriteKind::Aggregation,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            WriteKind::MasterData => "master_data",
            WriteKind::Pool => "pool",
            WriteKind::Commission => "commission",
            WriteKind::Return => "return",
            WriteKind::Status => "status",
            WriteKind::Flags => "flags",
            WriteKind::Aggregation => "aggregation",
        }
    }
}

struct Handles {
    duration: Vec<Histogram>,
    items: Vec<Histogram>,
    decommissions: Vec<Counter>,
    undos: Counter,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        duration: WriteKind::ALL
            .iter()
            .map(|kind| metrics::histogram!(WRITE_DURATION, "kind" => kind.label()))
            .collect(),
        items: WriteKind::ALL
            .iter()
            .map(|kind| metrics::histogram!(WRITE_ITEMS, "kind" => kind.label()))
            .collect(),
        decommissions: DecommissionReason::ALL
            .iter()
            .map(|reason| metrics::counter!(DECOMMISSIONS, "reason" => reason_label(*reason)))
            .collect(),
        undos: metrics::counter!(UNDOS),
    })
}

/// Creates every handle now, so the series exist (at zero) from the first
/// scrape. Call after installing the recorder.
pub fn register() {
    let _ = handles();
}

/// The `reason` label of a decommission reason.
pub fn reason_label(reason: DecommissionReason) -> &'static str {
    use DecommissionReason as R;
    match reason {
        R::Dispensed => "dispensed",
        R::Destroyed => "destroyed",
        R::Exported => "exported",
        R::Stolen => "stolen",
        R::Sample => "sample",
        R::FreeSample => "free_sample",
        R::Locked => "locked",
        R::CheckedOut => "checked_out",
    }
}

/// Counts the packs one status part newly changed (`changed`) by `action`.
pub(crate) fn record_status(action: StatusAction, changed: u64) {
    if changed == 0 {
        return;
    }
    let handles = handles();
    match action {
        StatusAction::Decommission(reason) => {
            let slot = DecommissionReason::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            handles.decommissions[slot].increment(changed);
        }
        StatusAction::Undo(_) => handles.undos.increment(changed),
    }
}

/// Records one write of `items` items of `kind` that started at `started`.
pub(crate) fn record_write(kind: WriteKind, started: Instant, items: usize) {
    let handles = handles();
    let slot = kind as usize;
    handles.duration[slot].record(started.elapsed().as_secs_f64());
    handles.items[slot].record(items as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_in_label_order() {
        for (position, kind) in WriteKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, position, "{kind:?}");
        }
        let labels: std::collections::BTreeSet<_> =
            WriteKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), WriteKind::ALL.len());
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: std::collections::BTreeSet<_> = DecommissionReason::ALL
            .iter()
            .map(|r| reason_label(*r))
            .collect();
        assert_eq!(labels.len(), DecommissionReason::ALL.len());
    }
}
