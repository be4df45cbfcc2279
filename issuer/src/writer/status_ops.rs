//! The shard writer's state changes of commissioned packs, lots and products:
//! decommission and undo groups (the part of a group whose GTINs this shard
//! owns), lot recall, product withdrawal and pack flags. Each is one durable
//! commit with its events and idempotency record, then the status index
//! update, then the answer.

use std::collections::HashMap;
use std::sync::Arc;

use storage::{ChangeSet, Family, keys, value};
use verifier::DecommissionReason;

use super::{
    KIND_DECOMMISSION, KIND_FLAG, KIND_RECALL, KIND_UNDO, KIND_WITHDRAW, Writer, envelope,
    gtin_value, now_micros, serial_envelope,
};
use crate::error::IssuerError;
use crate::events::{self, EventHeader};
use crate::model::*;
use crate::records::*;
use crate::status::{self, Actor, DecommissionOutcome, Pack, UndoOutcome};

/// The part of a status group one shard owns: items with their position in
/// the whole group.
#[derive(Debug)]
pub(crate) struct StatusPart {
    pub(crate) request_id: String,
    pub(crate) action: StatusAction,
    pub(crate) party: String,
    pub(crate) location: String,
    pub(crate) note: String,
    pub(crate) items: Vec<(usize, StatusItem)>,
    /// When it happened as the client reported it (µs since the epoch).
    pub(crate) event_time_micros: Option<u64>,
    /// Hash of everything above but the request id: a replay must match it.
    pub(crate) parameters: u64,
    /// Whether the part keeps its own idempotency record. A part of a
    /// cascade does not: the cascade's record, in the same batch, answers
    /// replays.
    pub(crate) record: bool,
    /// The SSCC a cascade started from (recorded in the events); empty when none.
    pub(crate) sscc: String,
    /// Who at the location, for the events only (not compared, not in the
    /// idempotency check).
    pub(crate) actor: String,
}

/// Index entries to apply after a commit: per GTIN, (serial, entry).
pub(crate) type IndexEntries = Vec<(u64, Vec<(Vec<u8>, verifier::SerialEntry)>)>;

/// A part decided but not yet committed: its answers, the change to commit
/// (`None` when answered from the stored outcome) and the index entries to
/// apply after the commit.
pub(crate) struct PreparedPart {
    pub(crate) positioned: Vec<(usize, StatusResult)>,
    pub(crate) change: Option<ChangeSet>,
    pub(crate) index: IndexEntries,
}

/// Most serials one event lists (a cascade's parts can be larger than a
/// group; their events are split so each fits a Watch message).
pub(crate) const EVENT_SERIALS_MAX: usize = 10_000;

impl StatusPart {
    /// A part, with its parameter hash computed here (on the caller's thread,
    /// not the shard writer's).
    pub(crate) fn new(
        request_id: String,
        action: StatusAction,
        party: String,
        location: String,
        note: String,
        event_time_micros: Option<u64>,
        items: Vec<(usize, StatusItem)>,
    ) -> Self {
        use std::fmt::Write;
        let action_bytes = match action {
            StatusAction::Decommission(reason) => [1, reason as u8],
            StatusAction::Undo(expected) => [2, expected.map_or(0, |r| r as u8)],
        };
        let mut hasher = super::ParamsHasher::new();
        for part in [
            &action_bytes[..],
            party.as_bytes(),
            location.as_bytes(),
            note.as_bytes(),
        ] {
            hasher.part(part);
        }
        let mut text = String::new();
        for (_, item) in &items {
            text.clear();
            let _ = write!(
                text,
                "{}|{}|{}|",
                item.gtin,
                item.serial.as_str(),
                item.lot.as_ref().map_or("", |l| l.as_str())
            );
            if let Some(expiry) = item.expiry {
                let _ = write!(text, "{expiry}");
            }
            hasher.part(text.as_bytes());
        }
        StatusPart {
            request_id,
            action,
            party,
            location,
            note,
            items,
            event_time_micros,
            parameters: hasher.finish(),
            actor: String::new(),
            record: true,
            sscc: String::new(),
        }
    }
}

/// Bytes per stored item answer: outcome, state, reason, decommission time.
const ANSWER_BYTES: usize = 11;

