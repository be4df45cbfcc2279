//! The write side of serialsvc: serial generators and market templates, pools,
//! commissioning, decommission and undo, aggregation.
//!
//! Depends on `gs1` and `storage`; knows nothing of tonic or HTTP. Every state
//! change goes through the single writer of the GTIN's shard.
//!
//! Issue 3 (this code): master data, market profiles, the ChaCha20 serial
//! generator, pools, commissioning and returns. Decommissioning (issue 5) and
//! aggregation (issue 6) join later.

pub mod aggregation;
pub mod generator;
pub mod guessing;
pub mod profile;

mod codec;
mod error;
pub mod events;
pub mod format;
pub mod model;
mod rebuild;
pub mod records;
pub mod status;
pub mod telemetry;
mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{SyncSender, TrySendError};

use storage::{Family, Store, keys};
use tokio::sync::oneshot;

pub use codec::DecodeError;
pub use error::IssuerError;
pub use model::*;
pub use rebuild::{RebuildProgress, rebuild_index};
use records::{LotRecord, PoolRecord, ProductRecord};
use telemetry::WriteKind;
use writer::{Command, Shared, Writer};

/// A pool with counts derived from its serials' states ([`Issuer::pools_matching`]).
#[derive(Debug, Clone)]
pub struct PoolReport {
    /// Pool id.
    pub pool_id: u64,
    /// The pool, with `commissioned` and `returned` derived.
    pub record: PoolRecord,
    /// Serials of the pool's chunks that the status index does not know.
    pub unknown: u64,
}

/// Sets `pool.commissioned` and `pool.returned` from its serials' states in
/// the index; answers how many of its serials the index does not know.
fn derive_pool_counts(
    store: &Store,
    index: &verifier::StatusIndex,
    pool_id: u64,
    pool: &mut PoolRecord,
) -> Result<u64, IssuerError> {
    let view = index.view();
    let (mut commissioned, mut returned, mut unknown) = (0, 0, 0);
    for chunk in 0..pool.chunks {
        let (version, payload) = store
            .get(Family::Pools, &keys::pool_chunk(pool_id, chunk))?
            .ok_or_else(|| IssuerError::NotFound(format!("chunk {chunk} of pool {pool_id}")))?;
        for serial in records::decode_chunk(version, &payload)? {
            match view.entry(pool.gtin, serial.as_bytes()).map(|e| e.state) {
                Some(verifier::PackState::Active | verifier::PackState::Decommissioned) => {
                    commissioned += 1
                }
                Some(verifier::PackState::Voided) => returned += 1,
                Some(_) => {}
                None => unknown += 1,
            }
        }
    }
    pool.commissioned = commissioned;
    pool.returned = returned;
    Ok(unknown)
}

/// Opens a data directory with the merge operators of the issuer's records
/// (the `serials` family holds [`records::SerialPatch`] operands). Every
/// process that reads serial records must open the store this way.
pub fn open_store(path: &std::path::Path) -> Result<Store, storage::StorageError> {
    Store::open_with(path, &[(Family::Serials, records::SERIAL_MERGE)])
}

/// Limits and settings of the write side. Every limit is published to clients
/// (`PoolService.GetLimits`) and documented in README.md.
#[derive(Debug, Clone, Copy)]
pub struct IssuerConfig {
    /// Shard writers (threads). A GTIN always maps to the same shard.
    pub shards: usize,
    /// Commands queued per shard before callers get `Overloaded`.
    pub queue_depth: usize,
    /// Largest `count` of one pool request (OPEN-SCS MaxSNRequestable).
    pub pool_count_max: u64,
    /// Serials committed per pool segment (one WriteBatch, one chunk record).
    pub pool_segment_size: usize,
    /// Largest commissioning group.
    pub commission_group_max: usize,
    /// Largest return group (OPEN-SCS MaxSNReturnable).
    pub return_group_max: usize,
    /// The EU guessing rule.
    pub guessing_rule: guessing::GuessingRule,
    /// Limits of aggregation.
    pub aggregation: aggregation::AggregationLimits,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            shards: 4,
            queue_depth: 1024,
            pool_count_max: 1_000_000,
            pool_segment_size: 65_536,
            commission_group_max: 10_000,
            return_group_max: 10_000,
            guessing_rule: guessing::GuessingRule::default(),
            aggregation: aggregation::AggregationLimits::default(),
        }
    }
}

