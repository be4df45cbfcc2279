//! Aggregation: SSCC pools, packing packs and SSCCs into cases and pallets,
//! unpacking, the tree below an SSCC, and decommissions that cascade to every
//! pack below one.
//!
//! One thread, the aggregation writer, owns the `hierarchy` family: every
//! SSCC, parent–child edge and SSCC pool is written by it alone, so a child
//! can never be given two parents. Packs belong to the shard writers; when the
//! aggregation writer needs their states to stay put (packing checks that a
//! pack is ACTIVE) it holds the shards involved ([`Command::Hold`]), and a
//! cascade has each involved shard decide its part and wait
//! ([`Command::Prepared`]) while the aggregation writer commits every part,
//! the hierarchy change and the events in one batch. Only the aggregation
//! writer holds or prepares shards, one request at a time, so no two
//! requests wait on each other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use storage::{ChangeSet, Family, Store, keys, value};

use crate::error::IssuerError;
use crate::events::{self, EventHeader};
use crate::generator::SerialGenerator;
use crate::model::{StatusAction, StatusItem};
use crate::records::{
    ProductRecord, RECORD_VERSION, RequestRecord, SsccPoolRecord, SsccRecord, decode_chunk,
    encode_chunk,
};
use crate::writer::{self, Command, EVENT_SERIALS_MAX, Hold, Reply, StatusPart};

/// Request-record kinds of the aggregation writer (after the shard writers').
const KIND_SSCC_POOL: u8 = 9;
const KIND_PACK: u8 = 10;
const KIND_UNPACK: u8 = 11;
const KIND_CASCADE: u8 = 12;

/// SSCCs per chunk record of an SSCC pool.
const SSCC_CHUNK: usize = 65_536;

/// Limits of aggregation, published by `GetServerInfo` and documented in
/// README.md.
#[derive(Debug, Clone, Copy)]
pub struct AggregationLimits {
    /// Children per Pack or Unpack request, and direct children per parent.
    pub children_max: usize,
    /// Levels below a top-level SSCC (a pack in a case on a pallet is 2).
    pub depth_max: u32,
    /// Nodes one hierarchy answer returns.
    pub nodes_max: usize,
    /// Packs below one SSCC at any depth (a cascade is one batch of them).
    pub packs_max: u64,
    /// SSCCs per SSCC pool request.
    pub sscc_pool_max: u64,
}

impl Default for AggregationLimits {
    fn default() -> Self {
        AggregationLimits {
            children_max: 10_000,
            depth_max: 4,
            nodes_max: 10_000,
            packs_max: 200_000,
            sscc_pool_max: 100_000,
        }
    }
}

/// A request for a pool of SSCCs.
#[derive(Debug, Clone)]
pub struct SsccPoolRequest {
    /// Client idempotency key.
    pub request_id: String,
    /// Extension digit, 0–9.
    pub extension_digit: u8,
    /// Company prefix, 6–12 digits, of a registered product.
    pub company_prefix: String,
    /// SSCCs wanted.
    pub count: u64,
    /// Line.
    pub line_id: String,
    /// GLN or site code.
    pub location: String,
    /// Who asks.
    pub party: String,
}

/// An allocated (or replayed) SSCC pool.
#[derive(Debug, Clone)]
pub struct SsccPool {
    /// Pool id.
    pub pool_id: u64,
    /// The pool.
    pub record: SsccPoolRecord,
    /// Its SSCCs (18 digits), in order.
    pub ssccs: Vec<String>,
    /// Answered from the stored pool.
    pub replayed: bool,
}

/// A child of an aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Child {
    /// A commissioned pack.
    Pack {
        /// GTIN.
        gtin: gs1::Gtin,
        /// Serial.
        serial: gs1::Serial,
    },
    /// A case or pallet.
    Sscc(gs1::Sscc),
}

/// Per-child outcome of Pack and Unpack (the numbering of
/// `serial.v1.AggregationChildOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildOutcome {
    /// Packed / unpacked (when the request was applied).
    Accepted = 1,
    /// Already in this parent (pack) or already not in it (unpack).
    Unchanged = 2,
    /// Pack: the child is in another parent.
    InOtherParent = 3,
    /// Unpack: the child is in another parent.
    NotInParent = 4,
    /// The pack is not ACTIVE.
    NotActive = 5,
    /// The serial was never issued for the GTIN.
    UnknownSerial = 6,
    /// The SSCC was never issued here.
    UnknownSscc = 7,
    /// The child SSCC is the parent or one of its ancestors.
    Cycle = 8,
    /// Packing would make the tree deeper than the limit.
    TooDeep = 9,
    /// The child is listed twice.
    Duplicate = 10,
    /// Outside the caller's scope.
    PermissionDenied = 11,
    /// Malformed (the edge's message says why).
    Malformed = 12,
}

impl ChildOutcome {
    fn from_code(code: u8) -> Option<Self> {
        use ChildOutcome::*;
        Some(match code {
            1 => Accepted,
            2 => Unchanged,
            3 => InOtherParent,
            4 => NotInParent,
            5 => NotActive,
            6 => UnknownSerial,
            7 => UnknownSscc,
            8 => Cycle,
            9 => TooDeep,
            10 => Duplicate,
            11 => PermissionDenied,
            12 => Malformed,
            _ => return None,
        })
    }

    fn ok(self) -> bool {
        matches!(self, ChildOutcome::Accepted | ChildOutcome::Unchanged)
    }
}

/// One child's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildResult {
    /// What happened.
    pub outcome: ChildOutcome,
    /// For `InOtherParent` / `NotInParent`: the child's parent (18 digits).
    pub current_parent: Option<String>,
}

/// A Pack or Unpack request.
#[derive(Debug, Clone)]
pub struct AggregationRequest {
    /// Client idempotency key.
    pub request_id: String,
    /// The case or pallet.
    pub parent: gs1::Sscc,
    /// The children, in order (malformed ones as `Err(reason)`); for Unpack,
    /// empty means all.
    pub children: Vec<Result<Child, String>>,
    /// Where.
    pub location: String,
    /// Who: the API token's name.
    pub party: String,
    /// Who at the location (operator or workstation id): events only.
    pub actor: String,
    /// When, as the client reports it (µs since the epoch).
    pub event_time_micros: Option<u64>,
}

/// The answer to Pack or Unpack.
#[derive(Debug, Clone)]
pub struct AggregationAnswer {
    /// Every child was accepted and the change is durable.
    pub applied: bool,
    /// One result per listed child.
    pub results: Vec<ChildResult>,
    /// Children taken out (Unpack).
    pub unpacked: u32,
    /// Direct children of the parent after the request.
    pub child_count: u32,
    /// Answered from the stored outcome.
    pub replayed: bool,
}

