//! The shard writers. A GTIN belongs to exactly one shard (`xxh3(gtin) %
//! shards`); that shard's writer thread serialises every state change for its
//! GTINs, so uniqueness checks and allocation never race.
//!
//! Uniqueness: for each GTIN it has touched, a writer keeps the set of keyed
//! hashes of every serial issued for that GTIN, loaded from RocksDB on first
//! use and updated only after a durable commit. Because only this writer adds
//! serials for the GTIN, the set mirrors the store exactly: a candidate whose
//! hash is absent is new; a present hash is a duplicate or a hash collision,
//! and either way the candidate is redrawn.

use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use storage::{ChangeSet, Family, Store, keys, value};
use tokio::sync::{oneshot, watch};

use crate::IssuerConfig;
use crate::error::IssuerError;
use crate::events::{self, EventHeader};
use crate::format::Format;
use crate::generator::SerialGenerator;
use crate::model::*;
use crate::records::*;

mod status_ops;
pub(crate) use status_ops::{EVENT_SERIALS_MAX, StatusPart};

/// Reply channel of one command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, IssuerError>>;

/// What a shard answers for its part of a status group.
pub(crate) type PartAnswer =
    oneshot::Receiver<Result<(Vec<(usize, StatusResult)>, bool), IssuerError>>;

/// Work for a shard writer.
#[derive(Debug)]
pub(crate) enum Command {
    AddProduct(NewProduct, Reply<Product>),
    AddLot(NewLot, Reply<LotInfo>),
    RequestPool(PoolRequest, Reply<PoolTicket>),
    Commission(CommissionGroup, Reply<GroupOutcome>),
    Return(ReturnGroup, Reply<GroupOutcome>),
    Status(StatusPart, Reply<(Vec<(usize, StatusResult)>, bool)>),
    RecallLot {
        request_id: String,
        gtin: gs1::Gtin,
        lot: gs1::Lot,
        reason: String,
        principal: String,
        reply: Reply<(LotInfo, FlagChange)>,
    },
    WithdrawProduct {
        request_id: String,
        gtin: gs1::Gtin,
        reason: String,
        principal: String,
        reply: Reply<(Product, FlagChange)>,
    },
    FlagPack {
        request_id: String,
        gtin: gs1::Gtin,
        serial: gs1::Serial,
        action: PackFlagAction,
        reason: String,
        principal: String,
        reply: Reply<PackFlags>,
    },
    /// The aggregation writer needs this shard's packs to stay as they are:
    /// the writer says so on `held`, then does nothing until `release`
    /// answers or is dropped.
    Hold(Hold),
    /// One shard's part of a cascade: the writer decides it and sends the
    /// answers and change set (uncommitted) on `reply`, then waits on
    /// `release`: `true` means the aggregation writer committed every part
    /// in one batch, so the writer applies its index entries; then it
    /// reports on `done`.
    Prepared {
        part: StatusPart,
        reply: std::sync::mpsc::SyncSender<PreparedAnswer>,
        release: std::sync::mpsc::Receiver<bool>,
        done: std::sync::mpsc::SyncSender<Result<(), IssuerError>>,
    },
}

/// What a shard sends for its part of a cascade.
pub(crate) type PreparedAnswer = Result<(Vec<(usize, StatusResult)>, ChangeSet), IssuerError>;

/// See [`Command::Hold`].
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) held: std::sync::mpsc::SyncSender<()>,
    pub(crate) release: std::sync::mpsc::Receiver<()>,
}

/// Request-record kinds: a request id is unique per kind.
pub(crate) const KIND_POOL: u8 = 1;
pub(crate) const KIND_COMMISSION: u8 = 2;
pub(crate) const KIND_RETURN: u8 = 3;
pub(crate) const KIND_DECOMMISSION: u8 = 4;
pub(crate) const KIND_UNDO: u8 = 5;
pub(crate) const KIND_RECALL: u8 = 6;
pub(crate) const KIND_WITHDRAW: u8 = 7;
pub(crate) const KIND_FLAG: u8 = 8;

/// State shared by every writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    /// The verifier's index, updated after every durable commit, before the answer.
    pub(crate) index: Arc<verifier::StatusIndex>,
    pub(crate) config: IssuerConfig,
    pub(crate) next_pool_id: AtomicU64,
}

/// `u64` keys are already keyed hashes: use them as they are.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type HashedSet = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// Candidate serials generated and hashed before their hashes go into the
/// GTIN's issued set ([`Writer::draw`]).
const DRAW_BATCH: usize = 4096;

struct ProductState {
    record: ProductRecord,
    format: Format,
    /// Keyed hashes of every serial issued for the GTIN; loaded on first pool.
    issued: Option<HashedSet>,
}

pub(crate) struct Writer {
    shard: usize,
    shared: Arc<Shared>,
    products: HashMap<u64, ProductState>,
    generator: SerialGenerator,
    /// Secret key of the serial hashes, so clients cannot craft collisions.
    hash_secret: u64,
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn gtin_value(gtin: &gs1::Gtin) -> u64 {
    // A Gtin is 14 checked digits, so this cannot fail.
    gtin.as_str().parse().unwrap_or(0)
}

fn gtin_from_value(value: u64) -> Result<gs1::Gtin, DecodeErrorAlias> {
    gs1::Gtin::new(&format!("{value:014}")).map_err(|e| crate::codec::DecodeError {
        record: "gtin",
        detail: e.to_string(),
    })
}
type DecodeErrorAlias = crate::codec::DecodeError;

fn params_hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = ParamsHasher::new();
    for part in parts {
        hasher.part(part);
    }
    hasher.finish()
}

/// The parameter hash of an idempotent request, fed one part at a time:
/// each part is its length (u64 BE) then its bytes, so parts cannot run
/// into each other.
pub(crate) struct ParamsHasher(xxhash_rust::xxh3::Xxh3);

impl ParamsHasher {
    pub(crate) fn new() -> Self {
        Self(xxhash_rust::xxh3::Xxh3::new())
    }

    pub(crate) fn part(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.digest()
    }
}

fn envelope(payload: &[u8]) -> Vec<u8> {
    value::encode(RECORD_VERSION, payload)
}

pub(crate) fn serial_envelope(record: &SerialRecord) -> Vec<u8> {
    let (version, payload) = record.stored();
    value::encode(version, &payload)
}

impl Writer {
    pub(crate) fn new(shard: usize, shared: Arc<Shared>) -> Result<Self, IssuerError> {
        let mut generator = SerialGenerator::from_os_entropy().map_err(|e| {
            IssuerError::FailedPrecondition(format!("cannot seed the serial generator: {e}"))
        })?;
        let hash_secret = generator.next_u64();
        Ok(Writer {
            shard,
            shared,
            products: HashMap::new(),
            generator,
            hash_secret,
        })
    }

