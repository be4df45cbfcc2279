//! `serial.v1.AggregationService`: SSCC pools, Pack and Unpack, the tree below
//! an SSCC with pack counts by state, and decommissions that cascade to every
//! pack below an SSCC. The aggregation writer (`issuer::aggregation`) does
//! the work; this module converts and validates.

use crate::access::{Principal, principal};
use issuer::aggregation::{
    AggregationAnswer, AggregationRequest, CascadeRequest, Child, ChildOutcome, HierarchyNode,
    NodeId, SsccPool, SsccPoolRequest,
};
use proto::serial::v1 as pb;
use proto::serial::v1::aggregation_service_server::AggregationService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::{self, invalid, status};
use crate::grpc::Api;
use crate::pools::{CHUNK_SIZE, ResponseStream};
use crate::verification::{parse_item, state_code};

fn sscc(field: &str, text: &str) -> Result<gs1::Sscc, Status> {
    if text.is_empty() {
        return Err(invalid(field, "required: an SSCC of 18 digits"));
    }
    gs1::Sscc::new(text).map_err(|e| invalid(field, e))
}

fn company_prefix(text: &str) -> Result<String, Status> {
    if !(6..=12).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "company_prefix",
            format!("{text:?} is not a GS1 company prefix of 6–12 digits"),
        ));
    }
    Ok(text.to_owned())
}

fn page_offset(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("offset:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid("page_token", "not a token from a RequestSsccPool stream"))
}

/// Parses children; a malformed one is kept as `Err` with its violation.
fn children(
    list: Vec<pb::AggregationChild>,
) -> (Vec<Result<Child, String>>, Vec<Option<pb::FieldViolation>>) {
    list.into_iter()
        .map(|child| {
            let parsed = match child.child {
                None => Err(convert::violation(
                    "child",
                    pb::ValidationRule::Required,
                    "give pack or sscc",
                )),
                Some(pb::aggregation_child::Child::Pack(identifier)) => {
                    parse_item(identifier).map(|item| Child::Pack {
                        gtin: item.gtin,
                        serial: item.serial,
                    })
                }
                Some(pb::aggregation_child::Child::Sscc(text)) => gs1::Sscc::new(&text)
                    .map(Child::Sscc)
                    .map_err(|e| crate::verification::violation("sscc", &e)),
            };
            match parsed {
                Ok(child) => (Ok(child), None),
                Err(violation) => (
                    Err(format!("{}: {}", violation.field, violation.description)),
                    Some(violation),
                ),
            }
        })
        .unzip()
}

fn results(
    answer: &AggregationAnswer,
    violations: &[Option<pb::FieldViolation>],
    denied: &[bool],
) -> Vec<pb::AggregationChildResult> {
    answer
        .results
        .iter()
        .enumerate()
        .map(|(i, result)| pb::AggregationChildResult {
            outcome: if denied.get(i).copied().unwrap_or(false) {
                pb::AggregationChildOutcome::PermissionDenied as i32
            } else {
                result.outcome as i32
            },
            error: if result.outcome == ChildOutcome::Malformed {
                violations.get(i).cloned().flatten()
            } else {
                None
            },
            current_parent_sscc: result.current_parent.clone().unwrap_or_default(),
        })
        .collect()
}

struct Fields<'a> {
    request_id: &'a str,
    parent: &'a str,
    location: &'a str,
    actor: &'a str,
    event_time: Option<&'a prost_types::Timestamp>,
}

/// A parsed Pack or Unpack: the request, and per child its violation and
/// whether it is outside the caller's scope (sent as malformed, so nothing
/// is applied, and answered PERMISSION_DENIED).
type Parsed = (
    AggregationRequest,
    Vec<Option<pb::FieldViolation>>,
    Vec<bool>,
);

fn aggregation_request(
    caller: &Principal,
    fields: Fields<'_>,
    list: Vec<pb::AggregationChild>,
) -> Result<Parsed, Status> {
    let request_id = convert::identifier("request_id", fields.request_id, true)?;
    let parent = sscc("parent_sscc", fields.parent)?;
    caller.check_sscc("parent_sscc", parent.as_str())?;
    let location = convert::identifier("location", fields.location, true)?;
    caller.check_location("location", &location)?;
    let actor = convert::identifier("actor", fields.actor, false)?;
    let event_time_micros = convert::event_time("event_time", fields.event_time)?;
    let (mut children, mut violations) = children(list);
    let mut denied = vec![false; children.len()];
    for (index, child) in children.iter_mut().enumerate() {
        let outside = match child {
            Ok(Child::Pack { gtin, .. }) => !caller.scope.covers_gtin(gtin.as_str()),
            Ok(Child::Sscc(sscc)) => !caller.scope.covers_sscc(sscc.as_str()),
            Err(_) => false,
        };
        if outside {
            let field = format!("children[{index}]");
            violations[index] = Some(convert::violation(
                &field,
                pb::ValidationRule::Unspecified,
                format!("outside the scope of token {:?}", caller.name),
            ));
            *child = Err(format!("{field}: outside the token's scope"));
            denied[index] = true;
        }
    }
    Ok((
        AggregationRequest {
            request_id,
            parent,
            children,
            location,
            party: caller.name.clone(),
            actor,
            event_time_micros,
        },
        violations,
        denied,
    ))
}

