//! The records the issuer keeps in storage, and their payload encodings.
//! Every payload is wrapped in `storage::value`'s envelope (version byte +
//! CRC-32C); golden-bytes tests below pin each layout.

use crate::codec::{DecodeError, Decoder, Encoder};

/// Payload version of every record type written by this build.
pub const RECORD_VERSION: u8 = 1;

fn check_version(record: &'static str, version: u8) -> Result<(), DecodeError> {
    if version == RECORD_VERSION {
        Ok(())
    } else {
        Err(DecodeError {
            record,
            detail: format!("version {version} is not {RECORD_VERSION}"),
        })
    }
}

/// The state of one issued (GTIN, serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SerialState {
    /// Handed to a line in a pool; not yet printed or reported.
    #[default]
    Allocated = 1,
    /// Commissioned with a lot: saleable.
    Active = 2,
    /// Decommissioned (the reason is in the record).
    Decommissioned = 3,
    /// Returned unused; never valid, never issued again.
    Voided = 4,
}

impl SerialState {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Allocated,
            2 => Self::Active,
            3 => Self::Decommissioned,
            4 => Self::Voided,
            _ => return None,
        })
    }
}

/// Payload version of serial records written by this build (2 added flags,
/// party, location and the decommission time; version 1 is still read).
pub const SERIAL_RECORD_VERSION: u8 = 2;

/// Payload version of a serial record that is ALLOCATED with every other
/// field at its default: only the pool id and the time (16 bytes, not 33).
/// Every pool writes one per serial, so this is most records, and it makes
/// the WAL, memtables and files of a pool about a fifth smaller. Written by
/// [`SerialRecord::stored`]; an older build refuses to read it (it names
/// the version), it never misreads it.
pub const SERIAL_ALLOCATED_VERSION: u8 = 3;

/// Flag bit: marked suspect by an administrator.
pub const FLAG_SUSPECT: u8 = 1;
/// Flag bit: marked illegitimate by an administrator.
pub const FLAG_ILLEGITIMATE: u8 = 2;

/// A decoder over a serial record payload of a version this build reads.
fn serial_decoder(version: u8, payload: &[u8]) -> Result<Decoder<'_>, DecodeError> {
    if version != 1 && version != SERIAL_RECORD_VERSION && version != SERIAL_ALLOCATED_VERSION {
        return Err(DecodeError {
            record: "serial record",
            detail: format!(
                "version {version} is not 1, {SERIAL_RECORD_VERSION} or {SERIAL_ALLOCATED_VERSION}"
            ),
        });
    }
    Ok(Decoder::new("serial record", payload))
}

/// One issued (GTIN, serial): key `storage::keys::serial`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerialRecord {
    /// Current state.
    pub state: SerialState,
    /// Decommission reason code (0 = none; `DecommissionReason` numbering).
    pub reason: u8,
    /// The pool it was issued in.
    pub pool_id: u64,
    /// When the state last changed, microseconds since the Unix epoch.
    pub changed_micros: u64,
    /// The lot it was commissioned with (empty until commissioned).
    pub lot: String,
    /// Flag bits ([`FLAG_SUSPECT`], [`FLAG_ILLEGITIMATE`]).
    pub flags: u8,
    /// Who made the last decommission (compared by undo).
    pub party: String,
    /// Where the last decommission was made (compared by undo).
    pub location: String,
    /// Commit time of the last decommission (the undo window counts from it).
    pub decommissioned_micros: u64,
}

impl SerialRecord {
    /// The payload to store and its version: the 16-byte
    /// [`SERIAL_ALLOCATED_VERSION`] when the record is ALLOCATED with every
    /// other field at its default, else [`SerialRecord::encode`].
    pub fn stored(&self) -> (u8, Vec<u8>) {
        let allocated = SerialRecord {
            state: SerialState::Allocated,
            pool_id: self.pool_id,
            changed_micros: self.changed_micros,
            ..SerialRecord::default()
        };
        if *self == allocated {
            let payload = Encoder::default()
                .u64(self.pool_id)
                .u64(self.changed_micros)
                .finish();
            (SERIAL_ALLOCATED_VERSION, payload)
        } else {
            (SERIAL_RECORD_VERSION, self.encode())
        }
    }

    /// Encodes a version-[`SERIAL_RECORD_VERSION`] payload.
    pub fn encode(&self) -> Vec<u8> {
        Encoder::default()
            .u8(self.state as u8)
            .u8(self.reason)
            .u64(self.pool_id)
            .u64(self.changed_micros)
            .text(&self.lot)
            .u8(self.flags)
            .text(&self.party)
            .text(&self.location)
            .u64(self.decommissioned_micros)
            .finish()
    }