    /// Serves commands until every sender is gone.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        tracing::debug!(shard = self.shard, "shard writer started");
        while let Ok(command) = commands.recv() {
            match command {
                Command::AddProduct(request, reply) => {
                    let _ = reply.send(self.add_product(request));
                }
                Command::AddLot(request, reply) => {
                    let _ = reply.send(self.add_lot(request));
                }
                Command::RequestPool(request, reply) => self.request_pool(request, reply),
                Command::Commission(group, reply) => {
                    let _ = reply.send(self.commission(group));
                }
                Command::Return(group, reply) => {
                    let _ = reply.send(self.return_serials(group));
                }
                Command::Status(part, reply) => {
                    let _ = reply.send(self.status_part(part));
                }
                Command::RecallLot {
                    request_id,
                    gtin,
                    lot,
                    reason,
                    principal,
                    reply,
                } => {
                    let _ =
                        reply.send(self.recall_lot(&request_id, &gtin, &lot, &reason, &principal));
                }
                Command::WithdrawProduct {
                    request_id,
                    gtin,
                    reason,
                    principal,
                    reply,
                } => {
                    let _ =
                        reply.send(self.withdraw_product(&request_id, &gtin, &reason, &principal));
                }
                Command::FlagPack {
                    request_id,
                    gtin,
                    serial,
                    action,
                    reason,
                    principal,
                    reply,
                } => {
                    let _ = reply.send(self.flag_pack(
                        &request_id,
                        &gtin,
                        &serial,
                        action,
                        &reason,
                        &principal,
                    ));
                }
                Command::Hold(hold) => {
                    if hold.held.send(()).is_ok() {
                        let _ = hold.release.recv();
                    }
                }
                Command::Prepared {
                    part,
                    reply,
                    release,
                    done,
                } => match self.prepare_status(part) {
                    Ok(prepared) => {
                        let change = prepared.change.unwrap_or_default();
                        if reply.send(Ok((prepared.positioned, change))).is_ok()
                            && release.recv() == Ok(true)
                        {
                            let _ = done.send(self.apply_prepared(prepared.index));
                        }
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            }
        }
        tracing::debug!(shard = self.shard, "shard writer stopped");
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The product's cached state, loading it from storage on first use.
    fn product(&mut self, gtin: u64) -> Result<Option<&mut ProductState>, IssuerError> {
        if !self.products.contains_key(&gtin) {
            let Some((version, payload)) =
                self.store().get(Family::Products, &keys::product(gtin))?
            else {
                return Ok(None);
            };
            let record = ProductRecord::decode(version, &payload)?;
            let format = Format::from_stored(&record.format)?;
            self.products.insert(
                gtin,
                ProductState {
                    record,
                    format,
                    issued: None,
                },
            );
        }
        Ok(self.products.get_mut(&gtin))
    }

    fn add_product(&mut self, request: NewProduct) -> Result<Product, IssuerError> {
        let gtin = gtin_value(&request.gtin);
        let format = Format::resolve(&request.profile, request.custom_format.as_ref())?;
        let enforced = request
            .guessing_rule_enforced
            .unwrap_or(format.profile.guessing_rule_default());
        let record = ProductRecord {
            name: request.name.clone(),
            company_prefix_length: request.company_prefix_length,
            format: format.to_stored(),
            ndc: request.ndc.clone(),
            guessing_rule_enforced: enforced,
            created_micros: now_micros(),
            issued: 0,
            withdrawn: false,
            withdrawn_micros: 0,
            withdrawal_reason: String::new(),
        };
        if let Some(existing) = self.product(gtin)? {
            let same = existing.record.name == record.name
                && existing.record.company_prefix_length == record.company_prefix_length
                && existing.record.format == record.format
                && existing.record.ndc == record.ndc
                && existing.record.guessing_rule_enforced == record.guessing_rule_enforced;
            if same {
                return Ok(Product {
                    gtin: request.gtin,
                    record: existing.record.clone(),
                    format: existing.format.clone(),
                });
            }
            return Err(IssuerError::AlreadyExists(format!(
                "GTIN {} is already registered as {:?} (profile {}, company prefix length {}); registered products cannot be changed",
                request.gtin,
                existing.record.name,
                existing.record.format.profile,
                existing.record.company_prefix_length
            )));
        }
        let mut change = ChangeSet::new();
        change.put(Family::Products, keys::product(gtin), record.stored());
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::PRODUCT_ADDED,
                gtin,
                principal: request.principal.clone(),
                ..EventHeader::default()
            },
            [],
        ));
        self.store().commit(change)?;
        self.shared.index.put_product(gtin, self.shard, false);
        self.products.insert(
            gtin,
            ProductState {
                record: record.clone(),
                format: format.clone(),
                issued: None,
            },
        );
        Ok(Product {
            gtin: request.gtin,
            record,
            format,
        })
    }

    fn add_lot(&mut self, request: NewLot) -> Result<LotInfo, IssuerError> {
        let gtin = gtin_value(&request.gtin);
        match self.product(gtin)? {
            None => {
                return Err(IssuerError::FailedPrecondition(format!(
                    "GTIN {} is not registered",
                    request.gtin
                )));
            }
            Some(product) if product.record.withdrawn => {
                return Err(IssuerError::FailedPrecondition(format!(
                    "product {} is withdrawn: no new lots",
                    request.gtin
                )));
            }
            Some(_) => {}
        }
        let key = keys::lot(gtin, request.lot.as_str().as_bytes());
        let expiry = request.expiry.to_string();
        if let Some((version, payload)) = self.store().get(Family::Lots, &key)? {
            let existing = LotRecord::decode(version, &payload)?;
            if existing.expiry != expiry {
                return Err(IssuerError::AlreadyExists(format!(
                    "lot {} of GTIN {} is registered with expiry {}; refusing expiry {} (a lot's expiry is fixed once registered)",
                    request.lot.as_str(),
                    request.gtin,
                    existing.expiry,
                    expiry
                )));
            }
            return Ok(lot_info(&request.gtin, request.lot.as_str(), &existing));
        }
        if self.shared.index.lots() >= verifier::LOTS_MAX {
            return Err(IssuerError::Exhausted(format!(
                "this installation holds its maximum of {} lots",
                verifier::LOTS_MAX
            )));
        }
        let record = LotRecord {
            expiry,
            status: LotStatus::Active,
            created_micros: now_micros(),
            recalled_micros: 0,
            recall_reason: String::new(),
        };
        let mut change = ChangeSet::new();
        change.put(Family::Lots, key, record.stored());
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::LOT_ADDED,
                gtin,
                lot: request.lot.as_str().to_owned(),
                expiry: request.expiry.to_string(),
                principal: request.principal.clone(),
                ..EventHeader::default()
            },
            [],
        ));
        self.store().commit(change)?;
        self.shared
            .index
            .put_lot(gtin, request.lot.as_str(), request.expiry, false)?;
        Ok(lot_info(&request.gtin, request.lot.as_str(), &record))
    }

    /// Loads the issued-serial hashes of a GTIN (once per writer lifetime).
    fn ensure_issued_set(&mut self, gtin: u64) -> Result<(), IssuerError> {
        let loaded = self.products.get(&gtin).is_some_and(|p| p.issued.is_some());
        if loaded {
            return Ok(());
        }
        let prefix = keys::serial(gtin, b"");
        let mut set = HashedSet::default();
        let secret = self.hash_secret;
        let started = std::time::Instant::now();
        self.store()
            .scan_prefix(Family::Serials, &prefix, &prefix, |key, _, _| {
                set.insert(xxhash_rust::xxh3::xxh3_64_with_seed(
                    &key[prefix.len()..],
                    secret,
                ));
                true
            })?;
        tracing::info!(
            shard = self.shard,
            gtin,
            serials = set.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded issued serials"
        );
        if let Some(product) = self.products.get_mut(&gtin) {
            product.issued = Some(set);
        }
        Ok(())
    }

    fn request_pool(&mut self, request: PoolRequest, reply: Reply<PoolTicket>) {
        let started = std::time::Instant::now();
        let plan = self.plan_pool(&request);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pool planned (its first segments drawn)"
        );
        match plan {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok(plan) => self.commit_pool(request, plan, reply),
        }
    }

    fn pool_parameters(request: &PoolRequest) -> u64 {
        let count = request.count.to_be_bytes();
        let mut parts: Vec<&[u8]> = vec![
            request.gtin.as_str().as_bytes(),
            &count,
            request.line_id.as_bytes(),
            request.location.as_bytes(),
            request.profile_override.as_deref().unwrap_or("").as_bytes(),
        ];
        let format = request
            .format_override
            .as_ref()
            .map(|(a, l)| format!("{a}\u{0}{l}"))
            .unwrap_or_default();
        parts.push(format.as_bytes());
        let criteria: Vec<String> = request
            .selection_criteria
            .iter()
            .map(|(k, v)| format!("{k}\u{0}{v}"))
            .collect();
        for criterion in &criteria {
            parts.push(criterion.as_bytes());
        }
        params_hash(&parts)
    }

    /// Decides what to commit: a new pool's serials, the rest of a pool a crash
    /// interrupted, or nothing (a finished pool replayed).
    fn plan_pool(&mut self, request: &PoolRequest) -> Result<PoolPlan, IssuerError> {
        let gtin = gtin_value(&request.gtin);
        let parameters = Self::pool_parameters(request);
        let request_key = keys::request(KIND_POOL, request.request_id.as_bytes());
        if let Some((version, payload)) = self.store().get(Family::Requests, &request_key)? {
            let stored = RequestRecord::decode(version, &payload)?;
            if stored.parameters != parameters {
                return Err(IssuerError::invalid(
                    "request_id",
                    format!(
                        "{:?} was already used for a pool request with other parameters",
                        request.request_id
                    ),
                ));
            }
            let pool_id =
                u64::from_be_bytes(stored.result.as_slice().try_into().map_err(|_| {
                    crate::codec::DecodeError {
                        record: "request record",
                        detail: "pool id".into(),
                    }
                })?);
            let (version, payload) = self
                .store()
                .get(Family::Pools, &keys::pool(pool_id))?
                .ok_or_else(|| {
                    IssuerError::NotFound(format!(
                        "pool {pool_id} of request {:?} is missing",
                        request.request_id
                    ))
                })?;
            let pool = PoolRecord::decode(version, &payload)?;
            let missing = pool.granted.saturating_sub(pool.committed);
            // After a restart the product is not cached yet; `draw` and `ticket` need it.
            if self.product(gtin)?.is_none() {
                return Err(IssuerError::FailedPrecondition(format!(
                    "GTIN {} is not registered",
                    request.gtin
                )));
            }
            let mut pool = pool;
            let serials = if missing > 0 {
                // The rest of a pool a crash cut short (none of it was sent):
                // drawn from the pool's own format, within today's limits.
                let format = Format::from_stored(&pool.format)?;
                let (serials, limit) = match self.draw(gtin, &request.gtin, missing, Some(&format))
                {
                    Ok(drawn) => drawn,
                    // Nothing more may be issued now: the pool ends with what is durable.
                    Err(IssuerError::Exhausted(_)) => {
                        let enforced = self
                            .product(gtin)?
                            .is_some_and(|p| p.record.guessing_rule_enforced);
                        let limit = if enforced {
                            PoolLimit::GuessingRule
                        } else {
                            PoolLimit::SerialSpace
                        };
                        (SerialBuffer::default(), limit)
                    }
                    Err(error) => return Err(error),
                };
                if (serials.len() as u64) < missing {
                    pool.granted = pool.committed + serials.len() as u64;
                    pool.limit = limit.code();
                }
                serials
            } else {
                SerialBuffer::default()
            };
            return Ok(PoolPlan {
                pool_id,
                pool,
                serials,
                draw: None,
                request_record: None,
            });
        }

        let product = self.product(gtin)?.ok_or_else(|| {
            IssuerError::FailedPrecondition(format!("GTIN {} is not registered", request.gtin))
        })?;
        if product.record.withdrawn {
            return Err(IssuerError::FailedPrecondition(format!(
                "product {} is withdrawn",
                request.gtin
            )));
        }
        let format = match (&request.profile_override, &request.format_override) {
            (None, None) => product.format.clone(),
            (profile, custom) => {
                let profile = profile
                    .clone()
                    .unwrap_or_else(|| product.format.profile.name().to_owned());
                Format::resolve(&profile, custom.as_ref())?
            }
        };
        // Two segments drawn here; the rest while the first are committed.
        let (mut draw, mut serials) =
            self.start_draw(gtin, &request.gtin, request.count, Some(&format))?;
        let segment = self.shared.config.pool_segment_size.max(1);
        self.draw_more(gtin, &mut draw, &mut serials, segment.saturating_mul(2));
        if serials.is_empty() {
            return Err(draw.exhausted(&request.gtin));
        }
        // Until the draw ends, the pool is recorded as granted in full; the
        // segment that ends it records what was granted (a crash before then
        // leaves a pool whose replay draws the rest, as after any crash).
        let granted = if draw.ended {
            serials.len() as u64
        } else {
            draw.wanted
        };
        let limit = draw.limit;
        let pool_id = self.shared.next_pool_id.fetch_add(1, Ordering::SeqCst);
        let pool = PoolRecord {
            request_id: request.request_id.clone(),
            gtin,
            line_id: request.line_id.clone(),
            location: request.location.clone(),
            format: format.to_stored(),
            selection_criteria: request.selection_criteria.clone(),
            requested: request.count,
            granted,
            limit: limit.code(),
            created_micros: now_micros(),
            committed: 0,
            chunks: 0,
            commissioned: 0,
            returned: 0,
        };
        let record = RequestRecord {
            parameters,
            result: pool_id.to_be_bytes().to_vec(),
        };
        Ok(PoolPlan {
            pool_id,
            pool,
            serials,
            draw: (!draw.ended).then_some(draw),
            request_record: Some((request_key, record)),
        })
    }

    /// Draws up to `count` new serials for the GTIN (in the pool's format, or the
    /// stored one when continuing), within the guessing rule, inserting their
    /// hashes into the issued set. Fails when not a single serial can be issued.
    fn draw(
        &mut self,
        gtin: u64,
        display: &gs1::Gtin,
        count: u64,
        format: Option<&Format>,
    ) -> Result<(SerialBuffer, PoolLimit), IssuerError> {
        let (mut draw, mut serials) = self.start_draw(gtin, display, count, format)?;
        self.draw_more(gtin, &mut draw, &mut serials, usize::MAX);
        if serials.is_empty() {
            return Err(draw.exhausted(display));
        }
        Ok((serials, draw.limit))
    }

    /// Begins a draw of up to `count` serials: settles how many the guessing
    /// rule allows and makes room for them in the issued set. Fails when not
    /// a single serial may be issued; [`Writer::draw_more`] draws them.
    fn start_draw(
        &mut self,
        gtin: u64,
        display: &gs1::Gtin,
        count: u64,
        format: Option<&Format>,
    ) -> Result<(Draw, SerialBuffer), IssuerError> {
        self.ensure_issued_set(gtin)?;
        let rule = self.shared.config.guessing_rule;
        let Some(product) = self.products.get_mut(&gtin) else {
            return Err(IssuerError::FailedPrecondition(format!(
                "GTIN {display} is not registered"
            )));
        };
        let format = format.cloned().unwrap_or_else(|| product.format.clone());
        let space = format.serial.space_size();
        let enforced = product.record.guessing_rule_enforced;
        let allowance = rule.issuable_remaining(space, product.record.issued, enforced);
        let mut limit = PoolLimit::None;
        let mut wanted = count;
        if allowance < count {
            wanted = allowance;
            limit = if enforced {
                PoolLimit::GuessingRule
            } else {
                PoolLimit::SerialSpace
            };
        }
        if wanted == 0 {
            let figures = figures_of(
                &self.shared.config,
                display,
                &product.record,
                &product.format,
            );
            return Err(IssuerError::Exhausted(format!(
                "no serial can be issued for GTIN {display}: issued {}, space {}, ratio {:.3e}, limit {:.3e} ({})",
                figures.issued,
                figures.space_size,
                figures.ratio,
                figures.ratio_limit,
                if enforced {
                    "EU guessing rule"
                } else {
                    "serial space used up"
                }
            )));
        }
        let set = product.issued.get_or_insert_with(HashedSet::default);
        let capacity = usize::try_from(wanted).unwrap_or(0).min(1 << 24);
        // Grow the set once, not by repeated rehashing while drawing.
        set.reserve(capacity);
        let serials = SerialBuffer::with_capacity(capacity, format.serial.length() as usize);
        let draw = Draw {
            // Bounded redraws: a nearly full space ends in a partial pool, never a loop.
            redraws_max: wanted.saturating_mul(16).saturating_add(10_000),
            redraws: 0,
            wanted,
            limit,
            ended: false,
            space,
            issued_before: product.record.issued,
            format,
        };
        Ok((draw, serials))
    }

    /// Draws on until `serials` holds `target` serials, or the draw's own
    /// count, or the space gives out (then `draw.limit` says so). Ends the
    /// draw when it has drawn all it will.
    fn draw_more(&mut self, gtin: u64, draw: &mut Draw, serials: &mut SerialBuffer, target: usize) {
        let target = u64::try_from(target).unwrap_or(u64::MAX).min(draw.wanted);
        let Some(product) = self.products.get_mut(&gtin) else {
            draw.ended = true;
            return;
        };
        let set = product.issued.get_or_insert_with(HashedSet::default);
        let width = draw.format.serial.length() as usize;
        // Drawn in batches, in two passes: generate and hash a batch, then
        // insert its hashes. The inserts are cache (and TLB) misses in a set
        // of millions; back to back, the processor overlaps many of them,
        // while a generation between two inserts leaves one in flight at a
        // time (1 M serials: 0.26 s interleaved, 0.06 s in two passes).
        let mut candidates = SerialBuffer::with_capacity(DRAW_BATCH, width);
        let mut hashes = Vec::with_capacity(DRAW_BATCH);
        'draw: while !draw.ended && (serials.len() as u64) < target {
            let batch = usize::try_from(target - serials.len() as u64)
                .unwrap_or(DRAW_BATCH)
                .min(DRAW_BATCH);
            candidates.clear();
            hashes.clear();
            for _ in 0..batch {
                let serial =
                    candidates.push_with(|out| self.generator.generate(&draw.format.serial, out));
                hashes.push(xxhash_rust::xxh3::xxh3_64_with_seed(
                    serial,
                    self.hash_secret,
                ));
            }
            for (index, hash) in hashes.iter().enumerate() {
                if set.insert(*hash) {
                    serials.push(candidates.get(index));
                } else {
                    draw.redraws += 1;
                    if draw.redraws > draw.redraws_max {
                        draw.limit = PoolLimit::SerialSpace;
                        draw.ended = true;
                        break 'draw;
                    }
                }
            }
        }
        if serials.len() as u64 >= draw.wanted {
            draw.ended = true;
        }
    }

    /// Commits the plan in segments (each one WriteBatch, synced) and answers
    /// only when every segment is durable: no serial of a pool is sent before
    /// the whole pool is on stable storage. A crash between segments leaves a
    /// pool record with `committed < granted`; its replay draws the rest (none
    /// of it was ever sent) and completes it.
    ///
    /// The segments are pipelined: a committer thread writes segment k (the
    /// memtable inserts and the WAL sync) while this thread indexes segment
    /// k − 1 and builds segment k + 1 and copies it into its write batch
    /// ([`storage::Store::prepare`]). At most [`SEGMENTS_IN_FLIGHT`] segments
    /// are built and not yet known durable; the committer writes them in
    /// order and stops at its first failure. What was durable before a
    /// failure stays issued (and counted in the pool record); the rest is
    /// forgotten, so it may be drawn again.
    fn commit_pool(&mut self, request: PoolRequest, plan: PoolPlan, reply: Reply<PoolTicket>) {
        let PoolPlan {
            pool_id,
            pool,
            mut serials,
            mut draw,
            mut request_record,
        } = plan;
        let gtin = pool.gtin;
        let segment = self.shared.config.pool_segment_size.max(1);
        // The pool's serials before this commit (a continued pool's).
        let committed_before = pool.committed;
        let already = PoolProgress {
            chunks: pool.chunks,
            serials: pool.committed,
            finished: serials.is_empty() && draw.is_none(),
            failed: None,
        };
        let (progress, progress_receiver) = watch::channel(already);
        let Some(product) = self.products.get(&gtin).map(|p| p.record.clone()) else {
            let _ = reply.send(Err(IssuerError::FailedPrecondition(format!(
                "GTIN {gtin:014} is not registered"
            ))));
            return;
        };
        // The index grows once for the whole pool, not step by step.
        let coming = draw
            .as_ref()
            .map_or(serials.len() as u64, |going| going.wanted);
        self.shared.index.reserve_more(gtin, coming);
        // The records after the last segment known durable (and how many of
        // `serials` that covers), and after the last segment built.
        let mut durable = (pool.clone(), product.clone(), 0usize);
        let mut built = (pool, product);
        let mut failure: Option<IssuerError> = None;
        let shared = Arc::clone(&self.shared);
        std::thread::scope(|scope| {
            let (sender, commits) =
                std::sync::mpsc::sync_channel::<storage::PreparedChange>(SEGMENTS_IN_FLIGHT);
            let (answers, results) =
                std::sync::mpsc::channel::<Result<(), storage::StorageError>>();
            let store = &shared.store;
            let name = format!("pool-commit-{}", self.shard);
            let committer = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    for change in commits {
                        let started = std::time::Instant::now();
                        let operations = change.len();
                        let result = store.commit_prepared(change).map(|_| ());
                        tracing::debug!(
                            commit_ms = started.elapsed().as_millis() as u64,
                            operations,
                            "pool segment committed"
                        );
                        let failed = result.is_err();
                        if answers.send(result).is_err() || failed {
                            return;
                        }
                    }
                });
            let committer = match committer {
                Ok(committer) => Some(committer),
                Err(error) => {
                    failure = Some(IssuerError::Interrupted(format!(
                        "cannot start the pool committer thread: {error}"
                    )));
                    None
                }
            };
            let mut sender = Some(sender);
            let mut in_flight = std::collections::VecDeque::with_capacity(SEGMENTS_IN_FLIGHT);
            // Set after an index refusal: later durable segments are counted
            // but not indexed (the restart's rebuild indexes them).
            let mut index_refused = false;
            let mut next: usize = 0;
            // One change set for every segment, refilled: its buffers (as
            // large as a segment) are written to once, not mapped afresh
            // for each segment.
            let mut change = ChangeSet::new();
            loop {
                // The draw stays a segment ahead of the segment built next,
                // so the segment that ends the pool is known when it is
                // built, and records what the pool was granted.
                if failure.is_none()
                    && let Some(going) = draw.as_mut()
                {
                    self.draw_more(
                        gtin,
                        going,
                        &mut serials,
                        next.saturating_add(segment.saturating_mul(2)),
                    );
                    if going.ended {
                        built.0.granted = committed_before + serials.len() as u64;
                        built.0.limit = going.limit.code();
                        draw = None;
                    }
                }
                if failure.is_none()
                    && next < serials.len()
                    && in_flight.len() < SEGMENTS_IN_FLIGHT
                    && let Some(to_committer) = &sender
                {
                    let end = serials.len().min(next + segment);
                    let batch: Vec<&[u8]> = (next..end).map(|i| serials.get(i)).collect();
                    let (pool_after, product_after) = self.build_segment(
                        &mut change,
                        pool_id,
                        &built.0,
                        &built.1,
                        batch,
                        request_record.take(),
                        &request.principal,
                    );
                    // Copied into its write batch here, so that the
                    // committer only writes; `change` keeps its buffers for
                    // the next segment.
                    let change = match store.prepare_from(&mut change) {
                        Ok(change) => change,
                        Err(error) => {
                            failure = Some(error.into());
                            continue;
                        }
                    };
                    if to_committer.send(change).is_ok() {
                        in_flight.push_back((next..end, pool_after.clone(), product_after.clone()));
                        built = (pool_after, product_after);
                        next = end;
                        continue;
                    }
                    // The committer ended: it reports why below, unless
                    // it ended without a word.
                    sender = None;
                    if in_flight.is_empty() {
                        failure = Some(committer_gone());
                    }
                }
                let Some((range, pool_after, product_after)) = in_flight.pop_front() else {
                    break;
                };
                match results.recv() {
                    Ok(Ok(())) => {
                        if !index_refused
                            && let Err(error) = self.index_serials(
                                gtin,
                                range
                                    .clone()
                                    .map(|i| (serials.get(i), verifier::SerialEntry::ALLOCATED)),
                            )
                        {
                            index_refused = true;
                            failure.get_or_insert(error);
                        }
                        durable = (pool_after, product_after, range.end);
                        let finished = durable.2 == serials.len() && draw.is_none();
                        progress.send_modify(|p| {
                            p.chunks = durable.0.chunks;
                            p.serials = durable.0.committed;
                            p.finished = finished;
                        });
                    }
                    Ok(Err(error)) => {
                        sender = None;
                        failure.get_or_insert(error.into());
                    }
                    Err(_) => {
                        sender = None;
                        failure.get_or_insert_with(committer_gone);
                    }
                }
            }
            drop(sender);
            // Joined here, so that a panic in it fails this pool instead of
            // the shard writer.
            if committer.is_some_and(|committer| committer.join().is_err()) {
                failure.get_or_insert_with(committer_gone);
            }
        });
        let (pool, product, durable_end) = durable;
        if let Some(state) = self.products.get_mut(&gtin) {
            state.record = product;
            if let (Some(set), Some(_)) = (state.issued.as_mut(), failure.as_ref()) {
                for index in durable_end..serials.len() {
                    set.remove(&xxhash_rust::xxh3::xxh3_64_with_seed(
                        serials.get(index),
                        self.hash_secret,
                    ));
                }
            }
        }
        if let Some(error) = failure {
            tracing::warn!(pool_id, durable = pool.committed, %error, "pool commit failed");
            let _ = reply.send(Err(error));
            return;
        }
        let _ = reply.send(self.ticket(&request, pool_id, &pool, progress_receiver));
        tracing::debug!(pool_id, serials = pool.committed, "pool committed");
    }

    fn ticket(
        &mut self,
        request: &PoolRequest,
        pool_id: u64,
        pool: &PoolRecord,
        progress: watch::Receiver<PoolProgress>,
    ) -> Result<PoolTicket, IssuerError> {
        let gtin = gtin_value(&request.gtin);
        let shared = Arc::clone(&self.shared);
        let figures = match self.product(gtin)? {
            Some(product) => figures_of(
                &shared.config,
                &request.gtin,
                &product.record,
                &product.format,
            ),
            None => {
                return Err(IssuerError::FailedPrecondition(format!(
                    "GTIN {} is not registered",
                    request.gtin
                )));
            }
        };
        let limit = PoolLimit::from_code(pool.limit);
        Ok(PoolTicket {
            pool: PoolInfo {
                pool_id,
                record: pool.clone(),
                limit,
                figures,
            },
            progress,
        })
    }

    /// One segment of a pool as a change set: its serials (ALLOCATED), its
    /// chunk, the pool record and the product's issued count after it, the
    /// request record with the first segment, and its event. Returns the
    /// pool and product records as they are once it is committed.
    #[allow(clippy::too_many_arguments)]
    fn build_segment(
        &self,
        change: &mut ChangeSet,
        pool_id: u64,
        pool: &PoolRecord,
        product: &ProductRecord,
        mut serials: Vec<&[u8]>,
        request_record: Option<(Vec<u8>, RequestRecord)>,
        principal: &str,
    ) -> (PoolRecord, ProductRecord) {
        let gtin = pool.gtin;
        let now = now_micros();
        let allocated = SerialRecord {
            state: SerialState::Allocated,
            pool_id,
            changed_micros: now,
            ..SerialRecord::default()
        };
        let allocated = serial_envelope(&allocated);
        // The chunk keeps the drawn order (the order the line receives).
        change.put(
            Family::Pools,
            keys::pool_chunk(pool_id, pool.chunks),
            envelope(&encode_chunk(serials.iter().copied())),
        );
        // Sorted keys insert faster into the memtable's skip list.
        serials.sort_unstable();
        let mut key = Vec::new();
        for serial in &serials {
            keys::serial_into(&mut key, gtin, serial);
            change.put(Family::Serials, &key, &allocated);
        }
        let mut updated = pool.clone();
        updated.committed += serials.len() as u64;
        updated.chunks += 1;
        change.put(
            Family::Pools,
            keys::pool(pool_id),
            envelope(&updated.encode()),
        );
        let mut product = product.clone();
        product.issued += serials.len() as u64;
        change.put(Family::Products, keys::product(gtin), product.stored());
        if let Some((key, record)) = request_record {
            change.put(Family::Requests, key, envelope(&record.encode()));
        }
        change.event(events::encode_body(
            &EventHeader {
                kind: events::kind::POOL_ALLOCATED,
                gtin,
                request_id: pool.request_id.clone(),
                location: pool.location.clone(),
                line_id: pool.line_id.clone(),
                principal: principal.to_owned(),
                pool_id,
                count: serials.len() as u64,
                ..EventHeader::default()
            },
            [],
        ));
        (updated, product)
    }

    /// Applies committed serial states to the status index; a refusal is a
    /// defect (the product is always indexed before its serials), logged as
    /// an error.
    fn index_serials<'a>(
        &self,
        gtin: u64,
        entries: impl IntoIterator<Item = (&'a [u8], verifier::SerialEntry)>,
    ) -> Result<(), IssuerError> {
        self.shared
            .index
            .put_serials(gtin, entries)
            .map_err(|error| {
                tracing::error!(gtin, %error, "status index update refused after a durable commit");
                IssuerError::Index(error)
            })
    }

    fn group_parameters(gtin: &gs1::Gtin, extra: &[&[u8]], items: &[GroupItem]) -> u64 {
        let mut parts: Vec<&[u8]> = vec![gtin.as_str().as_bytes()];
        parts.extend_from_slice(extra);
        let texts: Vec<&[u8]> = items
            .iter()
            .map(|item| match item {
                Ok(serial) => serial.as_str().as_bytes(),
                Err(_) => b"\xff",
            })
            .collect();
        parts.extend(texts);
        params_hash(&parts)
    }

    /// Looks up a stored group answer: `Some` when this request id was answered before.
    fn replay(
        &self,
        kind: u8,
        request_id: &str,
        parameters: u64,
        length: usize,
    ) -> Result<Option<GroupOutcome>, IssuerError> {
        let key = keys::request(kind, request_id.as_bytes());
        let Some((version, payload)) = self.store().get(Family::Requests, &key)? else {
            return Ok(None);
        };
        let stored = RequestRecord::decode(version, &payload)?;
        if stored.parameters != parameters {
            return Err(IssuerError::invalid(
                "request_id",
                format!("{request_id:?} was already used for a group with other items"),
            ));
        }
        let outcome = decode_outcomes(&stored.result, length)?;
        Ok(Some(GroupOutcome {
            items: outcome,
            replayed: true,
        }))
    }

    fn commission(&mut self, group: CommissionGroup) -> Result<GroupOutcome, IssuerError> {
        let gtin = gtin_value(&group.gtin);
        let pool_bytes = group.pool_id.unwrap_or(0).to_be_bytes();
        let expiry = group.expiry.map(|e| e.to_string()).unwrap_or_default();
        let parameters = Self::group_parameters(
            &group.gtin,
            &[
                group.lot.as_str().as_bytes(),
                expiry.as_bytes(),
                &pool_bytes,
            ],
            &group.items,
        );
        if let Some(outcome) = self.replay(
            KIND_COMMISSION,
            &group.request_id,
            parameters,
            group.items.len(),
        )? {
            return Ok(outcome);
        }
        if self.product(gtin)?.is_none() {
            return Err(IssuerError::FailedPrecondition(format!(
                "GTIN {} is not registered",
                group.gtin
            )));
        }
        let lot_key = keys::lot(gtin, group.lot.as_str().as_bytes());
        let (version, payload) = self.store().get(Family::Lots, &lot_key)?.ok_or_else(|| {
            IssuerError::FailedPrecondition(format!(
                "lot {} is not registered for GTIN {}",
                group.lot.as_str(),
                group.gtin
            ))
        })?;
        let lot = LotRecord::decode(version, &payload)?;
        if lot.status == LotStatus::Recalled {
            return Err(IssuerError::FailedPrecondition(format!(
                "lot {} of GTIN {} is recalled",
                group.lot.as_str(),
                group.gtin
            )));
        }
        if let Some(expiry) = group.expiry
            && expiry.to_string() != lot.expiry
        {
            return Err(IssuerError::FailedPrecondition(format!(
                "expiry {} differs from lot {}'s registered expiry {}",
                expiry,
                group.lot.as_str(),
                lot.expiry
            )));
        }
        self.apply_group(
            KIND_COMMISSION,
            &group.request_id,
            parameters,
            gtin,
            group.pool_id,
            &group.items,
            Some((group.lot.as_str(), &lot.expiry)),
            &group.context,
        )
    }

    fn return_serials(&mut self, group: ReturnGroup) -> Result<GroupOutcome, IssuerError> {
        let gtin = gtin_value(&group.gtin);
        let pool_bytes = group.pool_id.unwrap_or(0).to_be_bytes();
        let parameters = Self::group_parameters(&group.gtin, &[&pool_bytes], &group.items);
        if let Some(outcome) = self.replay(
            KIND_RETURN,
            &group.request_id,
            parameters,
            group.items.len(),
        )? {
            return Ok(outcome);
        }
        if self.product(gtin)?.is_none() {
            return Err(IssuerError::FailedPrecondition(format!(
                "GTIN {} is not registered",
                group.gtin
            )));
        }
        self.apply_group(
            KIND_RETURN,
            &group.request_id,
            parameters,
            gtin,
            group.pool_id,
            &group.items,
            None,
            &group.context,
        )
    }

    /// Decides every item from the status index, in item order (so a serial
    /// repeated in the group sees its own earlier change), and commits the
    /// changes as [`SerialPatch`] merge operands, the answer and one event in
    /// one batch. Records are read only when the group names a pool, to check
    /// each serial's pool.
    #[allow(clippy::too_many_arguments)]
    fn apply_group(
        &mut self,
        kind: u8,
        request_id: &str,
        parameters: u64,
        gtin: u64,
        pool_filter: Option<u64>,
        items: &[GroupItem],
        lot: Option<(&str, &str)>,
        context: &EventContext,
    ) -> Result<GroupOutcome, IssuerError> {
        let (lot, expiry) = match lot {
            Some((lot, expiry)) => (Some(lot), expiry),
            None => (None, ""),
        };
        let started = std::time::Instant::now();
        let index = Arc::clone(&self.shared.index);
        let view = index.view();
        let serials: Vec<Option<&[u8]>> = items
            .iter()
            .map(|item| item.as_ref().ok().map(|s| s.as_str().as_bytes()))
            .collect();
        let pools: Option<Vec<Option<u64>>> = match pool_filter {
            None => None,
            Some(_) => {
                let keys: Vec<Vec<u8>> = serials
                    .iter()
                    .flatten()
                    .map(|serial| keys::serial(gtin, serial))
                    .collect();
                let mut found = self.store().multi_get(Family::Serials, &keys)?.into_iter();
                let mut pools = Vec::with_capacity(items.len());
                for serial in &serials {
                    pools.push(match (serial, found.next().flatten()) {
                        (Some(_), Some((version, payload))) => {
                            Some(SerialRecord::decode(version, &payload)?.pool_id)
                        }
                        _ => None,
                    });
                }
                Some(pools)
            }
        };
        let lot_id = lot.and_then(|lot| view.lot_id(gtin, lot));
        let now = now_micros();
        let hasher = xxhash_rust::xxh3::Xxh3Builder::new().with_seed(self.hash_secret);
        let mut changed_here: HashMap<&[u8], verifier::SerialEntry, _> =
            HashMap::with_hasher(hasher);
        let mut outcomes = Vec::with_capacity(items.len());
        let mut changed_serials: Vec<&[u8]> = Vec::new();
        for (position, serial) in serials.iter().enumerate() {
            let Some(serial) = *serial else {
                outcomes.push((ItemOutcome::Malformed, None));
                continue;
            };
            let entry = match changed_here.get(serial) {
                Some(entry) => *entry,
                None => match view.entry(gtin, serial) {
                    Some(entry) => entry,
                    None => {
                        outcomes.push((ItemOutcome::UnknownSerial, None));
                        continue;
                    }
                },
            };
            let state = status_ops::state_of(entry.state);
            if let (Some(pool), Some(pools)) = (pool_filter, &pools)
                && pools[position] != Some(pool)
            {
                outcomes.push((ItemOutcome::NotInPool, Some(state)));
                continue;
            }
            let (outcome, new) = if kind == KIND_COMMISSION {
                match state {
                    SerialState::Allocated => (
                        ItemOutcome::Commissioned,
                        Some(verifier::SerialEntry {
                            state: verifier::PackState::Active,
                            lot: lot_id,
                            ..entry
                        }),
                    ),
                    SerialState::Active if entry.lot.is_some() && entry.lot == lot_id => {
                        (ItemOutcome::AlreadyCommissioned, None)
                    }
                    SerialState::Active => (ItemOutcome::LotConflict, None),
                    SerialState::Voided => (ItemOutcome::Voided, None),
                    SerialState::Decommissioned => (ItemOutcome::Decommissioned, None),
                }
            } else {
                match state {
                    SerialState::Allocated => (
                        ItemOutcome::Returned,
                        Some(verifier::SerialEntry {
                            state: verifier::PackState::Voided,
                            ..entry
                        }),
                    ),
                    SerialState::Voided => (ItemOutcome::AlreadyVoided, None),
                    SerialState::Active | SerialState::Decommissioned => {
                        (ItemOutcome::AlreadyActive, None)
                    }
                }
            };
            match new {
                Some(new) => {
                    changed_here.insert(serial, new);
                    changed_serials.push(serial);
                    outcomes.push((outcome, Some(status_ops::state_of(new.state))));
                }
                None => outcomes.push((outcome, Some(state))),
            }
        }

        let read_ms = started.elapsed().as_millis() as u64;
        let mut change = ChangeSet::new();
        let patch = if kind == KIND_COMMISSION {
            SerialPatch {
                state: Some(SerialState::Active),
                lot: Some(lot.unwrap_or_default().to_owned()),
                changed_micros: Some(now),
                ..SerialPatch::default()
            }
        } else {
            SerialPatch {
                state: Some(SerialState::Voided),
                changed_micros: Some(now),
                ..SerialPatch::default()
            }
        };
        let patch_value = value::encode(SERIAL_PATCH_VERSION, &patch.encode());
        // Sorted keys insert faster into the memtable's skip list; the answer
        // keeps item order (`outcomes`), only the write order changes. A
        // serial changes at most once per group (a second change would need
        // the state it left), so each key is written once.
        let mut sorted_serials = changed_serials.clone();
        sorted_serials.sort_unstable();
        let mut key = Vec::new();
        for serial in &sorted_serials {
            keys::serial_into(&mut key, gtin, serial);
            change.merge(Family::Serials, &key, &patch_value);
        }
        let record = RequestRecord {
            parameters,
            result: encode_outcomes(&outcomes),
        };
        change.put(
            Family::Requests,
            keys::request(kind, request_id.as_bytes()),
            envelope(&record.encode()),
        );
        change.event(events::encode_body(
            &EventHeader {
                kind: if kind == KIND_COMMISSION {
                    events::kind::COMMISSIONED
                } else {
                    events::kind::RETURNED
                },
                gtin,
                request_id: request_id.to_owned(),
                location: context.location.clone(),
                principal: context.principal.clone(),
                line_id: context.line_id.clone(),
                event_time_micros: context.event_time_micros.unwrap_or(0),
                pool_id: pool_filter.unwrap_or(0),
                lot: lot.unwrap_or_default().to_owned(),
                expiry: expiry.to_owned(),
                ..EventHeader::default()
            },
            changed_serials.iter().copied(),
        ));
        let built = std::time::Instant::now();
        self.store().commit(change)?;
        self.index_serials(
            gtin,
            sorted_serials
                .iter()
                .filter_map(|serial| Some((*serial, *changed_here.get(serial)?))),
        )?;
        tracing::debug!(
            read_ms,
            commit_ms = built.elapsed().as_millis() as u64,
            items = items.len(),
            "group committed"
        );
        Ok(GroupOutcome {
            items: outcomes,
            replayed: false,
        })
    }
}