fn pool_header(pool: &SsccPool) -> pb::SsccPoolHeader {
    let record = &pool.record;
    let status = if record.granted == record.requested {
        pb::PoolStatus::Ok
    } else {
        pb::PoolStatus::InsufficientSerialNumbers
    };
    pb::SsccPoolHeader {
        pool_id: format!("sscc-{}", pool.pool_id),
        extension_digit: u32::from(record.extension_digit),
        company_prefix: record.company_prefix.clone(),
        requested_count: record.requested,
        granted_count: record.granted,
        status: status as i32,
        remaining: record.remaining,
        created_at: Some(convert::timestamp(record.created_micros)),
    }
}

/// Streams a durable SSCC pool from `offset`: header, chunks, summary.
async fn stream_pool(
    pool: SsccPool,
    offset: u64,
    sender: mpsc::Sender<Result<pb::RequestSsccPoolResponse, Status>>,
) {
    use pb::request_sscc_pool_response::Message;
    let send = |message| {
        let sender = sender.clone();
        async move {
            sender
                .send(Ok(pb::RequestSsccPoolResponse {
                    message: Some(message),
                }))
                .await
                .is_ok()
        }
    };
    if !send(Message::Header(pool_header(&pool))).await {
        return;
    }
    let mut checksum = xxhash_rust::xxh3::Xxh3::new();
    for sscc in &pool.ssccs {
        checksum.update(sscc.as_bytes());
        checksum.update(b"\n");
    }
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(pool.ssccs.len());
    let mut chunk_count = 0;
    let mut position = start;
    for chunk in pool.ssccs[start..].chunks(CHUNK_SIZE) {
        position += chunk.len();
        chunk_count += 1;
        let message = Message::Chunk(pb::SsccChunk {
            offset: (position - chunk.len()) as u64,
            ssccs: chunk.to_vec(),
            next_page_token: format!("offset:{position}"),
        });
        if !send(message).await {
            return;
        }
    }
    let _ = send(Message::Summary(pb::SsccPoolSummary {
        pool_id: format!("sscc-{}", pool.pool_id),
        sscc_count: pool.ssccs.len() as u64,
        chunk_count,
        ssccs_xxh3: checksum.digest(),
    }))
    .await;
}

fn node_message(node: HierarchyNode, view: &verifier::View<'_>) -> pb::HierarchyNode {
    let children = node
        .children
        .into_iter()
        .map(|child| node_message(child, view))
        .collect();
    let pack_counts = node
        .pack_counts
        .iter()
        .map(|(state, reason, count)| pb::StateCount {
            state: state_code(*state) as i32,
            reason: i32::from(*reason),
            count: *count,
        })
        .collect();
    match node.node {
        NodeId::Sscc(sscc) => pb::HierarchyNode {
            node: Some(pb::hierarchy_node::Node::Sscc(sscc)),
            pack_counts,
            children,
            child_count: node.child_count,
            ..Default::default()
        },
        NodeId::Pack(gtin, serial) => {
            let lot = node.entry.and_then(|e| e.lot).and_then(|id| view.lot(id));
            let yymmdd = lot.map(|l| l.expiry.to_string());
            pb::HierarchyNode {
                node: Some(pb::hierarchy_node::Node::Pack(pb::PackFields {
                    gtin: format!("{gtin:014}"),
                    serial,
                    lot: lot.map(|l| l.lot.to_string()),
                    expiry: yymmdd.clone(),
                })),
                state: node
                    .entry
                    .map_or(pb::PackState::Unknown, |e| state_code(e.state))
                    as i32,
                decommission_reason: node.entry.map_or(0, |e| i32::from(e.reason)),
                expiry: yymmdd.as_deref().and_then(convert::expiry_date),
                ..Default::default()
            }
        }
    }
}