/// A decommission of every pack below an SSCC.
#[derive(Debug, Clone)]
pub struct CascadeRequest {
    /// Client idempotency key.
    pub request_id: String,
    /// The root.
    pub sscc: gs1::Sscc,
    /// The reason for every pack.
    pub reason: verifier::DecommissionReason,
    /// Who: the API token's name (compared by undo).
    pub party: String,
    /// Who at the location (operator or workstation id): events only.
    pub actor: String,
    /// Where (compared by undo).
    pub location: String,
    /// Free text for the events.
    pub note: String,
    /// When, as the client reports it (µs since the epoch).
    pub event_time_micros: Option<u64>,
}

/// The answer to a cascade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CascadeAnswer {
    /// Packs below the SSCC.
    pub packs: u64,
    /// Packs per `DecommissionOutcome` code, ascending by code.
    pub outcomes: Vec<(u8, u64)>,
    /// Answered from the stored outcome.
    pub replayed: bool,
}

/// A node of a hierarchy answer.
#[derive(Debug, Clone)]
pub struct HierarchyNode {
    /// What the node is.
    pub node: NodeId,
    /// For a pack: its index entry (None: unknown to the index).
    pub entry: Option<verifier::SerialEntry>,
    /// For an SSCC: packs below at any depth by (state, reason), sorted.
    pub pack_counts: Vec<(verifier::PackState, u8, u64)>,
    /// Children returned.
    pub children: Vec<HierarchyNode>,
    /// Direct children in total.
    pub child_count: u32,
}

/// An SSCC or a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeId {
    /// 18 digits.
    Sscc(String),
    /// GTIN value and serial.
    Pack(u64, String),
}

/// The tree below an SSCC.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// The root.
    pub root: HierarchyNode,
    /// The root's parents, nearest first.
    pub ancestors: Vec<String>,
    /// `max_depth` or `max_nodes` cut the tree.
    pub truncated: bool,
}

/// Work for the aggregation writer.
#[derive(Debug)]
pub(crate) enum AggregationCommand {
    SsccPool(SsccPoolRequest, Reply<SsccPool>),
    Pack(AggregationRequest, Reply<AggregationAnswer>),
    Unpack(AggregationRequest, Reply<AggregationAnswer>),
    Cascade(CascadeRequest, Reply<CascadeAnswer>),
    Hierarchy {
        sscc: gs1::Sscc,
        max_depth: u32,
        max_nodes: usize,
        reply: Reply<Hierarchy>,
    },
    SsccPrefixLength(Vec<String>, Reply<HashMap<String, u8>>),
}

/// The 17 data digits of an SSCC as a number.
pub fn sscc_value(sscc: &gs1::Sscc) -> u64 {
    sscc.as_str()[..17].parse().unwrap_or(0)
}

/// The 18-digit SSCC of 17 data digits.
pub fn sscc_text(value: u64) -> String {
    let data = format!("{value:017}");
    let check = gs1::check_digit(&data);
    format!("{data}{check}")
}

fn envelope(payload: &[u8]) -> Vec<u8> {
    value::encode(RECORD_VERSION, payload)
}

/// A direct child as stored: an SSCC, or a pack's (GTIN, serial).
type ChildKey = Result<u64, (u64, Vec<u8>)>;

/// Packs by (state, reason).
type PackCounts = HashMap<(verifier::PackState, u8), u64>;

/// The state of one hierarchy walk.
struct Walk<'v, 'i> {
    view: &'v verifier::View<'i>,
    nodes_left: usize,
    truncated: bool,
    packs_seen: u64,
}

/// The aggregation writer's state.
pub(crate) struct Aggregator {
    store: Arc<Store>,
    index: Arc<verifier::StatusIndex>,
    shards: Vec<SyncSender<Command>>,
    limits: AggregationLimits,
    generator: SerialGenerator,
    next_pool_id: u64,
}

/// The outcome codes a stored Pack/Unpack answer holds: applied u8,
/// unpacked u32, child count u32, then per child: outcome u8, parent u64
/// (0 = none).
fn encode_answer(answer: &AggregationAnswer) -> Vec<u8> {
    let mut out = vec![u8::from(answer.applied)];
    out.extend_from_slice(&answer.unpacked.to_be_bytes());
    out.extend_from_slice(&answer.child_count.to_be_bytes());
    for result in &answer.results {
        out.push(result.outcome as u8);
        let parent = result
            .current_parent
            .as_deref()
            .and_then(|p| p.get(..17))
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        out.extend_from_slice(&parent.to_be_bytes());
    }
    out
}

fn decode_answer(bytes: &[u8]) -> Result<AggregationAnswer, IssuerError> {
    let corrupt = || {
        IssuerError::Corrupt(crate::codec::DecodeError {
            record: "aggregation answer",
            detail: "bad layout".into(),
        })
    };
    if bytes.len() < 9 || !(bytes.len() - 9).is_multiple_of(9) {
        return Err(corrupt());
    }
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
    let mut results = Vec::new();
    for item in bytes[9..].chunks(9) {
        let outcome = ChildOutcome::from_code(item[0]).ok_or_else(corrupt)?;
        let parent = u64::from_be_bytes(item[1..9].try_into().unwrap_or([0; 8]));
        results.push(ChildResult {
            outcome,
            current_parent: (parent != 0).then(|| sscc_text(parent)),
        });
    }
    Ok(AggregationAnswer {
        applied: bytes[0] == 1,
        results,
        unpacked: u32_at(1),
        child_count: u32_at(5),
        replayed: true,
    })
}

impl Aggregator {
    pub(crate) fn new(
        store: Arc<Store>,
        index: Arc<verifier::StatusIndex>,
        shards: Vec<SyncSender<Command>>,
        limits: AggregationLimits,
    ) -> Result<Self, IssuerError> {
        let generator = SerialGenerator::from_os_entropy().map_err(|e| {
            IssuerError::FailedPrecondition(format!("cannot seed the SSCC generator: {e}"))
        })?;
        // The last SSCC pool id: the highest `H 04` key.
        let mut next_pool_id = 1;
        let prefix = [Family::Hierarchy.prefix(), keys::hierarchy::POOL];
        store.scan_prefix(Family::Hierarchy, &prefix, &prefix, |key, _, _| {
            if let Some(id) = key.get(2..10) {
                next_pool_id = u64::from_be_bytes(id.try_into().unwrap_or([0; 8])) + 1;
            }
            true
        })?;
        Ok(Aggregator {
            store,
            index,
            shards,
            limits,
            generator,
            next_pool_id,
        })
    }