    /// Decodes a payload read with its envelope version (1, 2 or 3).
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut d = serial_decoder(version, payload)?;
        if version == SERIAL_ALLOCATED_VERSION {
            let record = SerialRecord {
                state: SerialState::Allocated,
                pool_id: d.u64()?,
                changed_micros: d.u64()?,
                ..SerialRecord::default()
            };
            d.finish()?;
            return Ok(record);
        }
        let state = d.u8()?;
        let state =
            SerialState::from_u8(state).ok_or_else(|| d.error(format!("unknown state {state}")))?;
        let mut record = SerialRecord {
            state,
            reason: d.u8()?,
            pool_id: d.u64()?,
            changed_micros: d.u64()?,
            lot: d.text()?,
            ..SerialRecord::default()
        };
        if version == SERIAL_RECORD_VERSION {
            record.flags = d.u8()?;
            record.party = d.text()?;
            record.location = d.text()?;
            record.decommissioned_micros = d.u64()?;
        }
        d.finish()?;
        Ok(record)
    }
}

/// Envelope version of a [`SerialPatch`]. It is not a record version: a
/// patch is only ever a merge operand, never a stored value on its own.
pub const SERIAL_PATCH_VERSION: u8 = 0x81;

/// A change to some fields of a serial record, written as a RocksDB merge
/// operand ([`SERIAL_MERGE`]) so that a writer which has already decided the
/// change from the status index need not read the record first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerialPatch {
    /// New state.
    pub state: Option<SerialState>,
    /// New decommission reason code.
    pub reason: Option<u8>,
    /// When the state changed.
    pub changed_micros: Option<u64>,
    /// New lot.
    pub lot: Option<String>,
    /// New flag bits.
    pub flags: Option<u8>,
    /// Who decommissioned.
    pub party: Option<String>,
    /// Where it was decommissioned.
    pub location: Option<String>,
    /// When it was decommissioned.
    pub decommissioned_micros: Option<u64>,
}

impl SerialPatch {
    /// Encodes a version-[`SERIAL_PATCH_VERSION`] payload: a bit mask of the
    /// fields present, then those fields in declaration order.
    pub fn encode(&self) -> Vec<u8> {
        let mut mask = 0u8;
        let mut e = Encoder::default();
        e.u8(0);
        if let Some(state) = self.state {
            mask |= 1;
            e.u8(state as u8);
        }
        if let Some(reason) = self.reason {
            mask |= 2;
            e.u8(reason);
        }
        if let Some(micros) = self.changed_micros {
            mask |= 4;
            e.u64(micros);
        }
        if let Some(lot) = &self.lot {
            mask |= 8;
            e.text(lot);
        }
        if let Some(flags) = self.flags {
            mask |= 16;
            e.u8(flags);
        }
        if let Some(party) = &self.party {
            mask |= 32;
            e.text(party);
        }
        if let Some(location) = &self.location {
            mask |= 64;
            e.text(location);
        }
        if let Some(micros) = self.decommissioned_micros {
            mask |= 128;
            e.u64(micros);
        }
        let mut bytes = e.finish();
        bytes[0] = mask;
        bytes
    }

    /// Decodes a payload of envelope version `version`.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new("serial patch", payload);
        if version != SERIAL_PATCH_VERSION {
            return Err(d.error(format!("version {version} is not {SERIAL_PATCH_VERSION}")));
        }
        let mask = d.u8()?;
        let mut patch = SerialPatch::default();
        if mask & 1 != 0 {
            let state = d.u8()?;
            patch.state = Some(
                SerialState::from_u8(state)
                    .ok_or_else(|| d.error(format!("unknown state {state}")))?,
            );
        }
        if mask & 2 != 0 {
            patch.reason = Some(d.u8()?);
        }
        if mask & 4 != 0 {
            patch.changed_micros = Some(d.u64()?);
        }
        if mask & 8 != 0 {
            patch.lot = Some(d.text()?);
        }
        if mask & 16 != 0 {
            patch.flags = Some(d.u8()?);
        }
        if mask & 32 != 0 {
            patch.party = Some(d.text()?);
        }
        if mask & 64 != 0 {
            patch.location = Some(d.text()?);
        }
        if mask & 128 != 0 {
            patch.decommissioned_micros = Some(d.u64()?);
        }
        d.finish()?;
        Ok(patch)
    }

    /// Sets the fields this patch carries on `record`.
    pub fn apply(&self, record: &mut SerialRecord) {
        if let Some(state) = self.state {
            record.state = state;
        }
        if let Some(reason) = self.reason {
            record.reason = reason;
        }
        if let Some(micros) = self.changed_micros {
            record.changed_micros = micros;
        }
        if let Some(lot) = &self.lot {
            record.lot.clone_from(lot);
        }
        if let Some(flags) = self.flags {
            record.flags = flags;
        }
        if let Some(party) = &self.party {
            record.party.clone_from(party);
        }
        if let Some(location) = &self.location {
            record.location.clone_from(location);
        }
        if let Some(micros) = self.decommissioned_micros {
            record.decommissioned_micros = micros;
        }
    }

    /// This patch followed by `later`: one patch with the same effect.
    pub fn then(mut self, later: SerialPatch) -> SerialPatch {
        fn over<T>(earlier: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *earlier = later;
            }
        }
        over(&mut self.state, later.state);
        over(&mut self.reason, later.reason);
        over(&mut self.changed_micros, later.changed_micros);
        over(&mut self.lot, later.lot);
        over(&mut self.flags, later.flags);
        over(&mut self.party, later.party);
        over(&mut self.location, later.location);
        over(&mut self.decommissioned_micros, later.decommissioned_micros);
        self
    }
}