impl Writer {
    /// Applies this shard's part of a decommission or undo group.
    ///
    /// The status index decides what it can alone: an unknown serial, and a
    /// decommission of a pack that is not yet decommissioned. Only undo and a
    /// repeated decommission need who made the last change and when, so only
    /// their records are read. Changes are written as [`SerialPatch`] merge
    /// operands, so no record is read just to be rewritten.
    pub(crate) fn status_part(
        &mut self,
        part: StatusPart,
    ) -> Result<(Vec<(usize, StatusResult)>, bool), IssuerError> {
        let mut prepared = self.prepare_status(part)?;
        let Some(change) = prepared.change.take() else {
            return Ok((prepared.positioned, true));
        };
        self.store().commit(change)?;
        self.apply_prepared(prepared.index)?;
        Ok((prepared.positioned, false))
    }

    /// Applies a committed part's states to the status index.
    pub(crate) fn apply_prepared(&self, index: IndexEntries) -> Result<(), IssuerError> {
        for (gtin, entries) in index {
            self.index_serials(
                gtin,
                entries
                    .iter()
                    .map(|(serial, entry)| (serial.as_slice(), *entry)),
            )?;
        }
        Ok(())
    }

    /// Decides a part from the index (and the records it must read) and
    /// builds its change set, without committing it.
    pub(crate) fn prepare_status(&mut self, part: StatusPart) -> Result<PreparedPart, IssuerError> {
        let kind = match part.action {
            StatusAction::Decommission(_) => KIND_DECOMMISSION,
            StatusAction::Undo(_) => KIND_UNDO,
        };
        let request_key = format!("{}#{}", part.request_id, self.shard);
        let request_record_key = keys::request(kind, request_key.as_bytes());
        let stored = if part.record {
            self.store().get(Family::Requests, &request_record_key)?
        } else {
            None
        };
        if let Some((version, payload)) = stored {
            let stored = RequestRecord::decode(version, &payload)?;
            if stored.parameters != part.parameters {
                return Err(IssuerError::invalid(
                    "request_id",
                    format!(
                        "{:?} was already used for a group with other parameters",
                        part.request_id
                    ),
                ));
            }
            let answers = decode_answers(&stored.result, part.items.len())?;
            let positioned = part.items.iter().map(|(i, _)| *i).zip(answers).collect();
            return Ok(PreparedPart {
                positioned,
                change: None,
                index: Vec::new(),
            });
        }

        let now = now_micros();
        let today = verifier::today_utc();
        let by = Actor {
            party: &part.party,
            location: &part.location,
        };
        let index = Arc::clone(&self.shared.index);
        let view = index.view();
        let keys: Vec<Vec<u8>> = part
            .items
            .iter()
            .map(|(_, item)| keys::serial(gtin_value(&item.gtin), item.serial.as_str().as_bytes()))
            .collect();
        let entries: Vec<Option<verifier::SerialEntry>> = part
            .items
            .iter()
            .map(|(_, item)| view.entry(gtin_value(&item.gtin), item.serial.as_str().as_bytes()))
            .collect();

        // The records the state machine needs whole: who decommissioned, when.
        let mut reads: Vec<&[u8]> = keys
            .iter()
            .zip(&entries)
            .filter(|(_, entry)| {
                entry.is_some_and(|entry| {
                    matches!(part.action, StatusAction::Undo(_))
                        || entry.state == verifier::PackState::Decommissioned
                })
            })
            .map(|(key, _)| key.as_slice())
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let hasher = xxhash_rust::xxh3::Xxh3Builder::new().with_seed(self.hash_secret);
        let mut stored: HashMap<&[u8], SerialRecord, _> =
            HashMap::with_capacity_and_hasher(reads.len(), hasher);
        let read_keys: Vec<Vec<u8>> = reads.iter().map(|key| key.to_vec()).collect();
        for (key, found) in reads
            .iter()
            .zip(self.store().multi_get(Family::Serials, &read_keys)?)
        {
            let (version, payload) = found.ok_or_else(|| {
                tracing::error!(key = ?key, "the status index holds a serial the store lacks");
                IssuerError::Corrupt(crate::codec::DecodeError {
                    record: "serial record",
                    detail: "indexed serial missing from the store".into(),
                })
            })?;
            stored.insert(*key, SerialRecord::decode(version, &payload)?);
        }

        // One patch serves every item the group changes.
        let patch = match part.action {
            StatusAction::Decommission(reason) => SerialPatch {
                state: Some(SerialState::Decommissioned),
                reason: Some(reason as u8),
                changed_micros: Some(now),
                party: Some(part.party.clone()),
                location: Some(part.location.clone()),
                decommissioned_micros: Some(now),
                ..SerialPatch::default()
            },
            StatusAction::Undo(_) => SerialPatch {
                state: Some(SerialState::Active),
                reason: Some(0),
                changed_micros: Some(now),
                ..SerialPatch::default()
            },
        };
        let (new_state, new_reason) = match part.action {
            StatusAction::Decommission(reason) => {
                (verifier::PackState::Decommissioned, reason as u8)
            }
            StatusAction::Undo(_) => (verifier::PackState::Active, 0),
        };

        // Entries changed earlier in this group: later items see them.
        let mut changed_here: HashMap<&[u8], verifier::SerialEntry, _> =
            HashMap::with_hasher(hasher);
        let mut changed: Vec<&[u8]> = Vec::new();
        let mut answers = Vec::with_capacity(part.items.len());
        for (((_, item), key), indexed) in part.items.iter().zip(&keys).zip(&entries) {
            let key = key.as_slice();
            let gtin = gtin_value(&item.gtin);
            let withdrawn = match self.product(gtin)? {
                None => {
                    answers.push(refusal(part.action, Refusal::UnknownProduct, None));
                    continue;
                }
                Some(product) => product.record.withdrawn,
            };
            let (entry, here) = match (changed_here.get(key), indexed) {
                (Some(entry), _) => (*entry, true),
                (None, Some(entry)) => (*entry, false),
                (None, None) => {
                    answers.push(refusal(part.action, Refusal::UnknownSerial, None));
                    continue;
                }
            };
            let record = stored.get(key);
            let (party, location, decommissioned_micros) = match (here, record) {
                (true, _) => (part.party.as_str(), part.location.as_str(), now),
                (false, Some(r)) => (
                    r.party.as_str(),
                    r.location.as_str(),
                    r.decommissioned_micros,
                ),
                (false, None) => ("", "", 0),
            };
            let state = state_of(entry.state);
            let now_known = Known {
                state,
                reason: entry.reason,
                decommissioned_micros,
            };
            let commissioned = matches!(state, SerialState::Active | SerialState::Decommissioned);
            let lot = entry.lot.and_then(|id| view.lot(id));
            let mut recalled = false;
            let mut expired = false;
            if commissioned {
                if let Some(lot) = lot {
                    recalled = lot.recalled;
                    expired = lot.effective_expiry < today;
                }
                if let Some(given) = &item.lot
                    && Some(given.as_str()) != lot.map(|l| &*l.lot)
                {
                    let why = if view.lot_id(gtin, given.as_str()).is_some() {
                        Refusal::LotMismatch
                    } else {
                        Refusal::UnknownLot
                    };
                    answers.push(refusal(part.action, why, Some(now_known)));
                    continue;
                }
                if let (Some(given), Some(lot)) = (item.expiry, lot)
                    && given.effective_date(today) != lot.effective_expiry
                {
                    answers.push(refusal(
                        part.action,
                        Refusal::ExpiryMismatch,
                        Some(now_known),
                    ));
                    continue;
                }
            }
            let pack = Pack {
                state,
                reason: DecommissionReason::from_code(entry.reason),
                decommissioned_by: Actor { party, location },
                decommissioned_micros,
                recalled,
                withdrawn,
                expired,
            };
            let (outcome, applied) = match part.action {
                StatusAction::Decommission(reason) => {
                    let outcome = status::decommission(&pack, reason, by);
                    (
                        outcome as u8,
                        outcome == DecommissionOutcome::Decommissioned,
                    )
                }
                StatusAction::Undo(expected) => {
                    let outcome =
                        status::undo(&pack, expected, by, now, status::UNDO_WINDOW_MICROS);
                    (outcome as u8, outcome == UndoOutcome::Reactivated)
                }
            };
            if applied {
                let entry = verifier::SerialEntry {
                    state: new_state,
                    reason: new_reason,
                    ..entry
                };
                changed_here.insert(key, entry);
                changed.push(key);
                answers.push(answer(
                    outcome,
                    Some(Known {
                        state: state_of(new_state),
                        reason: new_reason,
                        decommissioned_micros: now,
                    }),
                ));
            } else {
                answers.push(answer(outcome, Some(now_known)));
            }
        }

        // One batch: the patches, one event per GTIN, the stored answer.
        // A stable sort keeps a serial's patches in the order they were made.
        changed.sort();
        let patch_value = value::encode(SERIAL_PATCH_VERSION, &patch.encode());
        let mut change = ChangeSet::new();
        let mut by_gtin: HashMap<u64, Vec<&[u8]>> = HashMap::new();
        for (i, key) in changed.iter().enumerate() {
            change.merge(Family::Serials, key, &patch_value);
            if i > 0 && changed[i - 1] == *key {
                continue;
            }
            let gtin = u64::from_be_bytes(key[1..9].try_into().unwrap_or([0; 8]));
            by_gtin.entry(gtin).or_default().push(&key[9..]);
        }
        let (event_kind, action_code) = match part.action {
            StatusAction::Decommission(reason) => (events::kind::DECOMMISSIONED, reason as u8),
            StatusAction::Undo(expected) => (events::kind::UNDONE, expected.map_or(0, |r| r as u8)),
        };
        let header = EventHeader {
            kind: event_kind,
            request_id: part.request_id.clone(),
            principal: part.party.clone(),
            actor: part.actor.clone(),
            location: part.location.clone(),
            event_time_micros: part.event_time_micros.unwrap_or(0),
            reason: action_code,
            reason_text: part.note.clone(),
            sscc: part.sscc.clone(),
            ..EventHeader::default()
        };
        let mut gtins: Vec<&u64> = by_gtin.keys().collect();
        gtins.sort_unstable();
        for gtin in &gtins {
            for serials in by_gtin[*gtin].chunks(EVENT_SERIALS_MAX) {
                change.event(events::encode_body(
                    &EventHeader {
                        gtin: **gtin,
                        ..header.clone()
                    },
                    serials.iter().copied(),
                ));
            }
        }
        if gtins.is_empty() && part.record {
            // Nothing changed: the answer is still recorded for replay.
            change.event(events::encode_body(&header, []));
        }
        if part.record {
            change.put(
                Family::Requests,
                request_record_key,
                envelope(
                    &RequestRecord {
                        parameters: part.parameters,
                        result: encode_answers(&answers),
                    }
                    .encode(),
                ),
            );
        }

        // The index entries to apply once the change is durable.
        let index = gtins
            .into_iter()
            .map(|gtin| {
                let entries = by_gtin[gtin]
                    .iter()
                    .filter_map(|serial| {
                        let key = keys::serial(*gtin, serial);
                        changed_here
                            .get(key.as_slice())
                            .map(|entry| (serial.to_vec(), *entry))
                    })
                    .collect();
                (*gtin, entries)
            })
            .collect();
        let positioned = part.items.iter().map(|(i, _)| *i).zip(answers).collect();
        Ok(PreparedPart {
            positioned,
            change: Some(change),
            index,
        })
    }