/// Pool segments built and not yet known durable (see `Writer::commit_pool`).
const SEGMENTS_IN_FLIGHT: usize = 2;

/// The failure of a pool whose committer thread ended without an answer.
fn committer_gone() -> IssuerError {
    IssuerError::Interrupted("the pool committer thread ended without answering".into())
}

/// Serials drawn for one pool, packed in one buffer: one allocation for a
/// whole pool instead of one per serial.
#[derive(Debug, Default)]
struct SerialBuffer {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl SerialBuffer {
    fn with_capacity(count: usize, width: usize) -> Self {
        SerialBuffer {
            bytes: Vec::with_capacity(count * width.max(1)),
            ends: Vec::with_capacity(count),
        }
    }

    fn push(&mut self, serial: &[u8]) {
        self.push_with(|bytes| bytes.extend_from_slice(serial));
    }

    /// Appends the serial that `write` appends to the bytes; returns it.
    fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        let start = self.bytes.len();
        write(&mut self.bytes);
        // A pool holds at most 10,000,000 serials of at most 20 bytes: < 2^32.
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        &self.bytes[start..]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.bytes[start..self.ends[index] as usize]
    }
}

/// A pool about to be committed.
struct PoolPlan {
    pool_id: u64,
    pool: PoolRecord,
    /// The serials drawn so far (all of them unless `draw` goes on).
    serials: SerialBuffer,
    /// A draw still going on: [`Writer::commit_pool`] draws the rest of the
    /// pool a segment ahead of the segment it builds, while the committer
    /// writes the segments before.
    draw: Option<Draw>,
    request_record: Option<(Vec<u8>, RequestRecord)>,
}