/// The merge operator of the `serials` family: applies [`SerialPatch`]es to
/// a serial record. A patch with no record under it is refused (the writer
/// patches only serials the index knows), so a read of it is an error, never
/// a made-up record.
pub const SERIAL_MERGE: storage::MergeOperator = storage::MergeOperator {
    name: "serialsvc.serial-patch.v1",
    full: serial_full_merge,
    partial: serial_partial_merge,
};

fn serial_full_merge(
    existing: Option<(u8, &[u8])>,
    operands: &[(u8, &[u8])],
) -> Result<(u8, Vec<u8>), String> {
    let (version, payload) =
        existing.ok_or_else(|| "a serial patch has no serial record under it".to_owned())?;
    let mut record = SerialRecord::decode(version, payload).map_err(|e| e.to_string())?;
    for (version, payload) in operands {
        SerialPatch::decode(*version, payload)
            .map_err(|e| e.to_string())?
            .apply(&mut record);
    }
    Ok(record.stored())
}

fn serial_partial_merge(operands: &[(u8, &[u8])]) -> Option<(u8, Vec<u8>)> {
    let mut combined = SerialPatch::default();
    for (version, payload) in operands {
        combined = combined.then(SerialPatch::decode(*version, payload).ok()?);
    }
    Some((SERIAL_PATCH_VERSION, combined.encode()))
}

/// The fields of a serial record the status index needs, read without
/// allocating (start-up rebuild).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialView<'a> {
    /// Current state.
    pub state: SerialState,
    /// Decommission reason code.
    pub reason: u8,
    /// Lot text (empty until commissioned).
    pub lot: &'a str,
    /// Flag bits.
    pub flags: u8,
}

impl<'a> SerialView<'a> {
    /// Reads a payload with the same checks as [`SerialRecord::decode`].
    pub fn decode(version: u8, payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut d = serial_decoder(version, payload)?;
        if version == SERIAL_ALLOCATED_VERSION {
            d.u64()?;
            d.u64()?;
            d.finish()?;
            return Ok(SerialView {
                state: SerialState::Allocated,
                reason: 0,
                lot: "",
                flags: 0,
            });
        }
        let state = d.u8()?;
        let state =
            SerialState::from_u8(state).ok_or_else(|| d.error(format!("unknown state {state}")))?;
        let reason = d.u8()?;
        d.u64()?;
        d.u64()?;
        let lot = d.bytes()?;
        let lot = std::str::from_utf8(lot).map_err(|_| d.error("text field is not UTF-8"))?;
        let mut flags = 0;
        if version == SERIAL_RECORD_VERSION {
            flags = d.u8()?;
            d.bytes()?;
            d.bytes()?;
            d.u64()?;
        }
        d.finish()?;
        Ok(SerialView {
            state,
            reason,
            lot,
            flags,
        })
    }
}

/// How serials are drawn for a product or pool, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFormat {
    /// Market profile name (`eu-fmd`, …).
    pub profile: String,
    /// Alphabet (empty for the SGTIN-96 numeric range).
    pub alphabet: String,
    /// Length in characters (0 for the SGTIN-96 numeric range).
    pub length: u8,
}

impl StoredFormat {
    fn encode_into(&self, e: &mut Encoder) {
        e.text(&self.profile).text(&self.alphabet).u8(self.length);
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(StoredFormat {
            profile: d.text()?,
            alphabet: d.text()?,
            length: d.u8()?,
        })
    }
}

/// Product master data plus the GTIN's issuance counter: key `keys::product`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    /// Product name.
    pub name: String,
    /// GS1 company prefix length (6–12).
    pub company_prefix_length: u8,
    /// The product's serial format.
    pub format: StoredFormat,
    /// US NDC, if any.
    pub ndc: Option<String>,
    /// Whether the EU guessing rule is enforced for this GTIN.
    pub guessing_rule_enforced: bool,
    /// When it was registered.
    pub created_micros: u64,
    /// Serials ever issued for this GTIN (all pools, all formats).
    pub issued: u64,
    /// Withdrawn (issue 5): no more issuance.
    pub withdrawn: bool,
    /// When it was withdrawn (0 = not withdrawn).
    pub withdrawn_micros: u64,
    /// Why it was withdrawn.
    pub withdrawal_reason: String,
}

/// Payload version of product and lot records written by this build (2 added
/// the time and reason of a withdrawal or recall; version 1 is still read).
pub const MASTER_RECORD_VERSION: u8 = 2;

