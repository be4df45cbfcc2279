//! `serial.v1.ReconciliationService`: what each pool handed out and what
//! became of it, what each lot holds, and what looks wrong. Pool counts come
//! from the pools' chunks and the status index; lot counts from one pass
//! over the index.

use std::sync::atomic::AtomicUsize;

use proto::serial::v1 as pb;
use proto::serial::v1::reconciliation_service_server::ReconciliationService;
use tonic::{Request, Response, Status};

use crate::convert::{self, invalid};
use crate::grpc::Api;

/// Most rows in each list of a report (published as `max_reconcile_rows`).
pub(crate) const RECONCILE_ROWS_MAX: usize = 1_000;
/// Default age after which allocated serials of a pool are an anomaly
/// (published as `outstanding_age_default_seconds`): three days.
pub(crate) const OUTSTANDING_AGE_DEFAULT_SECONDS: u64 = 3 * 24 * 3600;
/// Most reports at once.
const REPORTS_MAX: usize = 2;
/// A GTIN's guessing ratio above this share of its limit is an anomaly.
const RATIO_WARNING_SHARE: f64 = 0.8;

static REPORTS: AtomicUsize = AtomicUsize::new(0);

#[tonic::async_trait]
impl ReconciliationService for Api {
    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        let request = request.into_inner();
        let gtin = if request.gtin.is_empty() {
            None
        } else {
            Some(convert::gtin("gtin", &request.gtin)?)
        };
        let lot = if request.lot.is_empty() {
            None
        } else {
            if gtin.is_none() {
                return Err(invalid("lot", "needs gtin"));
            }
            Some(convert::lot("lot", &request.lot)?.as_str().to_owned())
        };
        let line_id = convert::identifier("line_id", &request.line_id, false)?;
        let from = request
            .from_time
            .as_ref()
            .map(convert::micros_of)
            .unwrap_or(0);
        let until = request
            .until_time
            .as_ref()
            .map_or(u64::MAX, convert::micros_of);
        if until <= from {
            return Err(invalid("until_time", "must be after from_time"));
        }
        let threshold_seconds = match request.outstanding_age_threshold_seconds {
            0 => OUTSTANDING_AGE_DEFAULT_SECONDS,
            seconds => seconds,
        };
        let gtin_value = gtin
            .as_ref()
            .map(|g| g.as_str().parse::<u64>().unwrap_or(0));
        if let Some(gtin) = &gtin
            && self
                .issuer
                .product(gtin.clone())
                .await
                .map_err(convert::status)?
                .is_none()
        {
            return Err(Status::not_found(format!("GTIN {gtin} is not registered")));
        }
        let _slot = crate::events::Slot::take(&REPORTS, REPORTS_MAX, "reports")?;
        let as_of_sequence = self.store.next_event_sequence() - 1;
        let now = convert::now_micros();

        // Pools.
        let keep_line = line_id.clone();
        let (pools, pools_truncated) = self
            .issuer
            .pools_matching(
                move |pool| {
                    gtin_value.is_none_or(|g| pool.gtin == g)
                        && (keep_line.is_empty() || pool.line_id == keep_line)
                        && pool.created_micros >= from
                        && pool.created_micros < until
                },
                RECONCILE_ROWS_MAX,
            )
            .await
            .map_err(convert::status)?;
        let mut anomalies = Vec::new();
        let mut pool_rows = Vec::with_capacity(pools.len());
        for report in &pools {
            let pool = &report.record;
            let allocated = pool.committed;
            let outstanding =
                allocated.saturating_sub(pool.commissioned + pool.returned + report.unknown);
            let gtin = format!("{:014}", pool.gtin);
            let pool_id = report.pool_id.to_string();
            if report.unknown > 0 {
                anomalies.push(pb::Anomaly {
                    kind: pb::AnomalyKind::CountMismatch as i32,
                    pool_id: pool_id.clone(),
                    gtin: gtin.clone(),
                    count: report.unknown,
                    detail: format!(
                        "{} of the pool's {allocated} serials are not in the status index: \
                         allocated ≠ commissioned + returned + outstanding; investigate",
                        report.unknown
                    ),
                    ..Default::default()
                });
            }
            let age_seconds = now.saturating_sub(pool.created_micros) / 1_000_000;
            if outstanding > 0 && age_seconds > threshold_seconds {
                anomalies.push(pb::Anomaly {
                    kind: pb::AnomalyKind::OutstandingSerialsAged as i32,
                    pool_id: pool_id.clone(),
                    gtin: gtin.clone(),
                    count: outstanding,
                    detail: format!(
                        "{outstanding} serials still allocated after {age_seconds} s \
                         (threshold {threshold_seconds} s): commission or return them"
                    ),
                    ..Default::default()
                });
            }
            pool_rows.push(pb::PoolReconciliationRow {
                pool_id,
                gtin,
                line_id: pool.line_id.clone(),
                location: pool.location.clone(),
                created_at: Some(convert::timestamp(pool.created_micros)),
                requested: pool.requested,
                allocated,
                commissioned: pool.commissioned,
                returned: pool.returned,
                outstanding,
            });
        }
        pool_rows.sort_by(|a, b| {
            (&a.gtin, &a.created_at.map(|t| (t.seconds, t.nanos)))
                .cmp(&(&b.gtin, &b.created_at.map(|t| (t.seconds, t.nanos))))
        });