    /// Serves commands until every sender is gone.
    pub(crate) fn run(mut self, commands: Receiver<AggregationCommand>) {
        while let Ok(command) = commands.recv() {
            match command {
                AggregationCommand::SsccPool(request, reply) => {
                    let _ = reply.send(self.sscc_pool(request));
                }
                AggregationCommand::Pack(request, reply) => {
                    let _ = reply.send(self.pack(request));
                }
                AggregationCommand::Unpack(request, reply) => {
                    let _ = reply.send(self.unpack(request));
                }
                AggregationCommand::Cascade(request, reply) => {
                    let _ = reply.send(self.cascade(request));
                }
                AggregationCommand::Hierarchy {
                    sscc,
                    max_depth,
                    max_nodes,
                    reply,
                } => {
                    let _ = reply.send(self.hierarchy(&sscc, max_depth, max_nodes));
                }
                AggregationCommand::SsccPrefixLength(ssccs, reply) => {
                    let _ = reply.send(self.prefix_lengths(ssccs));
                }
            }
        }
    }

    fn record(&self, sscc: u64) -> Result<Option<SsccRecord>, IssuerError> {
        match self.store.get(Family::Hierarchy, &keys::sscc(sscc))? {
            Some((version, payload)) => Ok(Some(SsccRecord::decode(version, &payload)?)),
            None => Ok(None),
        }
    }

    fn pack_parent(&self, gtin: u64, serial: &[u8]) -> Result<Option<u64>, IssuerError> {
        match self
            .store
            .get(Family::Hierarchy, &keys::pack_parent(gtin, serial))?
        {
            Some((_, payload)) if payload.len() == 8 => Ok(Some(u64::from_be_bytes(
                payload[..8].try_into().unwrap_or([0; 8]),
            ))),
            Some(_) => Err(IssuerError::Corrupt(crate::codec::DecodeError {
                record: "pack parent",
                detail: "not 8 bytes".into(),
            })),
            None => Ok(None),
        }
    }

    /// The ancestors of an SSCC, nearest first.
    fn ancestors(&self, mut sscc: u64) -> Result<Vec<u64>, IssuerError> {
        let mut chain = Vec::new();
        while let Some(parent) = self.record(sscc)?.and_then(|r| r.parent) {
            if chain.contains(&parent) || chain.len() > self.limits.depth_max as usize + 1 {
                return Err(IssuerError::Corrupt(crate::codec::DecodeError {
                    record: "sscc record",
                    detail: format!("the parent chain of {} does not end", sscc_text(sscc)),
                }));
            }
            chain.push(parent);
            sscc = parent;
        }
        Ok(chain)
    }

    /// The direct children of an SSCC: SSCCs, then packs.
    fn children(&self, parent: u64) -> Result<Vec<ChildKey>, IssuerError> {
        let prefix = keys::children(parent);
        let mut found = Vec::new();
        let mut bad = false;
        self.store
            .scan_prefix(Family::Hierarchy, &prefix, &prefix, |key, _, _| {
                match keys::decode_child(key) {
                    Some(Ok(sscc)) => found.push(Ok(sscc)),
                    Some(Err((gtin, serial))) => found.push(Err((gtin, serial.to_vec()))),
                    None => bad = true,
                }
                !bad
            })?;
        if bad {
            return Err(IssuerError::Corrupt(crate::codec::DecodeError {
                record: "hierarchy child key",
                detail: format!("undecodable child key under {}", sscc_text(parent)),
            }));
        }
        Ok(found)
    }

    /// Levels below an SSCC (0 when empty, 1 with packs only, …).
    fn height(&self, sscc: u64, budget: u32) -> Result<u32, IssuerError> {
        let mut height = 0;
        for child in self.children(sscc)? {
            let below = match child {
                Err(_) => 1,
                Ok(child) if budget > 0 => 1 + self.height(child, budget - 1)?,
                Ok(_) => u32::MAX / 2, // deeper than the limit allows: a defect
            };
            height = height.max(below);
        }
        Ok(height)
    }

    fn stored_request(
        &self,
        kind: u8,
        request_id: &str,
        parameters: u64,
    ) -> Result<Option<Vec<u8>>, IssuerError> {
        let Some((version, payload)) = self.store.get(
            Family::Requests,
            &keys::request(kind, request_id.as_bytes()),
        )?
        else {
            return Ok(None);
        };
        let stored = RequestRecord::decode(version, &payload)?;
        if stored.parameters != parameters {
            return Err(IssuerError::invalid(
                "request_id",
                format!("{request_id:?} was already used for a request with other parameters"),
            ));
        }
        Ok(Some(stored.result))
    }

    fn put_request(
        change: &mut ChangeSet,
        kind: u8,
        request_id: &str,
        parameters: u64,
        result: Vec<u8>,
    ) {
        change.put(
            Family::Requests,
            keys::request(kind, request_id.as_bytes()),
            envelope(&RequestRecord { parameters, result }.encode()),
        );
    }

    // ----- SSCC pools -----