fn check_master_version(record: &'static str, version: u8) -> Result<(), DecodeError> {
    if version == 1 || version == MASTER_RECORD_VERSION {
        Ok(())
    } else {
        Err(DecodeError {
            record,
            detail: format!("version {version} is not 1 or {MASTER_RECORD_VERSION}"),
        })
    }
}

impl ProductRecord {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.text(&self.name).u8(self.company_prefix_length);
        self.format.encode_into(&mut e);
        match &self.ndc {
            Some(ndc) => e.u8(1).text(ndc),
            None => e.u8(0),
        };
        e.u8(u8::from(self.guessing_rule_enforced))
            .u64(self.created_micros)
            .u64(self.issued)
            .u8(u8::from(self.withdrawn))
            .u64(self.withdrawn_micros)
            .text(&self.withdrawal_reason)
            .finish()
    }

    /// The stored value: envelope with [`MASTER_RECORD_VERSION`].
    pub fn stored(&self) -> Vec<u8> {
        storage::value::encode(MASTER_RECORD_VERSION, &self.encode())
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_master_version("product record", version)?;
        let mut d = Decoder::new("product record", payload);
        let name = d.text()?;
        let company_prefix_length = d.u8()?;
        let format = StoredFormat::decode_from(&mut d)?;
        let ndc = match d.u8()? {
            0 => None,
            _ => Some(d.text()?),
        };
        let mut record = ProductRecord {
            name,
            company_prefix_length,
            format,
            ndc,
            guessing_rule_enforced: d.u8()? != 0,
            created_micros: d.u64()?,
            issued: d.u64()?,
            withdrawn: d.u8()? != 0,
            withdrawn_micros: 0,
            withdrawal_reason: String::new(),
        };
        if version == MASTER_RECORD_VERSION {
            record.withdrawn_micros = d.u64()?;
            record.withdrawal_reason = d.text()?;
        }
        d.finish()?;
        Ok(record)
    }
}

/// Lot status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LotStatus {
    /// Released.
    Active = 1,
    /// Recalled (issue 5): irreversible.
    Recalled = 2,
}

/// Lot master data: key `keys::lot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotRecord {
    /// Expiry as encoded, YYMMDD; fixed once registered.
    pub expiry: String,
    /// Status.
    pub status: LotStatus,
    /// When it was registered.
    pub created_micros: u64,
    /// When it was recalled (0 = not recalled).
    pub recalled_micros: u64,
    /// Why it was recalled.
    pub recall_reason: String,
}

impl LotRecord {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        Encoder::default()
            .text(&self.expiry)
            .u8(self.status as u8)
            .u64(self.created_micros)
            .u64(self.recalled_micros)
            .text(&self.recall_reason)
            .finish()
    }

    /// The stored value: envelope with [`MASTER_RECORD_VERSION`].
    pub fn stored(&self) -> Vec<u8> {
        storage::value::encode(MASTER_RECORD_VERSION, &self.encode())
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_master_version("lot record", version)?;
        let mut d = Decoder::new("lot record", payload);
        let expiry = d.text()?;
        let status = match d.u8()? {
            1 => LotStatus::Active,
            2 => LotStatus::Recalled,
            other => return Err(d.error(format!("unknown lot status {other}"))),
        };
        let mut record = LotRecord {
            expiry,
            status,
            created_micros: d.u64()?,
            recalled_micros: 0,
            recall_reason: String::new(),
        };
        if version == MASTER_RECORD_VERSION {
            record.recalled_micros = d.u64()?;
            record.recall_reason = d.text()?;
        }
        d.finish()?;
        Ok(record)
    }
}

/// A pool handed to a line: key `keys::pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    /// The client request id that created it.
    pub request_id: String,
    /// GTIN as its 14-digit integer value.
    pub gtin: u64,
    /// Line id.
    pub line_id: String,
    /// Location.
    pub location: String,
    /// Format the serials were drawn from.
    pub format: StoredFormat,
    /// OPEN-SCS selection criteria, sorted by key.
    pub selection_criteria: Vec<(String, String)>,
    /// Serials asked for.
    pub requested: u64,
    /// Serials granted (≤ requested).
    pub granted: u64,
    /// 0 = none, 1 = guessing rule, 2 = serial space: what limited a partial pool.
    pub limit: u8,
    /// When the pool was created.
    pub created_micros: u64,
    /// Serials committed so far (== granted once the pool is complete).
    pub committed: u64,
    /// Chunks committed so far (`keys::pool_chunk(pool_id, 0..chunks)`).
    pub chunks: u32,
    /// Serials of this pool commissioned so far. Stored as 0: the writer
    /// no longer keeps this count, `Issuer::pool` derives it from the
    /// serials' states.
    pub commissioned: u64,
    /// Serials of this pool returned (voided) so far. Stored as 0, derived
    /// on read like `commissioned`.
    pub returned: u64,
}