        // Lots.
        let index = std::sync::Arc::clone(self.issuer.index());
        let (counts, entries) =
            tokio::task::spawn_blocking(move || (index.lot_counts(), index.lot_entries()))
                .await
                .map_err(|_| Status::unavailable("server shutting down"))?;
        let today = convert::today();
        let mut lot_rows = Vec::new();
        let mut lots_truncated = false;
        let mut matched_lot = false;
        let mut entries: Vec<_> = entries
            .into_iter()
            .filter(|(_, entry)| gtin_value.is_none_or(|g| entry.gtin == g))
            .filter(|(_, entry)| lot.as_deref().is_none_or(|l| &*entry.lot == l))
            .collect();
        entries.sort_by(|a, b| (a.1.gtin, &a.1.lot).cmp(&(b.1.gtin, &b.1.lot)));
        for (id, entry) in entries {
            matched_lot = true;
            if lot_rows.len() == RECONCILE_ROWS_MAX {
                lots_truncated = true;
                break;
            }
            let count = counts.get(&id).copied().unwrap_or_default();
            let by_reason: Vec<pb::ReasonCount> = count
                .decommissioned
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| pb::ReasonCount {
                    reason: reason as i32,
                    count: *n,
                })
                .collect();
            let decommissioned: u64 = count.decommissioned.iter().sum();
            let gtin = format!("{:014}", entry.gtin);
            if entry.effective_expiry < today && count.active > 0 {
                anomalies.push(pb::Anomaly {
                    kind: pb::AnomalyKind::ExpiredLotActivePacks as i32,
                    gtin: gtin.clone(),
                    lot: entry.lot.to_string(),
                    count: count.active,
                    detail: format!(
                        "lot expired on {}; {} packs are still active",
                        entry.effective_expiry, count.active
                    ),
                    ..Default::default()
                });
            }
            lot_rows.push(pb::LotReconciliationRow {
                gtin,
                lot: entry.lot.to_string(),
                expiry: convert::expiry_date(&entry.expiry.to_string()),
                status: if entry.recalled {
                    pb::LotStatus::Recalled as i32
                } else {
                    pb::LotStatus::Active as i32
                },
                commissioned: count.active + decommissioned,
                active: count.active,
                decommissioned_by_reason: by_reason,
                decommissioned,
            });
        }
        if lot.is_some() && !matched_lot {
            return Err(Status::not_found(format!(
                "lot {} is not registered for GTIN {}",
                request.lot, request.gtin
            )));
        }

        // Guessing ratios near their limit.
        let products = self
            .issuer
            .products(None, RECONCILE_ROWS_MAX)
            .await
            .map_err(convert::status)?;
        for product in products {
            if gtin.as_ref().is_some_and(|g| *g != product.gtin) {
                continue;
            }
            let figures = self.issuer.figures(&product);
            if figures.enforced && figures.ratio > RATIO_WARNING_SHARE * figures.ratio_limit {
                anomalies.push(pb::Anomaly {
                    kind: pb::AnomalyKind::GuessingRatioNearLimit as i32,
                    gtin: product.gtin.as_str().to_owned(),
                    count: figures.issued,
                    detail: format!(
                        "guessing ratio {:.3e} is above {:.0} % of its limit {:.1e}",
                        figures.ratio,
                        RATIO_WARNING_SHARE * 100.0,
                        figures.ratio_limit
                    ),
                    ..Default::default()
                });
            }
        }

        Ok(Response::new(pb::ReconcileResponse {
            pools: pool_rows,
            lots: lot_rows,
            anomalies,
            truncated: pools_truncated || lots_truncated,
            as_of_sequence,
            generated_at: Some(convert::timestamp(now)),
        }))
    }
}
