//! The issuer's public request and answer types: domain values, already
//! validated by the edge (gs1 types for identifiers), never wire types.

use gs1::{Expiry, Gtin, Lot, Serial};

use crate::format::Format;
use crate::records::{LotStatus, ProductRecord, SerialState};

/// A product to register.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// GTIN.
    pub gtin: Gtin,
    /// Name, 1–200 characters.
    pub name: String,
    /// Company prefix length, 6–12.
    pub company_prefix_length: u8,
    /// Market profile name.
    pub profile: String,
    /// Required for `custom`; otherwise must match the profile's rule if given.
    pub custom_format: Option<(String, u32)>,
    /// US NDC (10 or 11 digits).
    pub ndc: Option<String>,
    /// Override of the profile's guessing-rule default.
    pub guessing_rule_enforced: Option<bool>,
    /// Who registers it (the API token's name), recorded in the event.
    pub principal: String,
}

/// A registered product.
#[derive(Debug, Clone)]
pub struct Product {
    /// GTIN.
    pub gtin: Gtin,
    /// The stored record.
    pub record: ProductRecord,
    /// Its serial format.
    pub format: Format,
}

/// A lot to register.
#[derive(Debug, Clone)]
pub struct NewLot {
    /// GTIN of a registered product.
    pub gtin: Gtin,
    /// Lot.
    pub lot: Lot,
    /// Expiry, fixed once registered.
    pub expiry: Expiry,
    /// Who registers it (the API token's name), recorded in the event.
    pub principal: String,
}

/// A registered lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotInfo {
    /// GTIN.
    pub gtin: Gtin,
    /// Lot.
    pub lot: String,
    /// Expiry as encoded (YYMMDD).
    pub expiry: String,
    /// Status.
    pub status: LotStatus,
    /// Registration time, microseconds since the Unix epoch.
    pub created_micros: u64,
    /// Recall time (0 = not recalled).
    pub recalled_micros: u64,
    /// Why it was recalled.
    pub recall_reason: String,
}

/// A pool request (OPEN-SCS).
#[derive(Debug, Clone)]
pub struct PoolRequest {
    /// Client request id (idempotency key).
    pub request_id: String,
    /// GTIN.
    pub gtin: Gtin,
    /// Serials wanted.
    pub count: u64,
    /// Line id.
    pub line_id: String,
    /// Location.
    pub location: String,
    /// Another market profile for this pool.
    pub profile_override: Option<String>,
    /// Another format for this pool (alphabet, length; empty/0 = profile's).
    pub format_override: Option<(String, u32)>,
    /// Selection criteria, sorted by key.
    pub selection_criteria: Vec<(String, String)>,
    /// Who asks (the API token's name), recorded in the events; not part
    /// of the idempotency check.
    pub principal: String,
}

/// What limited a partial pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolLimit {
    /// Fully granted.
    None,
    /// The EU guessing rule.
    GuessingRule,
    /// The serial space.
    SerialSpace,
}

impl PoolLimit {
    pub(crate) fn code(self) -> u8 {
        match self {
            PoolLimit::None => 0,
            PoolLimit::GuessingRule => 1,
            PoolLimit::SerialSpace => 2,
        }
    }
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => PoolLimit::GuessingRule,
            2 => PoolLimit::SerialSpace,
            _ => PoolLimit::None,
        }
    }
}

/// The guessing-rule figures of a GTIN.
#[derive(Debug, Clone, PartialEq)]
pub struct GuessingFigures {
    /// GTIN.
    pub gtin: Gtin,
    /// Serials issued.
    pub issued: u64,
    /// Size of the product's serial space.
    pub space_size: u128,
    /// issued ÷ space.
    pub ratio: f64,
    /// The limit on the ratio.
    pub ratio_limit: f64,
    /// Whether the limit is enforced.
    pub enforced: bool,
    /// Serials still issuable.
    pub issuable_remaining: u64,
}

/// Progress of a pool's segments being made durable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolProgress {
    /// Chunks committed (each readable with `Issuer::pool_chunk`).
    pub chunks: u32,
    /// Serials committed.
    pub serials: u64,
    /// All granted serials are committed.
    pub finished: bool,
    /// Committing failed: the message; a retry with the same request id continues.
    pub failed: Option<String>,
}

/// A pool, as `GetPool` and the header of `RequestPool` show it.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    /// Pool id.
    pub pool_id: u64,
    /// The stored record.
    pub record: crate::records::PoolRecord,
    /// What limited it.
    pub limit: PoolLimit,
    /// The product's guessing figures after this pool.
    pub figures: GuessingFigures,
}

/// An accepted pool request: its header and a live view of its commits.
#[derive(Debug)]
pub struct PoolTicket {
    /// The pool.
    pub pool: PoolInfo,
    /// Commit progress; already finished for a completed replay.
    pub progress: tokio::sync::watch::Receiver<PoolProgress>,
}

/// One item of a bulk group: a serial, or why the edge could not read it.
pub type GroupItem = Result<Serial, String>;

/// Where and when a line's change happened, as its events record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventContext {
    /// Packaging line.
    pub line_id: String,
    /// Site (GLN or site code).
    pub location: String,
    /// When it happened as the client reported it (µs since the epoch);
    /// `None` = the commit time.
    pub event_time_micros: Option<u64>,
    /// Who asks (the API token's name).
    pub principal: String,
}

/// A commissioning group: serials of one GTIN printed with one lot.
#[derive(Debug, Clone)]
pub struct CommissionGroup {
    /// Client request id of the group.
    pub request_id: String,
    /// GTIN.
    pub gtin: Gtin,
    /// Lot (registered for the GTIN).
    pub lot: Lot,
    /// Expiry if the client gave one: must equal the lot's.
    pub expiry: Option<Expiry>,
    /// Only serials of this pool, if given.
    pub pool_id: Option<u64>,
    /// Where it happened: packaging line, site, and when the client says it
    /// happened. Recorded in the event only (not in the idempotency check).
    pub context: EventContext,
    /// The items, in order.
    pub items: Vec<GroupItem>,
}