impl PoolRecord {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.text(&self.request_id)
            .u64(self.gtin)
            .text(&self.line_id)
            .text(&self.location);
        self.format.encode_into(&mut e);
        e.u32(u32::try_from(self.selection_criteria.len()).unwrap_or(u32::MAX));
        for (key, value) in &self.selection_criteria {
            e.text(key).text(value);
        }
        e.u64(self.requested)
            .u64(self.granted)
            .u8(self.limit)
            .u64(self.created_micros)
            .u64(self.committed)
            .u32(self.chunks)
            .u64(self.commissioned)
            .u64(self.returned)
            .finish()
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_version("pool record", version)?;
        let mut d = Decoder::new("pool record", payload);
        let request_id = d.text()?;
        let gtin = d.u64()?;
        let line_id = d.text()?;
        let location = d.text()?;
        let format = StoredFormat::decode_from(&mut d)?;
        let criteria_count = d.u32()?;
        if criteria_count > 1024 {
            return Err(d.error(format!("{criteria_count} selection criteria")));
        }
        let mut selection_criteria = Vec::with_capacity(criteria_count as usize);
        for _ in 0..criteria_count {
            selection_criteria.push((d.text()?, d.text()?));
        }
        let record = PoolRecord {
            request_id,
            gtin,
            line_id,
            location,
            format,
            selection_criteria,
            requested: d.u64()?,
            granted: d.u64()?,
            limit: d.u8()?,
            created_micros: d.u64()?,
            committed: d.u64()?,
            chunks: d.u32()?,
            commissioned: d.u64()?,
            returned: d.u64()?,
        };
        d.finish()?;
        Ok(record)
    }

    /// Serials handed out but neither commissioned nor returned.
    pub fn outstanding(&self) -> u64 {
        self.committed
            .saturating_sub(self.commissioned + self.returned)
    }
}

/// Packs a chunk of serials: each as a one-byte length then its bytes.
pub fn encode_chunk<'a>(serials: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for serial in serials {
        debug_assert!(serial.len() <= 20);
        out.push(serial.len() as u8);
        out.extend_from_slice(serial);
    }
    out
}

/// Unpacks a chunk written by [`encode_chunk`].
pub fn decode_chunk(version: u8, payload: &[u8]) -> Result<Vec<String>, DecodeError> {
    check_version("pool chunk", version)?;
    let mut d = Decoder::new("pool chunk", payload);
    let mut serials = Vec::new();
    while !d.is_empty() {
        let length = d.u8()?;
        let mut bytes = Vec::with_capacity(usize::from(length));
        for _ in 0..length {
            bytes.push(d.u8()?);
        }
        serials.push(String::from_utf8(bytes).map_err(|_| d.error("serial is not UTF-8"))?);
    }
    Ok(serials)
}

/// An idempotency record: key `keys::request(kind, id)`. `parameters` is a
/// hash of the request's parameters; `result` the stored outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// XXH3-64 of the canonical parameters: a replay with other parameters is refused.
    pub parameters: u64,
    /// Kind-specific outcome (a pool id, or per-item outcome codes).
    pub result: Vec<u8>,
}

impl RequestRecord {
    /// Encodes the payload: parameters hash then the raw result.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u64(self.parameters);
        e.0.extend_from_slice(&self.result);
        e.finish()
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_version("request record", version)?;
        let mut d = Decoder::new("request record", payload);
        let parameters = d.u64()?;
        Ok(RequestRecord {
            parameters,
            result: payload[8..].to_vec(),
        })
    }
}

/// An issued SSCC (a case or pallet): where it came from and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SsccRecord {
    /// Length of the company prefix inside the SSCC (for EPC URIs).
    pub prefix_length: u8,
    /// The SSCC pool that issued it.
    pub pool_id: u64,
    /// The parent SSCC (17 data digits as a number), if packed into one.
    pub parent: Option<u64>,
    /// Direct children (packs and SSCCs).
    pub children: u32,
    /// Packs below it at any depth.
    pub packs: u64,
}

impl SsccRecord {
    /// Encodes the payload: prefix length u8, pool id u64, has-parent u8,
    /// parent u64, children u32, packs u64.
    pub fn encode(&self) -> Vec<u8> {
        Encoder::default()
            .u8(self.prefix_length)
            .u64(self.pool_id)
            .u8(u8::from(self.parent.is_some()))
            .u64(self.parent.unwrap_or(0))
            .u32(self.children)
            .u64(self.packs)
            .finish()
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_version("sscc record", version)?;
        let mut d = Decoder::new("sscc record", payload);
        let prefix_length = d.u8()?;
        let pool_id = d.u64()?;
        let has_parent = d.u8()?;
        let parent = d.u64()?;
        let parent = match has_parent {
            0 => None,
            1 => Some(parent),
            other => return Err(d.error(format!("parent flag {other} is not 0 or 1"))),
        };
        let record = SsccRecord {
            prefix_length,
            pool_id,
            parent,
            children: d.u32()?,
            packs: d.u64()?,
        };
        d.finish()?;
        Ok(record)
    }
}