#[tonic::async_trait]
impl AggregationService for Api {
    async fn request_sscc_pool(
        &self,
        request: Request<pb::RequestSsccPoolRequest>,
    ) -> Result<Response<ResponseStream<pb::RequestSsccPoolResponse>>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let offset = page_offset(&request.page_token)?;
        let extension_digit = u8::try_from(request.extension_digit)
            .ok()
            .filter(|d| *d <= 9)
            .ok_or_else(|| {
                invalid(
                    "extension_digit",
                    format!("{} is not a digit 0–9", request.extension_digit),
                )
            })?;
        let pool_request = SsccPoolRequest {
            request_id: convert::identifier("request_id", &request.request_id, true)?,
            extension_digit,
            company_prefix: company_prefix(&request.company_prefix)?,
            count: request.count,
            line_id: convert::identifier("line_id", &request.line_id, true)?,
            location: convert::identifier("location", &request.location, false)?,
            party: caller.name.clone(),
        };
        caller.check_company_prefix("company_prefix", &pool_request.company_prefix)?;
        caller.check_location("location", &pool_request.location)?;
        let pool = self
            .issuer
            .request_sscc_pool(pool_request)
            .await
            .map_err(status)?;
        if offset > pool.ssccs.len() as u64 {
            return Err(invalid(
                "page_token",
                format!(
                    "offset {offset} is past the pool's {} SSCCs",
                    pool.ssccs.len()
                ),
            ));
        }
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(stream_pool(pool, offset, sender));
        Ok(Response::new(Box::pin(crate::drain::Tracked::new(
            ReceiverStream::new(receiver),
        ))))
    }

    async fn pack(
        &self,
        request: Request<pb::PackRequest>,
    ) -> Result<Response<pb::PackResponse>, Status> {
        let caller = principal(&request)?;
        let message = request.into_inner();
        let (request, violations, denied) = aggregation_request(
            &caller,
            Fields {
                request_id: &message.request_id,
                parent: &message.parent_sscc,
                location: &message.location,
                actor: &message.actor,
                event_time: message.event_time.as_ref(),
            },
            message.children,
        )?;
        let parent = request.parent.as_str().to_owned();
        let answer = self.issuer.pack(request).await.map_err(status)?;
        Ok(Response::new(pb::PackResponse {
            parent_sscc: parent,
            applied: answer.applied,
            results: results(&answer, &violations, &denied),
            child_count: answer.child_count,
        }))
    }

    async fn unpack(
        &self,
        request: Request<pb::UnpackRequest>,
    ) -> Result<Response<pb::UnpackResponse>, Status> {
        let caller = principal(&request)?;
        let message = request.into_inner();
        let (request, violations, denied) = aggregation_request(
            &caller,
            Fields {
                request_id: &message.request_id,
                parent: &message.parent_sscc,
                location: &message.location,
                actor: &message.actor,
                event_time: message.event_time.as_ref(),
            },
            message.children,
        )?;
        let parent = request.parent.as_str().to_owned();
        let answer = self.issuer.unpack(request).await.map_err(status)?;
        Ok(Response::new(pb::UnpackResponse {
            parent_sscc: parent,
            applied: answer.applied,
            results: results(&answer, &violations, &denied),
            unpacked_count: answer.unpacked,
            child_count: answer.child_count,
        }))
    }

    async fn get_hierarchy(
        &self,
        request: Request<pb::GetHierarchyRequest>,
    ) -> Result<Response<pb::GetHierarchyResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let root = sscc("sscc", &request.sscc)?;
        caller.check_sscc("sscc", root.as_str())?;
        let hierarchy = self
            .issuer
            .hierarchy(root, request.max_depth, request.max_nodes as usize)
            .await
            .map_err(status)?;
        let view = self.issuer.index().view();
        Ok(Response::new(pb::GetHierarchyResponse {
            root: Some(node_message(hierarchy.root, &view)),
            ancestor_ssccs: hierarchy.ancestors,
            truncated: hierarchy.truncated,
        }))
    }

    async fn decommission_hierarchy(
        &self,
        request: Request<pb::DecommissionHierarchyRequest>,
    ) -> Result<Response<pb::DecommissionHierarchyResponse>, Status> {
        let caller = principal(&request)?;
        if !caller.scope.gtins.is_empty() || !caller.scope.company_prefixes.is_empty() {
            // The packs below an SSCC may be of any GTIN: only a token that
            // covers every product may decommission them all at once.
            return Err(Status::permission_denied(format!(
                "DecommissionHierarchy needs a token without GTIN or company prefix scope; token {:?} has one (decommission the packs with Decommission instead)",
                caller.name
            )));
        }
        let request = request.into_inner();
        let reason = crate::status::reason("reason", request.reason, true)?
            .ok_or_else(|| invalid("reason", "required"))?;
        let cascade = CascadeRequest {
            request_id: convert::identifier("request_id", &request.request_id, true)?,
            sscc: sscc("sscc", &request.sscc)?,
            reason,
            party: caller.name.clone(),
            actor: convert::identifier("actor", &request.actor, false)?,
            location: convert::identifier("location", &request.location, true)?,
            note: crate::status::text("note", &request.note, false)?,
            event_time_micros: convert::event_time("event_time", request.event_time.as_ref())?,
        };
        caller.check_location("location", &cascade.location)?;
        let answer = self
            .issuer
            .decommission_hierarchy(cascade)
            .await
            .map_err(status)?;
        let applied = issuer::status::DecommissionOutcome::Decommissioned as u8;
        Ok(Response::new(pb::DecommissionHierarchyResponse {
            request_id: request.request_id,
            sscc: request.sscc,
            pack_count: answer.packs,
            decommissioned: answer
                .outcomes
                .iter()
                .find(|(code, _)| *code == applied)
                .map_or(0, |(_, n)| *n),
            outcomes: answer
                .outcomes
                .iter()
                .map(|(code, count)| pb::DecommissionOutcomeCount {
                    outcome: i32::from(*code),
                    count: *count,
                })
                .collect(),
            replayed: answer.replayed,
        }))
    }
}