    /// Recalls a lot (irreversible).
    pub(crate) fn recall_lot(
        &mut self,
        request_id: &str,
        gtin: &gs1::Gtin,
        lot: &gs1::Lot,
        reason: &str,
        principal: &str,
    ) -> Result<(LotInfo, FlagChange), IssuerError> {
        let value = gtin_value(gtin);
        let key = keys::lot(value, lot.as_str().as_bytes());
        let (version, payload) = self.store().get(Family::Lots, &key)?.ok_or_else(|| {
            IssuerError::NotFound(format!(
                "lot {} is not registered for GTIN {gtin}",
                lot.as_str()
            ))
        })?;
        let mut record = LotRecord::decode(version, &payload)?;
        let parameters = super::params_hash(&[
            gtin.as_str().as_bytes(),
            lot.as_str().as_bytes(),
            reason.as_bytes(),
        ]);
        if let Some(change) = self.flag_replay(KIND_RECALL, request_id, parameters)? {
            return Ok((super::lot_info(gtin, lot.as_str(), &record), change));
        }
        let already = record.status == LotStatus::Recalled;
        let active = if already {
            0
        } else {
            self.count_active(value, Some(lot.as_str()))?
        };
        let result = FlagChange {
            already,
            active_packs_affected: active,
        };
        let mut change = ChangeSet::new();
        if !already {
            record.status = LotStatus::Recalled;
            record.recalled_micros = now_micros();
            record.recall_reason = reason.to_owned();
            change.put(Family::Lots, key, record.stored());
        }
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::LOT_RECALLED,
                gtin: value,
                principal: principal.to_owned(),
                request_id: request_id.to_owned(),
                lot: lot.as_str().to_owned(),
                expiry: record.expiry.clone(),
                reason_text: reason.to_owned(),
                ..EventHeader::default()
            },
            [],
        ));
        self.put_flag_answer(&mut change, KIND_RECALL, request_id, parameters, result);
        self.store().commit(change)?;
        self.shared.index.set_lot_recalled(value, lot.as_str());
        Ok((super::lot_info(gtin, lot.as_str(), &record), result))
    }

    /// Withdraws a product (irreversible).
    pub(crate) fn withdraw_product(
        &mut self,
        request_id: &str,
        gtin: &gs1::Gtin,
        reason: &str,
        principal: &str,
    ) -> Result<(Product, FlagChange), IssuerError> {
        let value = gtin_value(gtin);
        let parameters = super::params_hash(&[gtin.as_str().as_bytes(), reason.as_bytes()]);
        let replay = self.flag_replay(KIND_WITHDRAW, request_id, parameters)?;
        let Some(product) = self.product(value)? else {
            return Err(IssuerError::NotFound(format!(
                "GTIN {gtin} is not registered"
            )));
        };
        let mut record = product.record.clone();
        let format = product.format.clone();
        if let Some(change) = replay {
            return Ok((
                Product {
                    gtin: gtin.clone(),
                    record,
                    format,
                },
                change,
            ));
        }
        let already = record.withdrawn;
        let active = if already {
            0
        } else {
            self.count_active(value, None)?
        };
        let result = FlagChange {
            already,
            active_packs_affected: active,
        };
        let mut change = ChangeSet::new();
        if !already {
            record.withdrawn = true;
            record.withdrawn_micros = now_micros();
            record.withdrawal_reason = reason.to_owned();
            change.put(Family::Products, keys::product(value), record.stored());
        }
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::PRODUCT_WITHDRAWN,
                gtin: value,
                principal: principal.to_owned(),
                request_id: request_id.to_owned(),
                reason_text: reason.to_owned(),
                ..EventHeader::default()
            },
            [],
        ));
        self.put_flag_answer(&mut change, KIND_WITHDRAW, request_id, parameters, result);
        self.store().commit(change)?;
        if let Some(product) = self.products.get_mut(&value) {
            product.record = record.clone();
        }
        self.shared.index.set_product_withdrawn(value);
        Ok((
            Product {
                gtin: gtin.clone(),
                record,
                format,
            },
            result,
        ))
    }

    /// Sets or clears a pack's suspect / illegitimate marks.
    pub(crate) fn flag_pack(
        &mut self,
        request_id: &str,
        gtin: &gs1::Gtin,
        serial: &gs1::Serial,
        action: PackFlagAction,
        reason: &str,
        principal: &str,
    ) -> Result<PackFlags, IssuerError> {
        let value = gtin_value(gtin);
        let key = keys::serial(value, serial.as_str().as_bytes());
        let (version, payload) = self.store().get(Family::Serials, &key)?.ok_or_else(|| {
            IssuerError::NotFound(format!(
                "serial {} was never issued for GTIN {gtin}",
                serial.as_str()
            ))
        })?;
        let mut record = SerialRecord::decode(version, &payload)?;
        let action_code = action as u8;
        let parameters = super::params_hash(&[
            gtin.as_str().as_bytes(),
            serial.as_str().as_bytes(),
            &[action_code],
            reason.as_bytes(),
        ]);
        let flags = match action {
            PackFlagAction::SetSuspect => record.flags | FLAG_SUSPECT,
            PackFlagAction::SetIllegitimate => record.flags | FLAG_ILLEGITIMATE,
            PackFlagAction::Clear => 0,
        };
        let replayed = self.flag_replay(KIND_FLAG, request_id, parameters)?;
        let unchanged = replayed.map_or(flags == record.flags, |r| r.already);
        if replayed.is_none() {
            let mut change = ChangeSet::new();
            if flags != record.flags {
                record.flags = flags;
                change.put(Family::Serials, key, serial_envelope(&record));
            }
            change.event(events::encode_body(
                &EventHeader {
                    kind: events::kind::PACK_FLAGGED,
                    gtin: value,
                    principal: principal.to_owned(),
                    request_id: request_id.to_owned(),
                    flag_action: action_code,
                    reason_text: reason.to_owned(),
                    ..EventHeader::default()
                },
                [serial.as_str().as_bytes()],
            ));
            let answer = FlagChange {
                already: unchanged,
                active_packs_affected: 0,
            };
            self.put_flag_answer(&mut change, KIND_FLAG, request_id, parameters, answer);
            self.store().commit(change)?;
            let lot = self.shared.index.lot_id(value, &record.lot);
            self.index_serials(
                value,
                [(serial.as_str().as_bytes(), super::index_entry(&record, lot))],
            )?;
        }
        Ok(PackFlags {
            state: record.state,
            suspect: record.flags & FLAG_SUSPECT != 0,
            illegitimate: record.flags & FLAG_ILLEGITIMATE != 0,
            unchanged,
        })
    }

    fn flag_replay(
        &self,
        kind: u8,
        request_id: &str,
        parameters: u64,
    ) -> Result<Option<FlagChange>, IssuerError> {
        let key = keys::request(kind, request_id.as_bytes());
        let Some((version, payload)) = self.store().get(Family::Requests, &key)? else {
            return Ok(None);
        };
        let stored = RequestRecord::decode(version, &payload)?;
        if stored.parameters != parameters {
            return Err(IssuerError::invalid(
                "request_id",
                format!("{request_id:?} was already used with other parameters"),
            ));
        }
        let bytes: [u8; 9] = stored.result.as_slice().try_into().map_err(|_| {
            IssuerError::Corrupt(crate::codec::DecodeError {
                record: "request answer",
                detail: "not 9 bytes".into(),
            })
        })?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[1..]);
        Ok(Some(FlagChange {
            already: bytes[0] != 0,
            active_packs_affected: u64::from_be_bytes(count),
        }))
    }

    fn put_flag_answer(
        &self,
        change: &mut ChangeSet,
        kind: u8,
        request_id: &str,
        parameters: u64,
        answer: FlagChange,
    ) {
        let mut result = vec![u8::from(answer.already)];
        result.extend_from_slice(&answer.active_packs_affected.to_be_bytes());
        change.put(
            Family::Requests,
            keys::request(kind, request_id.as_bytes()),
            envelope(&RequestRecord { parameters, result }.encode()),
        );
    }

    /// Active packs of a GTIN (of one lot if given): a scan of the GTIN's
    /// serials, run on the shard writer (recalls and withdrawals are rare).
    fn count_active(&self, gtin: u64, lot: Option<&str>) -> Result<u64, IssuerError> {
        let prefix = keys::serial(gtin, b"");
        let mut count = 0u64;
        let mut failure = None;
        self.store()
            .scan_prefix(Family::Serials, &prefix, &prefix, |_, version, payload| {
                match SerialView::decode(version, payload) {
                    Ok(view) => {
                        if view.state == SerialState::Active && lot.is_none_or(|l| l == view.lot) {
                            count += 1;
                        }
                        true
                    }
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                }
            })?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(count),
        }
    }
}