/// A pool of SSCCs handed to a line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SsccPoolRecord {
    /// Extension digit, 0–9.
    pub extension_digit: u8,
    /// Company prefix digits.
    pub company_prefix: String,
    /// SSCCs asked for.
    pub requested: u64,
    /// SSCCs allocated.
    pub granted: u64,
    /// Line and location the pool is for.
    pub line_id: String,
    /// GLN or site code.
    pub location: String,
    /// Commit time, µs since the epoch.
    pub created_micros: u64,
    /// Chunk records holding the SSCCs in order.
    pub chunks: u32,
    /// SSCCs left in the space after this pool.
    pub remaining: u64,
}

impl SsccPoolRecord {
    /// Encodes the payload in field order (texts length-prefixed).
    pub fn encode(&self) -> Vec<u8> {
        Encoder::default()
            .u8(self.extension_digit)
            .text(&self.company_prefix)
            .u64(self.requested)
            .u64(self.granted)
            .text(&self.line_id)
            .text(&self.location)
            .u64(self.created_micros)
            .u32(self.chunks)
            .u64(self.remaining)
            .finish()
    }

    /// Decodes a payload read with its envelope version.
    pub fn decode(version: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        check_version("sscc pool record", version)?;
        let mut d = Decoder::new("sscc pool record", payload);
        let record = SsccPoolRecord {
            extension_digit: d.u8()?,
            company_prefix: d.text()?,
            requested: d.u64()?,
            granted: d.u64()?,
            line_id: d.text()?,
            location: d.text()?,
            created_micros: d.u64()?,
            chunks: d.u32()?,
            remaining: d.u64()?,
        };
        d.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn format() -> StoredFormat {
        StoredFormat {
            profile: "eu-fmd".into(),
            alphabet: "AB".into(),
            length: 12,
        }
    }

    #[test]
    fn golden_bytes() {
        let serial = SerialRecord {
            state: SerialState::Decommissioned,
            reason: 2,
            pool_id: 7,
            changed_micros: 1,
            lot: "L1".into(),
            flags: FLAG_SUSPECT,
            party: "P".into(),
            location: "X".into(),
            decommissioned_micros: 9,
        };
        assert_eq!(
            serial.encode(),
            b"\x03\x02\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x01\0\x02L1\x01\0\x01P\0\x01X\0\0\0\0\0\0\0\x09"
        );
        // Version 1 (before flags, party, location) still reads.
        let v1 = b"\x02\x00\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x01\0\x02L1";
        let old = SerialRecord::decode(1, v1).unwrap();
        assert_eq!(
            (old.state, old.lot.as_str(), old.flags),
            (SerialState::Active, "L1", 0)
        );
        assert_eq!(SerialView::decode(1, v1).unwrap().lot, "L1");
        // A fresh ALLOCATED record is stored in 16 bytes (version 3).
        let fresh = SerialRecord {
            pool_id: 7,
            changed_micros: 1,
            ..SerialRecord::default()
        };
        let (version, payload) = fresh.stored();
        assert_eq!(
            (version, payload.as_slice()),
            (
                SERIAL_ALLOCATED_VERSION,
                &b"\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x01"[..]
            )
        );
        assert_eq!(SerialRecord::decode(version, &payload).unwrap(), fresh);
        let view = SerialView::decode(version, &payload).unwrap();
        assert_eq!(
            (view.state, view.reason, view.lot, view.flags),
            (SerialState::Allocated, 0, "", 0)
        );
        assert!(SerialRecord::decode(version, &payload[1..]).is_err());
        assert!(SerialView::decode(version, &[payload.as_slice(), b"x"].concat()).is_err());
        // Any other record keeps version 2.
        assert_eq!(serial.stored(), (SERIAL_RECORD_VERSION, serial.encode()));
        let encoded = serial.encode();
        let view = SerialView::decode(SERIAL_RECORD_VERSION, &encoded).unwrap();
        assert_eq!(
            (view.state, view.reason, view.lot, view.flags),
            (SerialState::Decommissioned, 2, "L1", 1)
        );
        let lot = LotRecord {
            expiry: "251231".into(),
            status: LotStatus::Recalled,
            created_micros: 2,
            recalled_micros: 3,
            recall_reason: "R".into(),
        };
        assert_eq!(
            lot.encode(),
            b"\0\x06251231\x02\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x03\0\x01R"
        );
        // Version 1 (before the recall time and reason) still reads.
        let v1 = LotRecord::decode(1, b"\0\x06251231\x01\0\0\0\0\0\0\0\x02").unwrap();
        assert_eq!((v1.status, v1.recalled_micros), (LotStatus::Active, 0));
        assert_eq!(LotRecord::decode(2, &lot.encode()).unwrap(), lot);
        let chunk = encode_chunk([b"AB".as_slice(), b"C".as_slice()]);
        assert_eq!(chunk, b"\x02AB\x01C");
        let request = RequestRecord {
            parameters: 0x0102,
            result: vec![9],
        };
        assert_eq!(request.encode(), b"\0\0\0\0\0\0\x01\x02\x09");
        let product = ProductRecord {
            name: "P".into(),
            company_prefix_length: 7,
            format: format(),
            ndc: None,
            guessing_rule_enforced: true,
            created_micros: 3,
            issued: 4,
            withdrawn: false,
            withdrawn_micros: 0,
            withdrawal_reason: String::new(),
        };
        let v1 =
            b"\0\x01P\x07\0\x06eu-fmd\0\x02AB\x0c\x00\x01\0\0\0\0\0\0\0\x03\0\0\0\0\0\0\0\x04\x00";
        assert_eq!(
            product.encode(),
            [&v1[..], b"\0\0\0\0\0\0\0\0\0\0"].concat()
        );
        assert_eq!(ProductRecord::decode(1, v1).unwrap(), product);
        assert_eq!(
            ProductRecord::decode(2, &product.encode()).unwrap(),
            product
        );
    }

    #[test]
    fn decoders_reject_unknown_versions_and_trailing_bytes() {
        let serial = SerialRecord {
            state: SerialState::Voided,
            pool_id: 1,
            ..SerialRecord::default()
        };
        let mut payload = serial.encode();
        assert!(SerialRecord::decode(3, &payload).is_err());
        assert!(SerialView::decode(3, &payload).is_err());
        payload.push(0);
        assert!(SerialRecord::decode(SERIAL_RECORD_VERSION, &payload).is_err());
        assert!(SerialView::decode(SERIAL_RECORD_VERSION, &payload).is_err());
    }

    proptest! {
        #[test]
        fn pool_records_round_trip(
            granted in 0u64..10_000_000,
            criteria in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,20}"), 0..5),
            line in "[A-Z0-9]{1,10}",
        ) {
            let pool = PoolRecord {
                request_id: "r".into(), gtin: 9_520_123_456_788, line_id: line, location: "site".into(),
                format: format(), selection_criteria: criteria, requested: granted + 1, granted, limit: 1,
                created_micros: 5, committed: granted, chunks: 3, commissioned: 1, returned: 2,
            };
            prop_assert_eq!(PoolRecord::decode(RECORD_VERSION, &pool.encode()).unwrap(), pool);
        }

        #[test]
        fn chunks_round_trip(serials in proptest::collection::vec("[!-~]{1,20}", 0..50)) {
            let packed = encode_chunk(serials.iter().map(|s| s.as_bytes()));
            prop_assert_eq!(decode_chunk(RECORD_VERSION, &packed).unwrap(), serials);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = SerialRecord::decode(RECORD_VERSION, &bytes);
            let _ = SerialRecord::decode(SERIAL_RECORD_VERSION, &bytes);
            let _ = SerialView::decode(SERIAL_RECORD_VERSION, &bytes);
            let _ = SerialRecord::decode(SERIAL_ALLOCATED_VERSION, &bytes);
            let _ = SerialView::decode(SERIAL_ALLOCATED_VERSION, &bytes);
            let _ = serial_full_merge(Some((SERIAL_ALLOCATED_VERSION, &bytes)), &[(SERIAL_PATCH_VERSION, &bytes)]);
            let _ = ProductRecord::decode(RECORD_VERSION, &bytes);
            let _ = LotRecord::decode(RECORD_VERSION, &bytes);
            let _ = LotRecord::decode(MASTER_RECORD_VERSION, &bytes);
            let _ = ProductRecord::decode(MASTER_RECORD_VERSION, &bytes);
            let _ = PoolRecord::decode(RECORD_VERSION, &bytes);
            let _ = decode_chunk(RECORD_VERSION, &bytes);
            let _ = RequestRecord::decode(RECORD_VERSION, &bytes);
            let _ = SerialPatch::decode(SERIAL_PATCH_VERSION, &bytes);
            let _ = serial_full_merge(Some((SERIAL_RECORD_VERSION, &bytes)), &[(SERIAL_PATCH_VERSION, &bytes)]);
            let _ = serial_partial_merge(&[(SERIAL_PATCH_VERSION, &bytes)]);
        }

        #[test]
        fn patches_round_trip_and_compose_like_applying_in_turn(
            first in arb_patch(), second in arb_patch(), base in arb_record(),
        ) {
            for patch in [&first, &second] {
                prop_assert_eq!(&SerialPatch::decode(SERIAL_PATCH_VERSION, &patch.encode()).unwrap(), patch);
            }
            let mut in_turn = base.clone();
            first.apply(&mut in_turn);
            second.apply(&mut in_turn);
            let mut composed = base.clone();
            first.clone().then(second.clone()).apply(&mut composed);
            prop_assert_eq!(&composed, &in_turn);
            // Through the merge operator, with and without a partial merge first.
            let (a, b) = (first.encode(), second.encode());
            // The base as stored: version 3 when it is a fresh ALLOCATED record.
            let (base_version, stored) = base.stored();
            prop_assert_eq!(&SerialRecord::decode(base_version, &stored).unwrap(), &base);
            let operands = [(SERIAL_PATCH_VERSION, &a[..]), (SERIAL_PATCH_VERSION, &b[..])];
            let (version, merged) = serial_full_merge(Some((base_version, &stored)), &operands).unwrap();
            prop_assert_eq!(SerialRecord::decode(version, &merged).unwrap(), in_turn.clone());
            let (pv, partial) = serial_partial_merge(&operands).unwrap();
            let (version, merged) = serial_full_merge(Some((base_version, &stored)), &[(pv, &partial[..])]).unwrap();
            prop_assert_eq!(SerialRecord::decode(version, &merged).unwrap(), in_turn);
        }
    }