    fn sscc_pool(&mut self, request: SsccPoolRequest) -> Result<SsccPool, IssuerError> {
        let parameters = {
            let mut h = writer::ParamsHasher::new();
            h.part(&[request.extension_digit]);
            h.part(request.company_prefix.as_bytes());
            h.part(&request.count.to_be_bytes());
            h.part(request.line_id.as_bytes());
            h.part(request.location.as_bytes());
            h.finish()
        };
        if let Some(result) =
            self.stored_request(KIND_SSCC_POOL, &request.request_id, parameters)?
        {
            let pool_id = u64::from_be_bytes(
                result
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            );
            return self.read_pool(pool_id);
        }
        let prefix_length = request.company_prefix.len();
        if !self.company_prefix_registered(&request.company_prefix)? {
            return Err(IssuerError::FailedPrecondition(format!(
                "company_prefix: no registered product has the company prefix {}",
                request.company_prefix
            )));
        }
        let reference_digits = 16 - prefix_length as u32;
        let space = 10u64.pow(reference_digits);
        let prefix_value: u64 = request.company_prefix.parse().unwrap_or(0);
        let base = u64::from(request.extension_digit) * 10u64.pow(16) + prefix_value * space;
        let issued_key =
            keys::sscc_issued(request.extension_digit, request.company_prefix.as_bytes());
        let issued = match self.store.get(Family::Hierarchy, &issued_key)? {
            Some((_, payload)) if payload.len() == 8 => {
                u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]))
            }
            _ => 0,
        };
        let wanted = request.count.min(space.saturating_sub(issued));
        // Draw distinct random serial references not issued before; bounded
        // redraws so a nearly full space ends in a partial pool.
        let mut drawn: Vec<u64> = Vec::with_capacity(wanted as usize);
        let mut seen: HashSet<u64> = HashSet::with_capacity(wanted as usize);
        let mut attempts = 16 * wanted + 10_000;
        let zone = u64::MAX - (u64::MAX % space);
        while (drawn.len() as u64) < wanted && attempts > 0 {
            let batch = (wanted as usize - drawn.len()).clamp(1, 4096);
            let mut candidates = Vec::with_capacity(batch);
            while candidates.len() < batch && attempts > 0 {
                attempts -= 1;
                let raw = self.generator.next_u64();
                if raw >= zone {
                    continue;
                }
                let value = base + raw % space;
                if seen.insert(value) {
                    candidates.push(value);
                }
            }
            let candidate_keys: Vec<Vec<u8>> = candidates.iter().map(|v| keys::sscc(*v)).collect();
            for (value, found) in candidates
                .iter()
                .zip(self.store.multi_get(Family::Hierarchy, &candidate_keys)?)
            {
                if found.is_none() {
                    drawn.push(*value);
                }
            }
        }
        let pool_id = self.next_pool_id;
        let now = writer::now_micros();
        let ssccs: Vec<String> = drawn.iter().map(|v| sscc_text(*v)).collect();
        let chunks = ssccs.chunks(SSCC_CHUNK).count() as u32;
        let granted = ssccs.len() as u64;
        let record = SsccPoolRecord {
            extension_digit: request.extension_digit,
            company_prefix: request.company_prefix.clone(),
            requested: request.count,
            granted,
            line_id: request.line_id.clone(),
            location: request.location.clone(),
            created_micros: now,
            chunks,
            remaining: space.saturating_sub(issued).saturating_sub(granted),
        };
        let mut change = ChangeSet::new();
        let sscc_value = envelope(
            &SsccRecord {
                prefix_length: prefix_length as u8,
                pool_id,
                ..SsccRecord::default()
            }
            .encode(),
        );
        for value in &drawn {
            change.put(Family::Hierarchy, keys::sscc(*value), sscc_value.clone());
        }
        for (index, chunk) in ssccs.chunks(SSCC_CHUNK).enumerate() {
            change.put(
                Family::Hierarchy,
                keys::sscc_pool_chunk(pool_id, index as u32),
                envelope(&encode_chunk(chunk.iter().map(|s| s.as_bytes()))),
            );
        }
        change.put(
            Family::Hierarchy,
            keys::sscc_pool(pool_id),
            envelope(&record.encode()),
        );
        change.put(
            Family::Hierarchy,
            issued_key,
            envelope(&(issued + granted).to_be_bytes()),
        );
        Self::put_request(
            &mut change,
            KIND_SSCC_POOL,
            &request.request_id,
            parameters,
            pool_id.to_be_bytes().to_vec(),
        );
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::SSCC_POOL_ALLOCATED,
                request_id: request.request_id.clone(),
                principal: request.party.clone(),
                location: request.location.clone(),
                line_id: request.line_id.clone(),
                pool_id,
                count: granted,
                ..EventHeader::default()
            },
            [],
        ));
        self.store.commit(change)?;
        self.next_pool_id += 1;
        Ok(SsccPool {
            pool_id,
            record,
            ssccs,
            replayed: false,
        })
    }

    fn read_pool(&self, pool_id: u64) -> Result<SsccPool, IssuerError> {
        let (version, payload) = self
            .store
            .get(Family::Hierarchy, &keys::sscc_pool(pool_id))?
            .ok_or_else(|| IssuerError::NotFound(format!("SSCC pool {pool_id}")))?;
        let record = SsccPoolRecord::decode(version, &payload)?;
        let mut ssccs = Vec::with_capacity(record.granted as usize);
        for chunk in 0..record.chunks {
            let (version, payload) = self
                .store
                .get(Family::Hierarchy, &keys::sscc_pool_chunk(pool_id, chunk))?
                .ok_or_else(|| {
                    IssuerError::NotFound(format!("chunk {chunk} of SSCC pool {pool_id}"))
                })?;
            ssccs.extend(decode_chunk(version, &payload)?);
        }
        Ok(SsccPool {
            pool_id,
            record,
            ssccs,
            replayed: true,
        })
    }

    fn company_prefix_registered(&self, prefix: &str) -> Result<bool, IssuerError> {
        let family = [Family::Products.prefix()];
        let mut found = false;
        let mut failure = None;
        self.store.scan_prefix(
            Family::Products,
            &family,
            &family,
            |key, version, payload| {
                let gtin = key
                    .get(1..9)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                    .unwrap_or(0);
                match ProductRecord::decode(version, payload) {
                    Ok(record) => {
                        let digits = format!("{gtin:014}");
                        let length = usize::from(record.company_prefix_length);
                        found = digits.get(1..1 + length) == Some(prefix);
                    }
                    Err(error) => failure = Some(error),
                }
                !found && failure.is_none()
            },
        )?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(found),
        }
    }

    fn prefix_lengths(&self, ssccs: Vec<String>) -> Result<HashMap<String, u8>, IssuerError> {
        let mut out = HashMap::new();
        for text in ssccs {
            let Ok(sscc) = gs1::Sscc::new(&text) else {
                continue;
            };
            if let Some(record) = self.record(sscc_value(&sscc))? {
                out.insert(text, record.prefix_length);
            }
        }
        Ok(out)
    }

    // ----- Pack and Unpack -----

    fn parameters(kind: u8, request: &AggregationRequest) -> u64 {
        let mut h = writer::ParamsHasher::new();
        h.part(&[kind]);
        h.part(request.parent.as_str().as_bytes());
        h.part(request.location.as_bytes());
        h.part(request.party.as_bytes());
        for child in &request.children {
            match child {
                Ok(Child::Pack { gtin, serial }) => {
                    h.part(format!("p|{gtin}|{}", serial.as_str()).as_bytes())
                }
                Ok(Child::Sscc(sscc)) => h.part(format!("s|{sscc}").as_bytes()),
                Err(why) => h.part(format!("e|{why}").as_bytes()),
            }
        }
        h.finish()
    }

    /// Holds the shard writers of `gtins` until the guard is dropped.
    fn hold(
        &self,
        gtins: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<SyncSender<()>>, IssuerError> {
        let mut shards: Vec<usize> = gtins
            .into_iter()
            .map(|g| crate::shard_of(&format!("{g:014}"), self.shards.len()))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let mut releases = Vec::new();
        for shard in shards {
            let (held_tx, held_rx) = std::sync::mpsc::sync_channel(1);
            let (release_tx, release_rx) = std::sync::mpsc::sync_channel(1);
            self.shards[shard]
                .send(Command::Hold(Hold {
                    held: held_tx,
                    release: release_rx,
                }))
                .map_err(|_| IssuerError::ShuttingDown)?;
            held_rx.recv().map_err(|_| IssuerError::ShuttingDown)?;
            releases.push(release_tx);
        }
        Ok(releases)
    }

    fn pack(&mut self, request: AggregationRequest) -> Result<AggregationAnswer, IssuerError> {
        let parameters = Self::parameters(KIND_PACK, &request);
        if let Some(result) = self.stored_request(KIND_PACK, &request.request_id, parameters)? {
            return decode_answer(&result);
        }
        let parent = sscc_value(&request.parent);
        let Some(parent_record) = self.record(parent)? else {
            return Err(IssuerError::FailedPrecondition(format!(
                "parent_sscc: {} was not issued here (request it with RequestSsccPool)",
                request.parent
            )));
        };
        let ancestors = self.ancestors(parent)?;
        let parent_level = ancestors.len() as u32;
        let pack_gtins: Vec<u64> = request
            .children
            .iter()
            .filter_map(|c| match c {
                Ok(Child::Pack { gtin, .. }) => Some(writer::gtin_value(gtin)),
                _ => None,
            })
            .collect();
        // Pack states must not change between this check and the commit.
        let _held = self.hold(pack_gtins)?;
        let view = self.index.view();
        let mut seen = HashSet::new();
        let mut results = Vec::with_capacity(request.children.len());
        let mut new_packs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut new_ssccs: Vec<(u64, SsccRecord)> = Vec::new();
        let mut added_packs = 0u64;
        // An outcome that names no current parent.
        let plain = |outcome| ChildResult {
            outcome,
            current_parent: None,
        };
        for child in &request.children {
            let child = match child {
                Err(_) => {
                    results.push(plain(ChildOutcome::Malformed));
                    continue;
                }
                Ok(child) => child,
            };
            if !seen.insert(child.clone()) {
                results.push(plain(ChildOutcome::Duplicate));
                continue;
            }
            match child {
                Child::Pack { gtin, serial } => {
                    let gtin = writer::gtin_value(gtin);
                    let serial = serial.as_str().as_bytes();
                    let Some(entry) = view.entry(gtin, serial) else {
                        results.push(plain(ChildOutcome::UnknownSerial));
                        continue;
                    };
                    match self.pack_parent(gtin, serial)? {
                        Some(p) if p == parent => {
                            results.push(plain(ChildOutcome::Unchanged));
                            continue;
                        }
                        Some(other) => {
                            results.push(ChildResult {
                                outcome: ChildOutcome::InOtherParent,
                                current_parent: Some(sscc_text(other)),
                            });
                            continue;
                        }
                        None => {}
                    }
                    if entry.state != verifier::PackState::Active {
                        results.push(plain(ChildOutcome::NotActive));
                        continue;
                    }
                    if parent_level + 1 > self.limits.depth_max {
                        results.push(plain(ChildOutcome::TooDeep));
                        continue;
                    }
                    new_packs.push((gtin, serial.to_vec()));
                    added_packs += 1;
                    results.push(plain(ChildOutcome::Accepted));
                }
                Child::Sscc(sscc) => {
                    let value = sscc_value(sscc);
                    let Some(record) = self.record(value)? else {
                        results.push(plain(ChildOutcome::UnknownSscc));
                        continue;
                    };
                    if value == parent || ancestors.contains(&value) {
                        results.push(plain(ChildOutcome::Cycle));
                        continue;
                    }
                    match record.parent {
                        Some(p) if p == parent => {
                            results.push(plain(ChildOutcome::Unchanged));
                            continue;
                        }
                        Some(other) => {
                            results.push(ChildResult {
                                outcome: ChildOutcome::InOtherParent,
                                current_parent: Some(sscc_text(other)),
                            });
                            continue;
                        }
                        None => {}
                    }
                    let height = self.height(value, self.limits.depth_max)?;
                    if parent_level + 1 + height > self.limits.depth_max {
                        results.push(plain(ChildOutcome::TooDeep));
                        continue;
                    }
                    added_packs += record.packs;
                    new_ssccs.push((value, record));
                    results.push(plain(ChildOutcome::Accepted));
                }
            }
        }
        let added_children = (new_packs.len() + new_ssccs.len()) as u32;
        let child_count = parent_record.children;
        let applied = results.iter().all(|r| r.outcome.ok());
        if !applied {
            // Nothing is packed; nothing is stored (a retry is decided again).
            return Ok(AggregationAnswer {
                applied: false,
                results,
                unpacked: 0,
                child_count,
                replayed: false,
            });
        }
        if child_count as usize + added_children as usize > self.limits.children_max {
            return Err(IssuerError::FailedPrecondition(format!(
                "children: {} would hold {} direct children, more than max_aggregation_children {}",
                request.parent,
                child_count as usize + added_children as usize,
                self.limits.children_max
            )));
        }
        let root = ancestors.last().copied().unwrap_or(parent);
        let root_packs = if root == parent {
            parent_record.packs
        } else {
            self.record(root)?.map_or(0, |r| r.packs)
        };
        if root_packs + added_packs > self.limits.packs_max {
            return Err(IssuerError::FailedPrecondition(format!(
                "children: the tree of {} would hold {} packs, more than the limit of {}",
                sscc_text(root),
                root_packs + added_packs,
                self.limits.packs_max
            )));
        }

        let mut change = ChangeSet::new();
        let parent_bytes = envelope(&parent.to_be_bytes());
        let edge = envelope(&[]);
        for (gtin, serial) in &new_packs {
            change.put(
                Family::Hierarchy,
                keys::child_pack(parent, *gtin, serial),
                edge.clone(),
            );
            change.put(
                Family::Hierarchy,
                keys::pack_parent(*gtin, serial),
                parent_bytes.clone(),
            );
        }
        for (value, record) in &new_ssccs {
            change.put(
                Family::Hierarchy,
                keys::child_sscc(parent, *value),
                edge.clone(),
            );
            let moved = SsccRecord {
                parent: Some(parent),
                ..record.clone()
            };
            change.put(
                Family::Hierarchy,
                keys::sscc(*value),
                envelope(&moved.encode()),
            );
        }
        let updated = SsccRecord {
            children: parent_record.children + added_children,
            packs: parent_record.packs + added_packs,
            ..parent_record
        };
        change.put(
            Family::Hierarchy,
            keys::sscc(parent),
            envelope(&updated.encode()),
        );
        self.adjust_ancestors(&mut change, &ancestors, added_packs as i128)?;
        let answer = AggregationAnswer {
            applied: true,
            results,
            unpacked: 0,
            child_count: updated.children,
            replayed: false,
        };
        self.aggregation_events(
            &mut change,
            events::kind::PACKED,
            &request,
            &new_packs,
            new_ssccs.iter().map(|(v, _)| *v),
        );
        Self::put_request(
            &mut change,
            KIND_PACK,
            &request.request_id,
            parameters,
            encode_answer(&answer),
        );
        self.store.commit(change)?;
        Ok(answer)
    }

    fn adjust_ancestors(
        &self,
        change: &mut ChangeSet,
        ancestors: &[u64],
        delta: i128,
    ) -> Result<(), IssuerError> {
        if delta == 0 {
            return Ok(());
        }
        for ancestor in ancestors {
            let mut record = self.record(*ancestor)?.ok_or_else(|| {
                IssuerError::Corrupt(crate::codec::DecodeError {
                    record: "sscc record",
                    detail: format!("ancestor {} has no record", sscc_text(*ancestor)),
                })
            })?;
            record.packs = u64::try_from(i128::from(record.packs) + delta).unwrap_or(0);
            change.put(
                Family::Hierarchy,
                keys::sscc(*ancestor),
                envelope(&record.encode()),
            );
        }
        Ok(())
    }

    /// PACKED / UNPACKED events: one per GTIN of the packs (at most
    /// [`EVENT_SERIALS_MAX`] serials each), one for the SSCC children
    /// (GTIN 0), and one empty event when nothing changed.
    fn aggregation_events(
        &self,
        change: &mut ChangeSet,
        kind: u8,
        request: &AggregationRequest,
        packs: &[(u64, Vec<u8>)],
        ssccs: impl Iterator<Item = u64>,
    ) {
        let header = EventHeader {
            kind,
            request_id: request.request_id.clone(),
            principal: request.party.clone(),
            actor: request.actor.clone(),
            location: request.location.clone(),
            event_time_micros: request.event_time_micros.unwrap_or(0),
            sscc: request.parent.as_str().to_owned(),
            ..EventHeader::default()
        };
        let mut by_gtin: std::collections::BTreeMap<u64, Vec<&[u8]>> = Default::default();
        for (gtin, serial) in packs {
            by_gtin.entry(*gtin).or_default().push(serial);
        }
        let mut any = false;
        for (gtin, serials) in by_gtin {
            for chunk in serials.chunks(EVENT_SERIALS_MAX) {
                change.event(events::encode_body(
                    &EventHeader {
                        gtin,
                        ..header.clone()
                    },
                    chunk.iter().copied(),
                ));
                any = true;
            }
        }
        let texts: Vec<String> = ssccs.map(sscc_text).collect();
        for chunk in texts.chunks(EVENT_SERIALS_MAX) {
            change.event(events::encode_body(
                &header,
                chunk.iter().map(|s| s.as_bytes()),
            ));
            any = true;
        }
        if !any {
            change.event(events::encode_body(&header, []));
        }
    }

    fn unpack(
        &mut self,
        mut request: AggregationRequest,
    ) -> Result<AggregationAnswer, IssuerError> {
        let parameters = Self::parameters(KIND_UNPACK, &request);
        if let Some(result) = self.stored_request(KIND_UNPACK, &request.request_id, parameters)? {
            return decode_answer(&result);
        }
        let parent = sscc_value(&request.parent);
        let Some(parent_record) = self.record(parent)? else {
            return Err(IssuerError::NotFound(format!(
                "parent_sscc: {} was not issued here",
                request.parent
            )));
        };
        let all = request.children.is_empty();
        if all {
            request.children = self
                .children(parent)?
                .into_iter()
                .map(|child| match child {
                    Ok(sscc) => gs1::Sscc::new(&sscc_text(sscc))
                        .map(Child::Sscc)
                        .map_err(|e| e.to_string()),
                    Err((gtin, serial)) => {
                        let gtin = writer::decode_gtin(gtin).map_err(|e| e.to_string())?;
                        let serial = gs1::Serial::new(&String::from_utf8_lossy(&serial))
                            .map_err(|e| e.to_string())?;
                        Ok(Child::Pack { gtin, serial })
                    }
                })
                .collect();
        }
        let view = self.index.view();
        let mut seen = HashSet::new();
        let mut results = Vec::with_capacity(request.children.len());
        let mut removed_packs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut removed_ssccs: Vec<(u64, SsccRecord)> = Vec::new();
        let mut removed_pack_total = 0u64;
        let result = |outcome, parent: Option<u64>| ChildResult {
            outcome,
            current_parent: parent.map(sscc_text),
        };
        for child in &request.children {
            let child = match child {
                Err(_) => {
                    results.push(result(ChildOutcome::Malformed, None));
                    continue;
                }
                Ok(child) => child,
            };
            if !seen.insert(child.clone()) {
                results.push(result(ChildOutcome::Duplicate, None));
                continue;
            }
            match child {
                Child::Pack { gtin, serial } => {
                    let gtin = writer::gtin_value(gtin);
                    let serial = serial.as_str().as_bytes();
                    match self.pack_parent(gtin, serial)? {
                        Some(p) if p == parent => {
                            removed_packs.push((gtin, serial.to_vec()));
                            removed_pack_total += 1;
                            results.push(result(ChildOutcome::Accepted, None));
                        }
                        Some(other) => results.push(result(ChildOutcome::NotInParent, Some(other))),
                        None if view.entry(gtin, serial).is_none() => {
                            results.push(result(ChildOutcome::UnknownSerial, None))
                        }
                        None => results.push(result(ChildOutcome::Unchanged, None)),
                    }
                }
                Child::Sscc(sscc) => {
                    let value = sscc_value(sscc);
                    match self.record(value)? {
                        None => results.push(result(ChildOutcome::UnknownSscc, None)),
                        Some(record) => match record.parent {
                            Some(p) if p == parent => {
                                removed_pack_total += record.packs;
                                removed_ssccs.push((value, record));
                                results.push(result(ChildOutcome::Accepted, None));
                            }
                            Some(other) => {
                                results.push(result(ChildOutcome::NotInParent, Some(other)))
                            }
                            None => results.push(result(ChildOutcome::Unchanged, None)),
                        },
                    }
                }
            }
        }
        let applied = results.iter().all(|r| r.outcome.ok());
        if all {
            results.clear();
        }
        if !applied {
            return Ok(AggregationAnswer {
                applied: false,
                results,
                unpacked: 0,
                child_count: parent_record.children,
                replayed: false,
            });
        }
        let removed = (removed_packs.len() + removed_ssccs.len()) as u32;
        let mut change = ChangeSet::new();
        for (gtin, serial) in &removed_packs {
            change.delete(Family::Hierarchy, keys::child_pack(parent, *gtin, serial));
            change.delete(Family::Hierarchy, keys::pack_parent(*gtin, serial));
        }
        for (value, record) in &removed_ssccs {
            change.delete(Family::Hierarchy, keys::child_sscc(parent, *value));
            let freed = SsccRecord {
                parent: None,
                ..record.clone()
            };
            change.put(
                Family::Hierarchy,
                keys::sscc(*value),
                envelope(&freed.encode()),
            );
        }
        let updated = SsccRecord {
            children: parent_record.children.saturating_sub(removed),
            packs: parent_record.packs.saturating_sub(removed_pack_total),
            ..parent_record
        };
        change.put(
            Family::Hierarchy,
            keys::sscc(parent),
            envelope(&updated.encode()),
        );
        let ancestors = self.ancestors(parent)?;
        self.adjust_ancestors(&mut change, &ancestors, -i128::from(removed_pack_total))?;
        let answer = AggregationAnswer {
            applied: true,
            results,
            unpacked: removed,
            child_count: updated.children,
            replayed: false,
        };
        self.aggregation_events(
            &mut change,
            events::kind::UNPACKED,
            &request,
            &removed_packs,
            removed_ssccs.iter().map(|(v, _)| *v),
        );
        Self::put_request(
            &mut change,
            KIND_UNPACK,
            &request.request_id,
            parameters,
            encode_answer(&answer),
        );
        self.store.commit(change)?;
        Ok(answer)
    }

    // ----- The tree below an SSCC -----

    /// Every pack below an SSCC, at any depth (bounded by the packs limit).
    fn packs_below(&self, root: u64) -> Result<Vec<(u64, Vec<u8>)>, IssuerError> {
        let mut packs = Vec::new();
        let mut queue = vec![(root, 0u32)];
        while let Some((sscc, level)) = queue.pop() {
            for child in self.children(sscc)? {
                match child {
                    Ok(child) if level < self.limits.depth_max => queue.push((child, level + 1)),
                    Ok(_) => {}
                    Err(pack) => packs.push(pack),
                }
            }
            if packs.len() as u64 > self.limits.packs_max {
                return Err(IssuerError::FailedPrecondition(format!(
                    "sscc: {} holds more than {} packs",
                    sscc_text(root),
                    self.limits.packs_max
                )));
            }
        }
        Ok(packs)
    }

    fn hierarchy(
        &self,
        sscc: &gs1::Sscc,
        max_depth: u32,
        max_nodes: usize,
    ) -> Result<Hierarchy, IssuerError> {
        let root = sscc_value(sscc);
        let Some(record) = self.record(root)? else {
            return Err(IssuerError::NotFound(format!(
                "sscc: {sscc} was never issued here"
            )));
        };
        let ancestors = self.ancestors(root)?.into_iter().map(sscc_text).collect();
        let view = self.index.view();
        let mut walk = Walk {
            view: &view,
            nodes_left: max_nodes.saturating_sub(1),
            truncated: false,
            packs_seen: 0,
        };
        let (root, _) = self.walk(root, &record, 0, Some(max_depth), &mut walk)?;
        Ok(Hierarchy {
            // The root is always returned (depth_left is Some at the top).
            root: root.unwrap_or(HierarchyNode {
                node: NodeId::Sscc(sscc.as_str().to_owned()),
                entry: None,
                pack_counts: Vec::new(),
                children: Vec::new(),
                child_count: record.children,
            }),
            ancestors,
            truncated: walk.truncated,
        })
    }

    /// One pass over the tree below `sscc`: pack counts by state for every
    /// SSCC (all levels), and the nodes to return while `depth_left` (None:
    /// below the cut) and the node budget last. Every pack is looked up once.
    fn walk(
        &self,
        sscc: u64,
        record: &SsccRecord,
        level: u32,
        depth_left: Option<u32>,
        walk: &mut Walk<'_, '_>,
    ) -> Result<(Option<HierarchyNode>, PackCounts), IssuerError> {
        let mut counts: PackCounts = HashMap::new();
        let mut children = Vec::new();
        let direct = self.children(sscc)?;
        let returning = depth_left.is_some();
        let expand = depth_left.is_some_and(|d| d > 0) && level < self.limits.depth_max;
        if returning && !expand && !direct.is_empty() {
            walk.truncated = true;
        }
        for child in direct {
            // Nodes are returned while the depth and the node budget last.
            let shown = expand && {
                if walk.nodes_left == 0 {
                    walk.truncated = true;
                    false
                } else {
                    walk.nodes_left -= 1;
                    true
                }
            };
            match child {
                Ok(child) => {
                    if level >= self.limits.depth_max {
                        continue; // deeper than packing allows: never written
                    }
                    let child_record = self.record(child)?.unwrap_or_default();
                    let below = if shown {
                        depth_left.map(|d| d - 1)
                    } else {
                        None
                    };
                    let (node, child_counts) =
                        self.walk(child, &child_record, level + 1, below, walk)?;
                    for (key, n) in child_counts {
                        *counts.entry(key).or_default() += n;
                    }
                    if let Some(node) = node {
                        children.push(node);
                    }
                }
                Err((gtin, serial)) => {
                    walk.packs_seen += 1;
                    if walk.packs_seen > self.limits.packs_max {
                        return Err(IssuerError::FailedPrecondition(format!(
                            "sscc: {} holds more than {} packs",
                            sscc_text(sscc),
                            self.limits.packs_max
                        )));
                    }
                    let entry = walk.view.entry(gtin, &serial);
                    let key =
                        entry.map_or((verifier::PackState::Unknown, 0), |e| (e.state, e.reason));
                    *counts.entry(key).or_default() += 1;
                    if shown {
                        children.push(HierarchyNode {
                            entry,
                            node: NodeId::Pack(gtin, String::from_utf8_lossy(&serial).into_owned()),
                            pack_counts: Vec::new(),
                            children: Vec::new(),
                            child_count: 0,
                        });
                    }
                }
            }
        }
        let node = returning.then(|| {
            let mut pack_counts: Vec<(verifier::PackState, u8, u64)> =
                counts.iter().map(|((s, r), n)| (*s, *r, *n)).collect();
            pack_counts.sort_by_key(|(s, r, _)| (*s as u8, *r));
            HierarchyNode {
                node: NodeId::Sscc(sscc_text(sscc)),
                entry: None,
                pack_counts,
                children,
                child_count: record.children,
            }
        });
        Ok((node, counts))
    }

    // ----- Cascade -----

    fn cascade(&mut self, request: CascadeRequest) -> Result<CascadeAnswer, IssuerError> {
        let parameters = {
            let mut h = writer::ParamsHasher::new();
            h.part(request.sscc.as_str().as_bytes());
            h.part(&[request.reason as u8]);
            h.part(request.party.as_bytes());
            h.part(request.location.as_bytes());
            h.part(request.note.as_bytes());
            h.finish()
        };
        if let Some(result) = self.stored_request(KIND_CASCADE, &request.request_id, parameters)? {
            return decode_cascade(&result);
        }
        let root = sscc_value(&request.sscc);
        if self.record(root)?.is_none() {
            return Err(IssuerError::NotFound(format!(
                "sscc: {} was never issued here",
                request.sscc
            )));
        }
        let packs = self.packs_below(root)?;
        // One part per shard, items positioned in the list of packs.
        let mut parts: Vec<Vec<(usize, StatusItem)>> = vec![Vec::new(); self.shards.len()];
        for (position, (gtin, serial)) in packs.iter().enumerate() {
            let gtin14 = writer::decode_gtin(*gtin)?;
            let serial = gs1::Serial::new(&String::from_utf8_lossy(serial)).map_err(|e| {
                IssuerError::Corrupt(crate::codec::DecodeError {
                    record: "hierarchy child key",
                    detail: e.to_string(),
                })
            })?;
            let shard = crate::shard_of(gtin14.as_str(), self.shards.len());
            parts[shard].push((
                position,
                StatusItem {
                    gtin: gtin14,
                    serial,
                    lot: None,
                    expiry: None,
                },
            ));
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(self.shards.len());
        let mut releases = Vec::new();
        let mut answers = Vec::new();
        let mut failure = None;
        for (shard, items) in parts.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let mut part = StatusPart::new(
                request.request_id.clone(),
                StatusAction::Decommission(request.reason),
                request.party.clone(),
                request.location.clone(),
                request.note.clone(),
                request.event_time_micros,
                items,
            );
            part.record = false;
            part.sscc = request.sscc.as_str().to_owned();
            part.actor.clone_from(&request.actor);
            let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
            let (release_tx, release_rx) = std::sync::mpsc::sync_channel(1);
            if self.shards[shard]
                .send(Command::Prepared {
                    part,
                    reply: reply_tx,
                    release: release_rx,
                    done: done_tx.clone(),
                })
                .is_err()
            {
                failure = Some(IssuerError::ShuttingDown);
                break;
            }
            match reply_rx.recv() {
                Ok(Ok(answer)) => {
                    releases.push(release_tx);
                    answers.push(answer);
                }
                Ok(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                Err(_) => {
                    failure = Some(IssuerError::ShuttingDown);
                    break;
                }
            }
        }
        let release = |ok: bool| {
            for release in &releases {
                let _ = release.send(ok);
            }
        };
        if let Some(error) = failure {
            release(false);
            return Err(error);
        }
        let mut counts: std::collections::BTreeMap<u8, u64> = Default::default();
        let mut change = ChangeSet::new();
        for (positioned, part_change) in answers {
            for (_, result) in positioned {
                *counts.entry(result.outcome).or_default() += 1;
            }
            change.append(part_change);
        }
        let answer = CascadeAnswer {
            packs: packs.len() as u64,
            outcomes: counts.into_iter().collect(),
            replayed: false,
        };
        // The cascade's own event: it names the root even when no pack changed.
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::DECOMMISSIONED,
                request_id: request.request_id.clone(),
                principal: request.party.clone(),
                actor: request.actor.clone(),
                location: request.location.clone(),
                event_time_micros: request.event_time_micros.unwrap_or(0),
                reason: request.reason as u8,
                reason_text: request.note.clone(),
                sscc: request.sscc.as_str().to_owned(),
                count: answer.packs,
                ..EventHeader::default()
            },
            [],
        ));
        Self::put_request(
            &mut change,
            KIND_CASCADE,
            &request.request_id,
            parameters,
            encode_cascade(&answer),
        );
        if let Err(error) = self.store.commit(change) {
            release(false);
            return Err(error.into());
        }
        release(true);
        // Every shard applies its index entries before the answer.
        for _ in 0..releases.len() {
            match done_rx.recv() {
                Ok(result) => result?,
                Err(_) => return Err(IssuerError::ShuttingDown),
            }
        }
        Ok(answer)
    }
}