/// Why an item was refused before the state machine ran.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    UnknownProduct,
    UnknownSerial,
    UnknownLot,
    LotMismatch,
    ExpiryMismatch,
}

fn refusal(action: StatusAction, why: Refusal, record: Option<Known>) -> StatusResult {
    let code = match (action, why) {
        (StatusAction::Decommission(_), Refusal::UnknownProduct) => {
            DecommissionOutcome::UnknownProduct as u8
        }
        (StatusAction::Decommission(_), Refusal::UnknownSerial) => {
            DecommissionOutcome::UnknownSerial as u8
        }
        (StatusAction::Decommission(_), Refusal::UnknownLot) => {
            DecommissionOutcome::UnknownLot as u8
        }
        (StatusAction::Decommission(_), Refusal::LotMismatch) => {
            DecommissionOutcome::LotMismatch as u8
        }
        (StatusAction::Decommission(_), Refusal::ExpiryMismatch) => {
            DecommissionOutcome::ExpiryMismatch as u8
        }
        (StatusAction::Undo(_), Refusal::UnknownProduct) => UndoOutcome::UnknownProduct as u8,
        (StatusAction::Undo(_), Refusal::UnknownSerial) => UndoOutcome::UnknownSerial as u8,
        (StatusAction::Undo(_), Refusal::UnknownLot) => UndoOutcome::UnknownLot as u8,
        (StatusAction::Undo(_), Refusal::LotMismatch) => UndoOutcome::LotMismatch as u8,
        (StatusAction::Undo(_), Refusal::ExpiryMismatch) => UndoOutcome::ExpiryMismatch as u8,
    };
    answer(code, record)
}