/// A draw of serials in progress ([`Writer::start_draw`], [`Writer::draw_more`]).
struct Draw {
    format: Format,
    /// How many serials the draw may issue (the count asked for, or less
    /// under the guessing rule).
    wanted: u64,
    redraws: u64,
    redraws_max: u64,
    /// Why the draw may end short of the count asked for.
    limit: PoolLimit,
    /// Set once the draw has drawn all it will.
    ended: bool,
    space: u128,
    issued_before: u64,
}

impl Draw {
    /// The refusal of a draw that could not draw a single serial.
    fn exhausted(&self, display: &gs1::Gtin) -> IssuerError {
        IssuerError::Exhausted(format!(
            "no serial can be issued for GTIN {display}: the serial space of size {} is used up ({} issued)",
            self.space, self.issued_before
        ))
    }
}

fn encode_outcomes(outcomes: &[(ItemOutcome, Option<SerialState>)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(outcomes.len() * 2);
    for (outcome, state) in outcomes {
        bytes.push(*outcome as u8);
        bytes.push(state.map_or(0, |s| s as u8));
    }
    bytes
}

fn decode_outcomes(
    bytes: &[u8],
    length: usize,
) -> Result<Vec<(ItemOutcome, Option<SerialState>)>, IssuerError> {
    let corrupt = |detail: &str| crate::codec::DecodeError {
        record: "group answer",
        detail: detail.to_owned(),
    };
    if bytes.len() != length * 2 {
        return Err(corrupt("length differs from the group").into());
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            let outcome =
                ItemOutcome::from_code(pair[0]).ok_or_else(|| corrupt("unknown outcome"))?;
            let state = match pair[1] {
                0 => None,
                1 => Some(SerialState::Allocated),
                2 => Some(SerialState::Active),
                3 => Some(SerialState::Decommissioned),
                4 => Some(SerialState::Voided),
                _ => return Err(corrupt("unknown state").into()),
            };
            Ok((outcome, state))
        })
        .collect()
}