    fn arb_state() -> impl Strategy<Value = SerialState> {
        prop_oneof![
            Just(SerialState::Allocated),
            Just(SerialState::Active),
            Just(SerialState::Decommissioned),
            Just(SerialState::Voided),
        ]
    }

    prop_compose! {
        fn arb_patch()(
            state in proptest::option::of(arb_state()),
            reason in proptest::option::of(0u8..9),
            changed_micros in proptest::option::of(any::<u64>()),
            lot in proptest::option::of("[!-~]{0,20}"),
            flags in proptest::option::of(0u8..4),
            party in proptest::option::of("[ -~]{0,12}"),
            location in proptest::option::of("[0-9]{0,13}"),
            decommissioned_micros in proptest::option::of(any::<u64>()),
        ) -> SerialPatch {
            SerialPatch { state, reason, changed_micros, lot, flags, party, location, decommissioned_micros }
        }
    }

    prop_compose! {
        fn arb_record()(
            state in arb_state(), reason in 0u8..9, pool_id in any::<u64>(), lot in "[!-~]{0,20}",
            fresh in any::<bool>(),
        ) -> SerialRecord {
            if fresh {
                // As a pool writes it (stored as version 3).
                return SerialRecord { pool_id, changed_micros: 3, ..SerialRecord::default() };
            }
            SerialRecord { state, reason, pool_id, lot, changed_micros: 3, ..SerialRecord::default() }
        }
    }