/// What an answer reports of a pack.
#[derive(Debug, Clone, Copy)]
struct Known {
    state: SerialState,
    reason: u8,
    decommissioned_micros: u64,
}

/// The issuer's state of an index entry's state.
pub(crate) fn state_of(state: verifier::PackState) -> SerialState {
    match state {
        verifier::PackState::Active => SerialState::Active,
        verifier::PackState::Decommissioned => SerialState::Decommissioned,
        verifier::PackState::Voided => SerialState::Voided,
        verifier::PackState::Allocated | verifier::PackState::Unknown => SerialState::Allocated,
    }
}

/// The answer for one item. The reason and the decommission time are given
/// only while the pack is decommissioned.
fn answer(outcome: u8, known: Option<Known>) -> StatusResult {
    let decommissioned = known.filter(|k| k.state == SerialState::Decommissioned);
    StatusResult {
        outcome,
        state: known.map(|k| k.state),
        reason: decommissioned.map_or(0, |k| k.reason),
        decommissioned_micros: decommissioned.map_or(0, |k| k.decommissioned_micros),
    }
}

fn encode_answers(answers: &[StatusResult]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(answers.len() * ANSWER_BYTES);
    for a in answers {
        bytes.push(a.outcome);
        bytes.push(a.state.map_or(0, |s| s as u8));
        bytes.push(a.reason);
        bytes.extend_from_slice(&a.decommissioned_micros.to_be_bytes());
    }
    bytes
}