/// The write side: shard writers plus reads of master data and pools.
#[derive(Debug)]
pub struct Issuer {
    shared: Arc<Shared>,
    shards: Vec<SyncSender<Command>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    aggregation: SyncSender<aggregation::AggregationCommand>,
    aggregation_thread: std::thread::JoinHandle<()>,
}

impl Issuer {
    /// Starts one writer thread per shard over `store`. Every durable change
    /// is applied to `index` before it is answered; nothing is accepted until
    /// the index is ready ([`rebuild_index`]). The index must have one
    /// partition per shard.
    pub fn start(
        store: Arc<Store>,
        config: IssuerConfig,
        index: Arc<verifier::StatusIndex>,
    ) -> Result<Issuer, IssuerError> {
        if index.partitions() != config.shards.max(1) {
            return Err(IssuerError::FailedPrecondition(format!(
                "the status index has {} partitions for {} shards",
                index.partitions(),
                config.shards.max(1)
            )));
        }
        let next_pool_id = match store.last_key(Family::Pools)? {
            Some(key) if key.len() >= 9 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&key[1..9]);
                u64::from_be_bytes(id) + 1
            }
            _ => 1,
        };
        let shared = Arc::new(Shared {
            store,
            index,
            config,
            next_pool_id: AtomicU64::new(next_pool_id),
        });
        let mut shards = Vec::new();
        let mut threads = Vec::new();
        for shard in 0..config.shards.max(1) {
            let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue_depth.max(1));
            let writer = Writer::new(shard, Arc::clone(&shared))?;
            let thread = std::thread::Builder::new()
                .name(format!("shard-writer-{shard}"))
                .spawn(move || writer.run(receiver))
                .map_err(|e| {
                    IssuerError::FailedPrecondition(format!(
                        "cannot start shard writer {shard}: {e}"
                    ))
                })?;
            shards.push(sender);
            threads.push(thread);
        }
        let aggregator = aggregation::Aggregator::new(
            Arc::clone(&shared.store),
            Arc::clone(&shared.index),
            shards.clone(),
            config.aggregation,
        )?;
        let (aggregation, receiver) = std::sync::mpsc::sync_channel(config.queue_depth.max(1));
        let aggregation_thread = std::thread::Builder::new()
            .name("aggregation-writer".into())
            .spawn(move || aggregator.run(receiver))
            .map_err(|e| {
                IssuerError::FailedPrecondition(format!("cannot start the aggregation writer: {e}"))
            })?;
        Ok(Issuer {
            shared,
            shards,
            threads,
            aggregation,
            aggregation_thread,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &IssuerConfig {
        &self.shared.config
    }

    /// The shard owning a GTIN: `xxh3(gtin-14) % shards`.
    pub fn shard_of(&self, gtin: &gs1::Gtin) -> usize {
        shard_of(gtin.as_str(), self.shards.len())
    }

    /// The status index this issuer keeps current.
    pub fn index(&self) -> &Arc<verifier::StatusIndex> {
        &self.shared.index
    }

    /// Hands a command to the GTIN's writer and waits for its answer. The
    /// commit does not depend on the caller staying: a dropped future leaves
    /// the writer to finish and the answer is discarded.
    async fn call<T>(
        &self,
        gtin: &gs1::Gtin,
        write: (telemetry::WriteKind, usize),
        make: impl FnOnce(writer::Reply<T>) -> Command,
    ) -> Result<T, IssuerError> {
        let shard = self.shard_of(gtin);
        self.hand_off(&self.shards[shard], shard, write, make).await
    }

    /// Puts a command on a writer's bounded queue (`queue` names it in the
    /// overload error) and waits for the answer, timing the whole hand-off.
    async fn hand_off<C, T>(
        &self,
        sender: &SyncSender<C>,
        queue: usize,
        write: (telemetry::WriteKind, usize),
        make: impl FnOnce(writer::Reply<T>) -> C,
    ) -> Result<T, IssuerError> {
        self.enqueue(sender, queue, write, make)?.wait().await
    }

    /// The first half of [`Issuer::hand_off`]: puts the command on the queue
    /// now and returns the wait for its answer.
    fn enqueue<C, T>(
        &self,
        sender: &SyncSender<C>,
        queue: usize,
        (kind, items): (telemetry::WriteKind, usize),
        make: impl FnOnce(writer::Reply<T>) -> C,
    ) -> Result<Pending<T>, IssuerError> {
        let started = std::time::Instant::now();
        if !self.shared.index.is_ready() {
            return Err(IssuerError::Starting);
        }
        let (reply, answer) = oneshot::channel();
        match sender.try_send(make(reply)) {
            Ok(()) => Ok(Pending {
                answer,
                started,
                kind,
                items,
            }),
            Err(TrySendError::Full(_)) => Err(IssuerError::Overloaded {
                shard: queue,
                depth: self.shared.config.queue_depth,
            }),
            Err(TrySendError::Disconnected(_)) => Err(IssuerError::ShuttingDown),
        }
    }

    /// Puts a group on the bounded queue of the GTIN's writer now and
    /// returns the wait for its answer ([`PendingGroup::wait`]).
    fn submit(
        &self,
        gtin: &gs1::Gtin,
        write: (telemetry::WriteKind, usize),
        make: impl FnOnce(writer::Reply<GroupOutcome>) -> Command,
    ) -> Result<PendingGroup, IssuerError> {
        let shard = self.shard_of(gtin);
        self.enqueue(&self.shards[shard], shard, write, make)
            .map(PendingGroup)
    }

    /// Registers a product (idempotent: the same registration again answers the stored one).
    pub async fn add_product(&self, product: NewProduct) -> Result<Product, IssuerError> {
        let gtin = product.gtin.clone();
        self.call(&gtin, (WriteKind::MasterData, 1), |reply| {
            Command::AddProduct(product, reply)
        })
        .await
    }

    /// Registers a lot (idempotent; a different expiry for a known lot is refused).
    pub async fn add_lot(&self, lot: NewLot) -> Result<LotInfo, IssuerError> {
        let gtin = lot.gtin.clone();
        self.call(&gtin, (WriteKind::MasterData, 1), |reply| {
            Command::AddLot(lot, reply)
        })
        .await
    }

    /// Allocates (or replays) a pool; answers once every segment of it is
    /// durable (no serial of a pool is sent before the whole pool is).
    pub async fn request_pool(&self, request: PoolRequest) -> Result<PoolTicket, IssuerError> {
        let gtin = request.gtin.clone();
        let items = usize::try_from(request.count).unwrap_or(usize::MAX);
        if request.count == 0 || request.count > self.shared.config.pool_count_max {
            return Err(IssuerError::invalid(
                "count",
                format!(
                    "{} is outside 1..={} (max_serials_requestable)",
                    request.count, self.shared.config.pool_count_max
                ),
            ));
        }
        self.call(&gtin, (WriteKind::Pool, items), |reply| {
            Command::RequestPool(request, reply)
        })
        .await
    }

    /// Commissions a group of serials (ALLOCATED → ACTIVE).
    pub async fn commission(&self, group: CommissionGroup) -> Result<GroupOutcome, IssuerError> {
        self.submit_commission(group)?.wait().await
    }

    /// The first half of [`Issuer::commission`]: checks the group's size and
    /// hands it to its shard writer now, in call order, so that a stream can
    /// submit its next group while earlier ones commit, and still have them
    /// applied in the order they were sent.
    pub fn submit_commission(&self, group: CommissionGroup) -> Result<PendingGroup, IssuerError> {
        check_group_size(
            "serials",
            group.items.len(),
            self.shared.config.commission_group_max,
        )?;
        let gtin = group.gtin.clone();
        let items = group.items.len();
        self.submit(&gtin, (WriteKind::Commission, items), |reply| {
            Command::Commission(group, reply)
        })
    }

    /// Voids a group of unused serials (ALLOCATED → VOIDED).
    pub async fn return_serials(&self, group: ReturnGroup) -> Result<GroupOutcome, IssuerError> {
        self.submit_return(group)?.wait().await
    }

    /// The first half of [`Issuer::return_serials`], as
    /// [`Issuer::submit_commission`] is of [`Issuer::commission`].
    pub fn submit_return(&self, group: ReturnGroup) -> Result<PendingGroup, IssuerError> {
        check_group_size(
            "serials",
            group.items.len(),
            self.shared.config.return_group_max,
        )?;
        let gtin = group.gtin.clone();
        let items = group.items.len();
        self.submit(&gtin, (WriteKind::Return, items), |reply| {
            Command::Return(group, reply)
        })
    }

    /// Applies a decommission or undo group. Items are split by shard; each
    /// shard commits its part (one batch, one fsync) and the answer comes
    /// when every part is durable. Malformed items are answered here.
    pub async fn change_status(&self, group: StatusGroup) -> Result<StatusAnswer, IssuerError> {
        self.submit_status(group)?.wait().await
    }

    /// The first half of [`Issuer::change_status`]: checks the group and hands
    /// its parts to the shard writers now, in call order, so a stream can
    /// submit its next group while earlier ones commit and still have them
    /// applied in the order they were sent.
    pub fn submit_status(&self, group: StatusGroup) -> Result<PendingStatus, IssuerError> {
        let started = std::time::Instant::now();
        check_group_size(
            "items",
            group.items.len(),
            self.shared.config.commission_group_max,
        )?;
        if !self.shared.index.is_ready() {
            return Err(IssuerError::Starting);
        }
        let malformed = match group.action {
            StatusAction::Decommission(_) => status::DecommissionOutcome::Malformed as u8,
            StatusAction::Undo(_) => status::UndoOutcome::Malformed as u8,
        };
        let results = vec![
            StatusResult {
                outcome: malformed,
                state: None,
                reason: 0,
                decommissioned_micros: 0,
            };
            group.items.len()
        ];
        let mut parts: Vec<Vec<(usize, StatusItem)>> = vec![Vec::new(); self.shards.len()];
        for (position, item) in group.items.into_iter().enumerate() {
            if let Ok(item) = item {
                parts[self.shard_of(&item.gtin)].push((position, item));
            }
        }
        // Hand every part to its writer first, then wait: the shards work
        // in parallel.
        let mut answers = Vec::new();
        for (shard, items) in parts.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let size = items.len();
            let mut part = writer::StatusPart::new(
                group.request_id.clone(),
                group.action,
                group.party.clone(),
                group.location.clone(),
                group.note.clone(),
                group.event_time_micros,
                items,
            );
            part.actor.clone_from(&group.actor);
            let (reply, answer) = oneshot::channel();
            match self.shards[shard].try_send(Command::Status(part, reply)) {
                Ok(()) => answers.push((answer, size)),
                Err(TrySendError::Full(_)) => {
                    return Err(IssuerError::Overloaded {
                        shard,
                        depth: self.shared.config.queue_depth,
                    });
                }
                Err(TrySendError::Disconnected(_)) => return Err(IssuerError::ShuttingDown),
            }
        }
        Ok(PendingStatus {
            results,
            answers,
            started,
            action: group.action,
        })
    }

    /// Recalls a lot: irreversible; verification reports its packs recalled at once.
    pub async fn recall_lot(
        &self,
        request_id: String,
        gtin: gs1::Gtin,
        lot: gs1::Lot,
        reason: String,
        principal: String,
    ) -> Result<(LotInfo, FlagChange), IssuerError> {
        let key = gtin.clone();
        self.call(&key, (WriteKind::Flags, 1), |reply| Command::RecallLot {
            request_id,
            gtin,
            lot,
            reason,
            principal,
            reply,
        })
        .await
    }

    /// Withdraws a product: irreversible; no more pools or lots for it.
    pub async fn withdraw_product(
        &self,
        request_id: String,
        gtin: gs1::Gtin,
        reason: String,
        principal: String,
    ) -> Result<(Product, FlagChange), IssuerError> {
        let key = gtin.clone();
        self.call(&key, (WriteKind::Flags, 1), |reply| {
            Command::WithdrawProduct {
                request_id,
                gtin,
                reason,
                principal,
                reply,
            }
        })
        .await
    }

    /// Sets or clears a pack's suspect / illegitimate marks.
    pub async fn flag_pack(
        &self,
        request_id: String,
        gtin: gs1::Gtin,
        serial: gs1::Serial,
        action: PackFlagAction,
        reason: String,
        principal: String,
    ) -> Result<PackFlags, IssuerError> {
        let key = gtin.clone();
        self.call(&key, (WriteKind::Flags, 1), |reply| Command::FlagPack {
            request_id,
            gtin,
            serial,
            action,
            reason,
            principal,
            reply,
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, IssuerError> + Send + 'static,
    ) -> Result<T, IssuerError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared.store))
            .await
            .map_err(|_| IssuerError::ShuttingDown)?
    }

    /// The serials of one committed chunk of a pool, in order.
    pub async fn pool_chunk(&self, pool_id: u64, index: u32) -> Result<Vec<String>, IssuerError> {
        self.read(move |store| {
            let (version, payload) = store
                .get(Family::Pools, &keys::pool_chunk(pool_id, index))?
                .ok_or_else(|| IssuerError::NotFound(format!("chunk {index} of pool {pool_id}")))?;
            Ok(records::decode_chunk(version, &payload)?)
        })
        .await
    }

    /// A pool by id, with its commissioned and returned counts derived from
    /// its serials' current states in the status index (commissioned:
    /// active or decommissioned; returned: voided). The index mirrors every
    /// acknowledged change, so the counts include every answered group.
    pub async fn pool(&self, pool_id: u64) -> Result<Option<PoolRecord>, IssuerError> {
        let index = Arc::clone(&self.shared.index);
        self.read(move |store| {
            let Some((version, payload)) = store.get(Family::Pools, &keys::pool(pool_id))? else {
                return Ok(None);
            };
            let mut pool = PoolRecord::decode(version, &payload)?;
            derive_pool_counts(store, &index, pool_id, &mut pool)?;
            Ok(Some(pool))
        })
        .await
    }

    /// The pools `keep` accepts, in id order, at most `limit` of them (the
    /// flag is true when more matched), each with its counts derived as in
    /// [`Issuer::pool`] and the number of its serials the index does not
    /// know (an integrity fault when not 0). Reads every pool record, and
    /// the chunks of the pools kept.
    pub async fn pools_matching(
        &self,
        keep: impl Fn(&PoolRecord) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<(Vec<PoolReport>, bool), IssuerError> {
        let index = Arc::clone(&self.shared.index);
        let end = self
            .shared
            .next_pool_id
            .load(std::sync::atomic::Ordering::SeqCst);
        self.read(move |store| {
            let mut reports = Vec::new();
            let mut truncated = false;
            let ids: Vec<u64> = (1..end).collect();
            for batch in ids.chunks(1024) {
                let pool_keys: Vec<Vec<u8>> = batch.iter().map(|id| keys::pool(*id)).collect();
                for (id, found) in batch
                    .iter()
                    .zip(store.multi_get(Family::Pools, &pool_keys)?)
                {
                    let Some((version, payload)) = found else {
                        continue;
                    };
                    let mut record = PoolRecord::decode(version, &payload)?;
                    if !keep(&record) {
                        continue;
                    }
                    if reports.len() == limit {
                        truncated = true;
                        return Ok((reports, truncated));
                    }
                    let unknown = derive_pool_counts(store, &index, *id, &mut record)?;
                    reports.push(PoolReport {
                        pool_id: *id,
                        record,
                        unknown,
                    });
                }
            }
            Ok((reports, truncated))
        })
        .await
    }

    /// A product by GTIN.
    pub async fn product(&self, gtin: gs1::Gtin) -> Result<Option<Product>, IssuerError> {
        self.read(move |store| {
            let value = writer::gtin_value(&gtin);
            match store.get(Family::Products, &keys::product(value))? {
                Some((version, payload)) => {
                    let record = ProductRecord::decode(version, &payload)?;
                    let format = format::Format::from_stored(&record.format)?;
                    Ok(Some(Product {
                        gtin,
                        record,
                        format,
                    }))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Up to `limit` products with GTIN greater than `after`, in GTIN order.
    pub async fn products(
        &self,
        after: Option<gs1::Gtin>,
        limit: usize,
    ) -> Result<Vec<Product>, IssuerError> {
        self.read(move |store| {
            let prefix = [Family::Products.prefix()];
            let start = after.map_or(prefix.to_vec(), |g| {
                keys::product(writer::gtin_value(&g) + 1)
            });
            let mut found = Vec::new();
            let mut failure = None;
            store.scan_prefix(
                Family::Products,
                &prefix,
                &start,
                |key, version, payload| {
                    let decoded = (|| -> Result<Product, IssuerError> {
                        let mut value = [0u8; 8];
                        value.copy_from_slice(key.get(1..9).unwrap_or(&[0; 8]));
                        let gtin = writer::decode_gtin(u64::from_be_bytes(value))?;
                        let record = ProductRecord::decode(version, payload)?;
                        let format = format::Format::from_stored(&record.format)?;
                        Ok(Product {
                            gtin,
                            record,
                            format,
                        })
                    })();
                    match decoded {
                        Ok(product) => found.push(product),
                        Err(error) => failure = Some(error),
                    }
                    failure.is_none() && found.len() < limit
                },
            )?;
            failure.map_or(Ok(found), Err)
        })
        .await
    }

    /// Up to `limit` lots after `after` (GTIN, lot), optionally of one GTIN.
    pub async fn lots(
        &self,
        gtin: Option<gs1::Gtin>,
        after: Option<(gs1::Gtin, String)>,
        limit: usize,
    ) -> Result<Vec<LotInfo>, IssuerError> {
        self.read(move |store| {
            let prefix = match &gtin {
                Some(g) => keys::lot(writer::gtin_value(g), b""),
                None => vec![Family::Lots.prefix()],
            };
            let start = match &after {
                Some((g, lot)) => {
                    let mut key = keys::lot(writer::gtin_value(g), lot.as_bytes());
                    key.push(0); // strictly after
                    key
                }
                None => prefix.clone(),
            };
            let mut found = Vec::new();
            let mut failure = None;
            store.scan_prefix(Family::Lots, &prefix, &start, |key, version, payload| {
                let decoded = (|| -> Result<LotInfo, IssuerError> {
                    let mut value = [0u8; 8];
                    value.copy_from_slice(key.get(1..9).unwrap_or(&[0; 8]));
                    let gtin = writer::decode_gtin(u64::from_be_bytes(value))?;
                    let lot = String::from_utf8_lossy(key.get(9..).unwrap_or(&[])).into_owned();
                    let record = LotRecord::decode(version, payload)?;
                    Ok(writer::lot_info(&gtin, &lot, &record))
                })();
                match decoded {
                    Ok(lot) => found.push(lot),
                    Err(error) => failure = Some(error),
                }
                failure.is_none() && found.len() < limit
            })?;
            failure.map_or(Ok(found), Err)
        })
        .await
    }

    /// The guessing-rule figures of a product.
    pub fn figures(&self, product: &Product) -> GuessingFigures {
        writer::figures_of(
            &self.shared.config,
            &product.gtin,
            &product.record,
            &product.format,
        )
    }

    /// Hands a command to the aggregation writer and waits for its answer
    /// (like [`Issuer::call`]: the work does not depend on the caller staying).
    async fn aggregate<T>(
        &self,
        write: (telemetry::WriteKind, usize),
        make: impl FnOnce(writer::Reply<T>) -> aggregation::AggregationCommand,
    ) -> Result<T, IssuerError> {
        // The aggregation writer's queue is numbered after the shards'.
        self.hand_off(&self.aggregation, self.shards.len(), write, make)
            .await
    }

    /// Allocates (or replays) a pool of SSCCs; answers once it is durable.
    pub async fn request_sscc_pool(
        &self,
        request: aggregation::SsccPoolRequest,
    ) -> Result<aggregation::SsccPool, IssuerError> {
        let max = self.shared.config.aggregation.sscc_pool_max;
        if request.count == 0 || request.count > max {
            return Err(IssuerError::invalid(
                "count",
                format!("{} is outside 1..={max} (SSCCs per pool)", request.count),
            ));
        }
        let items = request.count as usize;
        self.aggregate((WriteKind::Aggregation, items), |reply| {
            aggregation::AggregationCommand::SsccPool(request, reply)
        })
        .await
    }

    /// Packs children into a parent SSCC, all or nothing.
    pub async fn pack(
        &self,
        request: aggregation::AggregationRequest,
    ) -> Result<aggregation::AggregationAnswer, IssuerError> {
        self.check_children(&request, false)?;
        let items = request.children.len();
        self.aggregate((WriteKind::Aggregation, items), |reply| {
            aggregation::AggregationCommand::Pack(request, reply)
        })
        .await
    }

    /// Unpacks children (all when none are listed) from a parent SSCC, all or nothing.
    pub async fn unpack(
        &self,
        request: aggregation::AggregationRequest,
    ) -> Result<aggregation::AggregationAnswer, IssuerError> {
        self.check_children(&request, true)?;
        let items = request.children.len();
        self.aggregate((WriteKind::Aggregation, items), |reply| {
            aggregation::AggregationCommand::Unpack(request, reply)
        })
        .await
    }

    fn check_children(
        &self,
        request: &aggregation::AggregationRequest,
        empty_allowed: bool,
    ) -> Result<(), IssuerError> {
        let max = self.shared.config.aggregation.children_max;
        let size = request.children.len();
        if (size == 0 && !empty_allowed) || size > max {
            return Err(IssuerError::invalid(
                "children",
                format!(
                    "a request lists 1..={max} children (max_aggregation_children), this one {size}"
                ),
            ));
        }
        Ok(())
    }

    /// Decommissions every pack below an SSCC in one durable change.
    pub async fn decommission_hierarchy(
        &self,
        request: aggregation::CascadeRequest,
    ) -> Result<aggregation::CascadeAnswer, IssuerError> {
        let reason = request.reason;
        let answer = self
            .aggregate((WriteKind::Status, 1), |reply| {
                aggregation::AggregationCommand::Cascade(request, reply)
            })
            .await?;
        if !answer.replayed {
            let applied = status::DecommissionOutcome::Decommissioned as u8;
            let changed = answer
                .outcomes
                .iter()
                .find(|(code, _)| *code == applied)
                .map_or(0, |(_, n)| *n);
            telemetry::record_status(StatusAction::Decommission(reason), changed);
        }
        Ok(answer)
    }

    /// The tree below an SSCC, cut at `max_depth` levels and `max_nodes` nodes.
    pub async fn hierarchy(
        &self,
        sscc: gs1::Sscc,
        max_depth: u32,
        max_nodes: usize,
    ) -> Result<aggregation::Hierarchy, IssuerError> {
        let limits = self.shared.config.aggregation;
        let max_depth = if max_depth == 0 {
            limits.depth_max
        } else {
            max_depth.min(limits.depth_max)
        };
        let max_nodes = if max_nodes == 0 {
            limits.nodes_max
        } else {
            max_nodes.min(limits.nodes_max)
        };
        self.aggregate((WriteKind::Aggregation, 0), |reply| {
            aggregation::AggregationCommand::Hierarchy {
                sscc,
                max_depth,
                max_nodes,
                reply,
            }
        })
        .await
    }

    /// The company prefix lengths of issued SSCCs (for EPC URIs); unknown
    /// ones are left out.
    pub async fn sscc_prefix_lengths(
        &self,
        ssccs: Vec<String>,
    ) -> Result<std::collections::HashMap<String, u8>, IssuerError> {
        self.aggregate((WriteKind::Aggregation, 0), |reply| {
            aggregation::AggregationCommand::SsccPrefixLength(ssccs, reply)
        })
        .await
    }

    /// Stops the writers after the queued commands are done.
    pub fn shutdown(self) {
        let Issuer {
            shards,
            threads,
            aggregation,
            aggregation_thread,
            ..
        } = self;
        // The aggregation writer holds senders to the shards: it goes first.
        drop(aggregation);
        let _ = aggregation_thread.join();
        drop(shards);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// A command queued at a writer ([`Issuer::enqueue`]): the wait for its
/// answer, timed from the hand-off.
#[derive(Debug)]
struct Pending<T> {
    answer: oneshot::Receiver<Result<T, IssuerError>>,
    started: std::time::Instant,
    kind: WriteKind,
    items: usize,
}

impl<T> Pending<T> {
    async fn wait(self) -> Result<T, IssuerError> {
        let answer = self.answer.await.map_err(|_| IssuerError::ShuttingDown)?;
        telemetry::record_write(self.kind, self.started, self.items);
        answer
    }
}

/// A submitted commission or return group, queued at its shard writer
/// ([`Issuer::submit_commission`], [`Issuer::submit_return`]).
#[derive(Debug)]
pub struct PendingGroup(Pending<GroupOutcome>);

impl PendingGroup {
    /// Waits until the group is durable (or failed) and answers its outcome.
    pub async fn wait(self) -> Result<GroupOutcome, IssuerError> {
        self.0.wait().await
    }
}

/// A submitted status group: its parts are queued at their shard writers.
#[derive(Debug)]
pub struct PendingStatus {
    results: Vec<StatusResult>,
    /// Each part's answer and its item count.
    answers: Vec<(writer::PartAnswer, usize)>,
    started: std::time::Instant,
    action: StatusAction,
}

impl PendingStatus {
    /// Waits until every part is durable (or failed) and assembles the answer.
    pub async fn wait(self) -> Result<StatusAnswer, IssuerError> {
        let PendingStatus {
            mut results,
            answers,
            started,
            action,
        } = self;
        let applied = match action {
            StatusAction::Decommission(_) => status::DecommissionOutcome::Decommissioned as u8,
            StatusAction::Undo(_) => status::UndoOutcome::Reactivated as u8,
        };
        let mut replayed = true;
        for (answer, size) in answers {
            let (part, part_replayed) = answer.await.map_err(|_| IssuerError::ShuttingDown)??;
            telemetry::record_write(WriteKind::Status, started, size);
            if !part_replayed {
                let changed = part.iter().filter(|(_, r)| r.outcome == applied).count();
                telemetry::record_status(action, changed as u64);
            }
            replayed &= part_replayed;
            for (position, result) in part {
                results[position] = result;
            }
        }
        Ok(StatusAnswer {
            items: results,
            replayed,
        })
    }
}

/// The shard owning a GTIN (14 digits): `xxh3(gtin-14) % shards`.
pub fn shard_of(gtin14: &str, shards: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(gtin14.as_bytes()) % shards.max(1) as u64) as usize
}

fn check_group_size(field: &str, size: usize, max: usize) -> Result<(), IssuerError> {
    if size == 0 || size > max {
        return Err(IssuerError::invalid(
            field,
            format!("a group holds 1..={max} items, this one {size}"),
        ));
    }
    Ok(())
}