/// A group of unused serials handed back.
#[derive(Debug, Clone)]
pub struct ReturnGroup {
    /// Client request id of the group.
    pub request_id: String,
    /// GTIN.
    pub gtin: Gtin,
    /// Only serials of this pool, if given.
    pub pool_id: Option<u64>,
    /// Where it happened: packaging line, site, and when the client says it
    /// happened. Recorded in the event only (not in the idempotency check).
    pub context: EventContext,
    /// The items, in order.
    pub items: Vec<GroupItem>,
}

/// What happened to one item of a bulk group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ItemOutcome {
    /// Commissioned: ALLOCATED → ACTIVE.
    Commissioned = 1,
    /// Already active with the same lot: nothing changed.
    AlreadyCommissioned = 2,
    /// Never issued for this GTIN.
    UnknownSerial = 3,
    /// Issued in another pool than the one named.
    NotInPool = 4,
    /// Returned earlier: never valid.
    Voided = 5,
    /// Active with another lot.
    LotConflict = 6,
    /// Decommissioned.
    Decommissioned = 7,
    /// Malformed item (the edge's reason is in the group answer).
    Malformed = 8,
    /// Returned: ALLOCATED → VOIDED.
    Returned = 9,
    /// Already voided: nothing changed.
    AlreadyVoided = 10,
    /// Cannot be returned: already commissioned (or later).
    AlreadyActive = 11,
}

impl ItemOutcome {
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        use ItemOutcome::*;
        Some(match code {
            1 => Commissioned,
            2 => AlreadyCommissioned,
            3 => UnknownSerial,
            4 => NotInPool,
            5 => Voided,
            6 => LotConflict,
            7 => Decommissioned,
            8 => Malformed,
            9 => Returned,
            10 => AlreadyVoided,
            11 => AlreadyActive,
            _ => return None,
        })
    }

    /// True when the item's state changed.
    pub fn applied(self) -> bool {
        matches!(self, ItemOutcome::Commissioned | ItemOutcome::Returned)
    }

    /// True when nothing changed because the state was already the one asked for.
    pub fn unchanged(self) -> bool {
        matches!(
            self,
            ItemOutcome::AlreadyCommissioned | ItemOutcome::AlreadyVoided
        )
    }
}

/// The answer to one bulk group: per item, its outcome and its state after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOutcome {
    /// In item order: outcome and the serial's state afterwards (None = unknown).
    pub items: Vec<(ItemOutcome, Option<SerialState>)>,
    /// True when this answer was replayed from the idempotency record.
    pub replayed: bool,
}

/// One pack of a status group (decommission or undo), any GTIN.
#[derive(Debug, Clone)]
pub struct StatusItem {
    /// GTIN.
    pub gtin: Gtin,
    /// Serial.
    pub serial: Serial,
    /// Lot, if given: checked against the record.
    pub lot: Option<Lot>,
    /// Expiry, if given: checked against the lot's.
    pub expiry: Option<Expiry>,
}

/// What a status group does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// ACTIVE → DECOMMISSIONED with this reason.
    Decommission(verifier::DecommissionReason),
    /// DECOMMISSIONED → ACTIVE (Art. 13), only packs with the expected
    /// reason when one is given.
    Undo(Option<verifier::DecommissionReason>),
}

/// A group of state changes: one action, one actor, up to
/// `commission_group_max` items (malformed ones as `Err(field: rule)`).
#[derive(Debug, Clone)]
pub struct StatusGroup {
    /// Client request id of the group.
    pub request_id: String,
    /// The change.
    pub action: StatusAction,
    /// Who: the API token's name (compared by undo).
    pub party: String,
    /// Who at the location (operator or workstation id): audit trail only.
    pub actor: String,
    /// Where (compared by undo).
    pub location: String,
    /// Free text recorded with the events.
    pub note: String,
    /// When it happened as the client reported it (µs since the epoch);
    /// `None` = the commit time.
    pub event_time_micros: Option<u64>,
    /// The items, in order.
    pub items: Vec<Result<StatusItem, String>>,
}

/// The answer for one item of a status group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusResult {
    /// `DecommissionOutcome` or `UndoOutcome` code, by the group's action.
    pub outcome: u8,
    /// The state after the group (None: never issued).
    pub state: Option<SerialState>,
    /// The decommission reason after the group (0 = none).
    pub reason: u8,
    /// Commit time of the pack's last decommission (0 = never).
    pub decommissioned_micros: u64,
}

/// The answer for a status group.
#[derive(Debug, Clone)]
pub struct StatusAnswer {
    /// One result per item, in order.
    pub items: Vec<StatusResult>,
    /// True when every part of the group was answered from stored outcomes.
    pub replayed: bool,
}

/// The answer to a recall or withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagChange {
    /// The flag was already set; nothing changed.
    pub already: bool,
    /// Packs that were ACTIVE when the flag was set.
    pub active_packs_affected: u64,
}

/// What `flag_pack` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFlagAction {
    /// Mark suspect.
    SetSuspect,
    /// Mark illegitimate.
    SetIllegitimate,
    /// Clear both marks.
    Clear,
}

/// The answer to `flag_pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackFlags {
    /// The pack's state (unchanged by flagging).
    pub state: SerialState,
    /// Marked suspect after the request.
    pub suspect: bool,
    /// Marked illegitimate after the request.
    pub illegitimate: bool,
    /// The marks were already as asked.
    pub unchanged: bool,
}