fn encode_cascade(answer: &CascadeAnswer) -> Vec<u8> {
    let mut out = answer.packs.to_be_bytes().to_vec();
    for (outcome, count) in &answer.outcomes {
        out.push(*outcome);
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

fn decode_cascade(bytes: &[u8]) -> Result<CascadeAnswer, IssuerError> {
    if bytes.len() < 8 || !(bytes.len() - 8).is_multiple_of(9) {
        return Err(IssuerError::Corrupt(crate::codec::DecodeError {
            record: "cascade answer",
            detail: "bad layout".into(),
        }));
    }
    let packs = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    let outcomes = bytes[8..]
        .chunks(9)
        .map(|c| {
            (
                c[0],
                u64::from_be_bytes(c[1..9].try_into().unwrap_or([0; 8])),
            )
        })
        .collect();
    Ok(CascadeAnswer {
        packs,
        outcomes,
        replayed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sscc_values_and_texts() {
        let sscc = gs1::Sscc::new("106141412345678908").unwrap();
        assert_eq!(sscc_value(&sscc), 10_614_141_234_567_890);
        assert_eq!(sscc_text(10_614_141_234_567_890), "106141412345678908");
    }

    proptest! {
        #[test]
        fn stored_answers_round_trip(
            applied: bool, unpacked: u32, child_count: u32,
            results in proptest::collection::vec((1u8..=12, proptest::option::of(1u64..=keys::SSCC_MAX)), 0..50),
        ) {
            let answer = AggregationAnswer {
                applied, unpacked, child_count, replayed: true,
                results: results.iter().map(|(o, p)| ChildResult {
                    outcome: ChildOutcome::from_code(*o).unwrap(),
                    current_parent: p.map(sscc_text),
                }).collect(),
            };
            let back = decode_answer(&encode_answer(&answer)).unwrap();
            prop_assert_eq!(back.results, answer.results);
            prop_assert_eq!((back.applied, back.unpacked, back.child_count), (applied, unpacked, child_count));
        }

        #[test]
        fn cascade_answers_round_trip(packs: u64, outcomes in proptest::collection::vec((1u8..=14, any::<u64>()), 0..14)) {
            let answer = CascadeAnswer { packs, outcomes, replayed: true };
            prop_assert_eq!(decode_cascade(&encode_cascade(&answer)).unwrap(), answer);
        }

        #[test]
        fn decoding_stored_answers_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_answer(&bytes);
            let _ = decode_cascade(&bytes);
        }
    }
}
