//! `serial.v1.ServerInfoService`: version, limits and market profiles, so
//! clients size their requests instead of discovering limits by failure.

use issuer::profile::MarketProfile;
use proto::serial::v1 as pb;
use proto::serial::v1::server_info_service_server::ServerInfoService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::grpc::{Api, MESSAGE_BYTES_MAX};
use crate::master_data::PAGE_SIZE_MAX;
use crate::pools::CHUNK_SIZE;

fn profile_message(profile: MarketProfile) -> pb::MarketProfile {
    pb::MarketProfile {
        name: profile.name().to_owned(),
        description: profile.description().to_owned(),
        format: profile.default_format().map(|format| pb::SerialFormat {
            alphabet: format.alphabet_text().to_owned(),
            length: format.length(),
        }),
        guessing_rule_default: profile.guessing_rule_default(),
        ndc_required: false,
    }
}

#[tonic::async_trait]
impl ServerInfoService for Api {
    async fn get_server_info(
        &self,
        _: Request<pb::GetServerInfoRequest>,
    ) -> Result<Response<pb::GetServerInfoResponse>, Status> {
        let config = self.issuer.config();
        let now = crate::convert::now_micros();
        let limits = pb::ServerLimits {
            max_serials_requestable: config.pool_count_max,
            max_serials_returnable: config.return_group_max as u32,
            pool_chunk_size: CHUNK_SIZE as u32,
            max_items_per_group: config.commission_group_max as u32,
            max_groups_in_flight: crate::status::GROUPS_IN_FLIGHT as u32,
            max_page_size: PAGE_SIZE_MAX as u32,
            max_verify_batch_items: crate::verification::VERIFY_BATCH_ITEMS_MAX as u32,
            max_message_bytes: MESSAGE_BYTES_MAX as u32,
            max_watch_events: crate::events::WATCH_EVENTS_MAX as u32,
            export_chunk_bytes: crate::events::EXPORT_CHUNK_BYTES as u32,
            max_reconcile_rows: crate::reconcile::RECONCILE_ROWS_MAX as u32,
            max_aggregation_children: config.aggregation.children_max as u32,
            max_hierarchy_depth: config.aggregation.depth_max,
            max_hierarchy_nodes: config.aggregation.nodes_max as u32,
            max_ssccs_requestable: config.aggregation.sscc_pool_max,
            max_hierarchy_packs: config.aggregation.packs_max,
        };
        Ok(Response::new(pb::GetServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            build_commit: String::new(),
            api: "serial.v1".to_owned(),
            server_time: Some(convert::timestamp(now)),
            started_at: Some(convert::timestamp(self.started_micros)),
            shard_count: config.shards as u32,
            responder_gln: self.responder_gln.clone(),
            limits: Some(limits),
            market_profiles: MarketProfile::ALL
                .into_iter()
                .map(profile_message)
                .collect(),
            guessing_ratio_limit: config.guessing_rule.ratio_limit(),
            undo_window_seconds: issuer::status::UNDO_WINDOW_MICROS / 1_000_000,
            outstanding_age_default_seconds: crate::reconcile::OUTSTANDING_AGE_DEFAULT_SECONDS,
            // Idempotency records are never deleted.
            request_id_retention_seconds: u64::MAX,
            head_sequence: self.store.next_event_sequence().saturating_sub(1),
        }))
    }
}
