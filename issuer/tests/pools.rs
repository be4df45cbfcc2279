//! Pools of many segments through the issuer's public API, on a real store:
//! the pipelined commit (a committer thread writing segment k while the
//! writer builds k + 1 and indexes k − 1) must leave exactly what the
//! sequential one did: every serial durable, allocated to its pool, indexed
//! and counted once, the chunks in order, the pool and product records
//! agreeing, and no serial issued twice across a restart.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use issuer::{Issuer, IssuerConfig, NewProduct, PoolRequest};
use storage::Store;

const GTIN: &str = "09520123456788";
/// Small segments, so that a modest pool has many of them.
const SEGMENT: usize = 1_000;

fn start(dir: &std::path::Path) -> Issuer {
    let store = Arc::new(Store::open(dir).unwrap());
    let config = IssuerConfig {
        shards: 2,
        pool_segment_size: SEGMENT,
        ..IssuerConfig::default()
    };
    let index = Arc::new(verifier::StatusIndex::new(config.shards).unwrap());
    issuer::rebuild_index(&store, &index, |_| {}).unwrap();
    Issuer::start(store, config, index).unwrap()
}

fn request(id: &str, count: u64) -> PoolRequest {
    PoolRequest {
        request_id: id.into(),
        gtin: gs1::Gtin::new(GTIN).unwrap(),
        count,
        line_id: "L1".into(),
        location: String::new(),
        profile_override: None,
        format_override: None,
        selection_criteria: Vec::new(),
        principal: "test".into(),
    }
}

/// Requests a pool, waits until it is durable, reads every chunk back.
async fn pool(issuer: &Issuer, id: &str, count: u64) -> (u64, Vec<String>) {
    let mut ticket = issuer.request_pool(request(id, count)).await.unwrap();
    let progress = ticket
        .progress
        .wait_for(|p| p.finished || p.failed.is_some())
        .await
        .unwrap()
        .clone();
    assert!(progress.failed.is_none(), "{progress:?}");
    let pool_id = ticket.pool.pool_id;
    let record = issuer.pool(pool_id).await.unwrap().unwrap();
    assert_eq!(record.granted, count);
    assert_eq!(record.committed, count);
    assert_eq!(u64::from(record.chunks), count.div_ceil(SEGMENT as u64));
    assert_eq!(progress.chunks, record.chunks);
    let mut serials = Vec::new();
    for chunk in 0..record.chunks {
        let part = issuer.pool_chunk(pool_id, chunk).await.unwrap();
        let expected = if chunk + 1 == record.chunks {
            (count as usize - 1) % SEGMENT + 1
        } else {
            SEGMENT
        };
        assert_eq!(part.len(), expected, "chunk {chunk}");
        serials.extend(part);
    }
    (pool_id, serials)
}

/// The product's issued counter.
async fn issued(issuer: &Issuer) -> u64 {
    let gtin = gs1::Gtin::new(GTIN).unwrap();
    issuer.product(gtin).await.unwrap().unwrap().record.issued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_many_segments_is_whole_unique_indexed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = start(dir.path());
    issuer
        .add_product(NewProduct {
            gtin: gs1::Gtin::new(GTIN).unwrap(),
            name: "Pipelined".into(),
            company_prefix_length: 7,
            profile: "eu-fmd".into(),
            custom_format: None,
            ndc: None,
            guessing_rule_enforced: None,
            principal: "test".into(),
        })
        .await
        .unwrap();
    // 10.5 segments, then 3 more pools: 13 segments in flight one after another.
    let (first_id, first) = pool(&issuer, "p-1", 10_500).await;
    let mut seen: HashSet<String> = HashSet::new();
    for serial in &first {
        assert!(seen.insert(serial.clone()), "{serial} issued twice");
    }
    for n in 2..=4 {
        let (_, serials) = pool(&issuer, &format!("p-{n}"), 1_000).await;
        for serial in serials {
            assert!(seen.insert(serial.clone()), "{serial} issued twice");
        }
    }
    assert_eq!(issued(&issuer).await, 13_500);
    assert_eq!(issuer.index().stats().serials, 13_500);

    // The replay returns the same pool; after a restart too, and new pools
    // never repeat a serial.
    let (again_id, again) = pool(&issuer, "p-1", 10_500).await;
    assert_eq!((again_id, &again), (first_id, &first));
    issuer.shutdown();
    let issuer = start(dir.path());
    assert_eq!(issuer.index().stats().serials, 13_500);
    let (after_id, after) = pool(&issuer, "p-1", 10_500).await;
    assert_eq!((after_id, &after), (first_id, &first));
    let (_, more) = pool(&issuer, "p-5", 5_500).await;
    for serial in more {
        assert!(
            seen.insert(serial.clone()),
            "{serial} issued twice after a restart"
        );
    }
    assert_eq!(issued(&issuer).await, 19_000);
    issuer.shutdown();
}