/// The index entry of a stored serial record.
pub(crate) fn index_entry(
    record: &SerialRecord,
    lot: Option<verifier::LotId>,
) -> verifier::SerialEntry {
    verifier::SerialEntry {
        state: verifier::PackState::from_code(record.state as u8)
            .unwrap_or(verifier::PackState::Unknown),
        reason: record.reason,
        flags: record.flags,
        lot: if record.lot.is_empty() { None } else { lot },
    }
}

pub(crate) fn lot_info(gtin: &gs1::Gtin, lot: &str, record: &LotRecord) -> LotInfo {
    LotInfo {
        gtin: gtin.clone(),
        lot: lot.to_owned(),
        expiry: record.expiry.clone(),
        status: record.status,
        created_micros: record.created_micros,
        recalled_micros: record.recalled_micros,
        recall_reason: record.recall_reason.clone(),
    }
}

pub(crate) fn figures_of(
    config: &IssuerConfig,
    gtin: &gs1::Gtin,
    record: &ProductRecord,
    format: &Format,
) -> GuessingFigures {
    let space = format.serial.space_size();
    let rule = config.guessing_rule;
    GuessingFigures {
        gtin: gtin.clone(),
        issued: record.issued,
        space_size: space,
        ratio: rule.ratio(space, record.issued),
        ratio_limit: rule.ratio_limit(),
        enforced: record.guessing_rule_enforced,
        issuable_remaining: rule.issuable_remaining(
            space,
            record.issued,
            record.guessing_rule_enforced,
        ),
    }
}

pub(crate) fn decode_gtin(value: u64) -> Result<gs1::Gtin, IssuerError> {
    Ok(gtin_from_value(value)?)
}