fn decode_answers(bytes: &[u8], length: usize) -> Result<Vec<StatusResult>, IssuerError> {
    let corrupt = |detail: &str| {
        IssuerError::Corrupt(crate::codec::DecodeError {
            record: "status group answer",
            detail: detail.to_owned(),
        })
    };
    if bytes.len() != length * ANSWER_BYTES {
        return Err(corrupt("length differs from the group"));
    }
    bytes
        .chunks_exact(ANSWER_BYTES)
        .map(|a| {
            let state = match a[1] {
                0 => None,
                1 => Some(SerialState::Allocated),
                2 => Some(SerialState::Active),
                3 => Some(SerialState::Decommissioned),
                4 => Some(SerialState::Voided),
                _ => return Err(corrupt("unknown state")),
            };
            let mut time = [0u8; 8];
            time.copy_from_slice(&a[3..11]);
            Ok(StatusResult {
                outcome: a[0],
                state,
                reason: a[2],
                decommissioned_micros: u64::from_be_bytes(time),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_answers_round_trip() {
        let answers = vec![
            StatusResult {
                outcome: 1,
                state: Some(SerialState::Decommissioned),
                reason: 2,
                decommissioned_micros: 77,
            },
            StatusResult {
                outcome: 5,
                state: None,
                reason: 0,
                decommissioned_micros: 0,
            },
        ];
        let bytes = encode_answers(&answers);
        assert_eq!(decode_answers(&bytes, 2).unwrap(), answers);
        assert!(decode_answers(&bytes, 3).is_err());
    }
}