    #[test]
    fn patch_golden_bytes_and_a_patch_without_a_record_is_refused() {
        let patch = SerialPatch {
            state: Some(SerialState::Decommissioned),
            reason: Some(1),
            party: Some("P".into()),
            ..SerialPatch::default()
        };
        assert_eq!(patch.encode(), b"\x23\x03\x01\0\x01P");
        let encoded = patch.encode();
        assert!(serial_full_merge(None, &[(SERIAL_PATCH_VERSION, &encoded)]).is_err());
        // A record is never a merge operand.
        let record = SerialRecord::default().encode();
        assert!(
            serial_full_merge(
                Some((SERIAL_RECORD_VERSION, &record)),
                &[(SERIAL_RECORD_VERSION, &record)]
            )
            .is_err()
        );
    }

    #[test]
    fn sscc_records_golden_bytes() {
        let record = SsccRecord {
            prefix_length: 7,
            pool_id: 2,
            parent: Some(3),
            children: 4,
            packs: 5,
        };
        let mut expected = vec![7, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 3];
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(record.encode(), expected);
        assert_eq!(
            SsccRecord::decode(RECORD_VERSION, &expected).unwrap(),
            record
        );
        let mut bad = expected.clone();
        bad[9] = 2;
        assert!(SsccRecord::decode(RECORD_VERSION, &bad).is_err());
        assert!(SsccRecord::decode(2, &expected).is_err());
    }

    proptest::proptest! {
        #[test]
        fn sscc_records_round_trip(prefix_length: u8, pool_id: u64, parent: Option<u64>,
                                   children: u32, packs: u64) {
            let record = SsccRecord { prefix_length, pool_id, parent, children, packs };
            proptest::prop_assert_eq!(SsccRecord::decode(RECORD_VERSION, &record.encode()).unwrap(), record);
        }

        #[test]
        fn sscc_pool_records_round_trip(extension_digit in 0u8..10, company_prefix in "[0-9]{6,12}",
                                        requested: u64, granted: u64, line_id in "[ -~]{0,64}",
                                        location in "[ -~]{0,64}", created_micros: u64, chunks: u32,
                                        remaining: u64) {
            let record = SsccPoolRecord { extension_digit, company_prefix, requested, granted,
                                          line_id, location, created_micros, chunks, remaining };
            proptest::prop_assert_eq!(SsccPoolRecord::decode(RECORD_VERSION, &record.encode()).unwrap(), record);
        }

        #[test]
        fn decoding_sscc_records_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = SsccRecord::decode(RECORD_VERSION, &bytes);
            let _ = SsccPoolRecord::decode(RECORD_VERSION, &bytes);
        }
    }
}
