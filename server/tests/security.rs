//! Issue 7: tokens, roles, scopes and the per-principal verification limits,
//! through the real server and the real client (gRPC, HTTP and serialctl).
//!
//! The matrix test runs every role × every operation × a target inside and
//! outside the token's scope, over gRPC and over the HTTP verification
//! responder, and checks each call is allowed or refused as the table in
//! README.md ("Security") says.

#![allow(clippy::unwrap_used)]

mod common;

use common::api::{self, Channel, channel, channel_with_token};
use common::{Server, cli};
use proto::serial::v1 as pb;
use proto::serial::v1::access_service_client::AccessServiceClient;
use proto::serial::v1::aggregation_service_client::AggregationServiceClient;
use proto::serial::v1::event_service_client::EventServiceClient;
use proto::serial::v1::master_data_service_client::MasterDataServiceClient;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::status_service_client::StatusServiceClient;
use proto::serial::v1::verification_service_client::VerificationServiceClient;
use tonic::Code;

/// Company prefix 9520123: inside the scoped tokens' scope.
const GTIN_IN: &str = "09520123456788";
const PREFIX_IN: &str = "9520123";
const PREFIX_OUT: &str = "4012345";

/// Appends the GS1 mod-10 check digit.
fn with_check_digit(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn gtin_out() -> String {
    with_check_digit(&format!("0{PREFIX_OUT}00001"))
}

fn location_in() -> String {
    with_check_digit("952012300001")
}

fn location_out() -> String {
    with_check_digit("401234500001")
}

async fn create_token(
    admin: &Channel,
    name: &str,
    role: pb::Role,
    scope: pb::TokenScope,
) -> Result<pb::CreateTokenResponse, tonic::Status> {
    AccessServiceClient::new(admin.clone())
        .create_token(pb::CreateTokenRequest {
            request_id: format!(
                "create-{}",
                name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            ),
            name: name.into(),
            role: role as i32,
            scope: Some(scope),
            expires_at: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn token(admin: &Channel, name: &str, role: pb::Role, scope: pb::TokenScope) -> String {
    create_token(admin, name, role, scope)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .secret
}

fn scoped() -> pb::TokenScope {
    pb::TokenScope {
        company_prefixes: vec![PREFIX_IN.into()],
        gtins: Vec::new(),
        locations: vec![location_in()],
    }
}

#[tokio::test]
async fn calls_need_a_valid_token_and_the_bootstrap_token_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let file = dir.path().join("admin.token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    }
    let request = || pb::GetServerInfoRequest {};
    let info = |channel: Channel| async move {
        proto::serial::v1::server_info_service_client::ServerInfoServiceClient::new(channel)
            .get_server_info(request())
            .await
    };
    let none = info(channel_with_token(&server, None).await)
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    assert!(none.message().contains("authorization: Bearer"), "{none:?}");
    let wrong = info(channel_with_token(&server, Some("ssk_nope")).await)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    info(channel(&server).await)
        .await
        .expect("the admin token works");
    // Health checking needs no token.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel_with_token(&server, None).await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is open");
    // A restart keeps the token and does not make another.
    let before = server.admin_token();
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    let server = Server::start(dir.path());
    assert_eq!(server.admin_token(), before);
    info(channel(&server).await).await.expect("still valid");
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = channel(&server).await;
    let first = create_token(&admin, "line-1", pb::Role::Line, pb::TokenScope::default())
        .await
        .unwrap();
    assert!(first.secret.starts_with("ssk_") && !first.secret_withheld);
    let info = first.token_info.clone().unwrap();
    assert_eq!(
        (info.name.as_str(), info.created_by.as_str()),
        ("line-1", "admin")
    );
    // A retry of the request id: same token, secret withheld.
    let retry = create_token(&admin, "line-1", pb::Role::Line, pb::TokenScope::default())
        .await
        .unwrap();
    assert!(retry.secret.is_empty() && retry.secret_withheld);
    assert_eq!(retry.token_info.unwrap().token_id, info.token_id);
    // The same request id with other parameters, and a taken name.
    let mut other = pb::CreateTokenRequest {
        request_id: "create-line-1".into(),
        name: "line-1".into(),
        role: pb::Role::Verifier as i32,
        scope: None,
        expires_at: None,
    };
    let refused = AccessServiceClient::new(admin.clone())
        .create_token(other.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    other.request_id = "another".into();
    let taken = AccessServiceClient::new(admin.clone())
        .create_token(other)
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    for (name, field) in [("bad name!", "name"), ("", "name")] {
        let error = create_token(&admin, name, pb::Role::Line, pb::TokenScope::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().starts_with(field), "{error:?}");
    }
    let bad_scope = create_token(
        &admin,
        "x",
        pb::Role::Line,
        pb::TokenScope {
            gtins: vec!["09520123456789".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        bad_scope.message().starts_with("scope.gtins[0]"),
        "{bad_scope:?}"
    );

    // The line token works, then is refused from the next call after revocation.
    let line = channel_with_token(&server, Some(&first.secret)).await;
    let limits = || async {
        PoolServiceClient::new(line.clone())
            .get_limits(pb::GetLimitsRequest {})
            .await
    };
    limits().await.expect("line token works");
    let revoked = AccessServiceClient::new(admin.clone())
        .revoke_token(pb::RevokeTokenRequest {
            request_id: "revoke-1".into(),
            token_id: info.token_id.clone(),
            reason: "line decommissioned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!revoked.already_revoked && revoked.token_info.unwrap().revoked);
    let refused = limits().await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // Revoking again is OK and says so.
    let again = AccessServiceClient::new(admin.clone())
        .revoke_token(pb::RevokeTokenRequest {
            request_id: "revoke-2".into(),
            token_id: info.token_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_revoked);
    // The first request id still answers its (now revoked) token, without
    // the secret; a new request makes a new token under the freed name.
    let replay = create_token(&admin, "line-1", pb::Role::Line, pb::TokenScope::default())
        .await
        .unwrap();
    assert!(replay.secret_withheld && replay.token_info.unwrap().revoked);
    let mut fresh = pb::CreateTokenRequest {
        request_id: "create-line-1-again".into(),
        name: "line-1".into(),
        role: pb::Role::Line as i32,
        scope: None,
        expires_at: None,
    };
    AccessServiceClient::new(admin.clone())
        .create_token(fresh.clone())
        .await
        .expect("a revoked token's name may be used again");
    // An expiry in the past is refused.
    fresh.request_id = "past".into();
    fresh.name = "past".into();
    fresh.expires_at = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    let past = AccessServiceClient::new(admin.clone())
        .create_token(fresh)
        .await
        .unwrap_err();
    assert!(past.message().starts_with("expires_at"), "{past:?}");

    // The last admin cannot be revoked.
    let last = AccessServiceClient::new(admin.clone())
        .revoke_token(pb::RevokeTokenRequest {
            request_id: "revoke-admin".into(),
            token_id: "tok-1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition, "{last:?}");

    // Listing pages through every token; revoked ones only when asked.
    let list = |page_token: String, include_revoked: bool| {
        let admin = admin.clone();
        async move {
            AccessServiceClient::new(admin)
                .list_tokens(pb::ListTokensRequest {
                    page_size: 1,
                    page_token,
                    include_revoked,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut names = Vec::new();
    let mut page = String::new();
    loop {
        let answer = list(page, true).await;
        names.extend(answer.tokens.iter().map(|t| (t.name.clone(), t.revoked)));
        if answer.next_page_token.is_empty() {
            break;
        }
        page = answer.next_page_token;
    }
    assert_eq!(
        names,
        vec![
            ("admin".to_owned(), false),
            ("line-1".to_owned(), true),
            ("line-1".to_owned(), false)
        ]
    );
    let unrevoked = list(String::new(), false).await;
    assert_eq!(unrevoked.tokens.len(), 1);

    // Both changes are in the audit trail, with the token id and principal.
    let events = EventServiceClient::new(admin.clone())
        .export(pb::ExportRequest {
            since_sequence: 1,
            format: pb::ExportFormat::Jsonl as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text = collect_export(events).await;
    assert!(text.contains("\"EVENT_KIND_TOKEN_CREATED\""), "{text}");
    assert!(text.contains("\"EVENT_KIND_TOKEN_REVOKED\""), "{text}");
    assert!(
        text.contains(&format!("\"tokenId\":\"{}\"", info.token_id)),
        "{text}"
    );
    // Revocation survives a restart.
    let (status, log) = server.terminate();
    assert!(status.success(), "exit status {status:?}; log: {log:#?}");
    let server = Server::start(dir.path());
    let line = channel_with_token(&server, Some(&first.secret)).await;
    let refused = PoolServiceClient::new(line)
        .get_limits(pb::GetLimitsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

async fn collect_export(mut stream: tonic::Streaming<pb::ExportResponse>) -> String {
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::export_response::Message::Chunk(chunk)) = message.message {
            bytes.extend(chunk);
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// What a call came to, as far as access goes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Access {
    Allowed,
    Denied,
}

fn access(result: Result<(), tonic::Status>, what: &str) -> Access {
    match result {
        Ok(()) => Access::Allowed,
        Err(status) if status.code() == Code::PermissionDenied => Access::Denied,
        Err(status) => panic!("{what}: neither allowed nor denied: {status:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    GetProduct,
    AddLot,
    RequestPool,
    Commission,
    Verify,
    VerifyBatch,
    Decommission,
    RecallLot,
    SsccPool,
    ExportEvents,
    CreateToken,
    HttpVerify,
}

const OPS: [Op; 12] = [
    Op::GetProduct,
    Op::AddLot,
    Op::RequestPool,
    Op::Commission,
    Op::Verify,
    Op::VerifyBatch,
    Op::Decommission,
    Op::RecallLot,
    Op::SsccPool,
    Op::ExportEvents,
    Op::CreateToken,
    Op::HttpVerify,
];

/// The roles each operation allows (README, "Security").
fn allowed_roles(op: Op) -> &'static [&'static str] {
    match op {
        Op::GetProduct => &["admin", "line", "verifier", "returns"],
        Op::AddLot | Op::RecallLot | Op::ExportEvents | Op::CreateToken => &["admin"],
        Op::RequestPool | Op::Commission | Op::SsccPool => &["admin", "line"],
        Op::Verify | Op::VerifyBatch | Op::HttpVerify => &["admin", "verifier", "returns"],
        Op::Decommission => &["admin", "line", "returns"],
    }
}

/// Serials set aside per (role, target) for the operations that use one up.
struct Stock {
    allocated: Vec<String>,
    active: Vec<String>,
}

struct Fixture {
    server: Server,
    gtin_out: String,
    stock: std::collections::HashMap<String, Stock>,
}

async fn fixture(dir: &std::path::Path) -> Fixture {
    let server = Server::start_with(dir, &["--responder-gln", &location_in()]);
    let admin = channel(&server).await;
    let gtin_out = gtin_out();
    let mut stock = std::collections::HashMap::new();
    for gtin in [GTIN_IN, gtin_out.as_str()] {
        api::add_product(&admin, gtin, "eu-fmd", None, Some(false)).await;
        api::add_lot(&admin, gtin, "L1", "301231").await.unwrap();
        for role in ["admin", "line", "verifier", "returns"] {
            api::add_lot(&admin, gtin, &format!("R-{role}"), "301231")
                .await
                .unwrap();
        }
        let pool = api::request_pool(&admin, &format!("stock-{gtin}"), gtin, 200)
            .await
            .unwrap();
        let (active, allocated) = pool.serials.split_at(100);
        let answer =
            api::commission(&admin, gtin, &format!("c-{gtin}"), "L1", active.to_vec()).await;
        assert_eq!(answer.counts.unwrap().applied, 100);
        stock.insert(
            gtin.to_owned(),
            Stock {
                allocated: allocated.to_vec(),
                active: active.to_vec(),
            },
        );
    }
    Fixture {
        server,
        gtin_out,
        stock,
    }
}

async fn call(
    fixture: &mut Fixture,
    channel: &Channel,
    secret: &str,
    role: &str,
    op: Op,
    gtin: &str,
    case: usize,
) -> Access {
    let what = format!("{role} {op:?} {gtin}");
    let location = location_in();
    let stock = fixture.stock.get_mut(gtin).unwrap();
    let result: Result<(), tonic::Status> = match op {
        Op::GetProduct => MasterDataServiceClient::new(channel.clone())
            .get_product(pb::GetProductRequest { gtin: gtin.into() })
            .await
            .map(|_| ()),
        Op::AddLot => MasterDataServiceClient::new(channel.clone())
            .add_lot(pb::AddLotRequest {
                request_id: format!("lot-{case}"),
                gtin: gtin.into(),
                lot: format!("M{case}"),
                expiry: "301231".into(),
            })
            .await
            .map(|_| ()),
        Op::RequestPool => {
            match PoolServiceClient::new(channel.clone())
                .request_pool(pb::RequestPoolRequest {
                    request_id: format!("pool-{case}"),
                    gtin: gtin.into(),
                    count: 1,
                    line_id: "line-1".into(),
                    location: location.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while stream.message().await.unwrap().is_some() {}
                    Ok(())
                }
                Err(status) => Err(status),
            }
        }
        Op::Commission => {
            let serial = stock.allocated.pop().unwrap();
            match PoolServiceClient::new(channel.clone())
                .commission(tokio_stream::iter([pb::CommissionRequest {
                    request_id: format!("commission-{case}"),
                    gtin: gtin.into(),
                    lot: "L1".into(),
                    line_id: "line-1".into(),
                    location: location.clone(),
                    serials: vec![serial],
                    ..Default::default()
                }]))
                .await
            {
                Ok(answers) => {
                    let answer = answers.into_inner().message().await.unwrap().unwrap();
                    let status = answer.status.unwrap();
                    match status.code {
                        0 => {
                            assert_eq!(answer.counts.unwrap().applied, 1, "{what}");
                            Ok(())
                        }
                        7 => Err(tonic::Status::permission_denied(status.message)),
                        _ => panic!("{what}: {status:?}"),
                    }
                }
                Err(status) => Err(status),
            }
        }
        Op::Verify => VerificationServiceClient::new(channel.clone())
            .verify(pb::VerifyRequest {
                item: Some(api::item(gtin, &stock.active[0])),
            })
            .await
            .map(|answer| {
                let result = answer.into_inner().result.unwrap();
                assert!(result.product_known, "{what}: {result:?}");
            }),
        Op::VerifyBatch => VerificationServiceClient::new(channel.clone())
            .verify_batch(pb::VerifyBatchRequest {
                items: vec![api::item(gtin, &stock.active[0])],
                ..Default::default()
            })
            .await
            .and_then(|answer| {
                let result = &answer.into_inner().results[0];
                match &result.error {
                    None => Ok(()),
                    Some(error) if error.description.contains("outside the scope") => {
                        Err(tonic::Status::permission_denied(error.description.clone()))
                    }
                    Some(error) => panic!("{what}: {error:?}"),
                }
            }),
        Op::Decommission => {
            let serial = stock.active.pop().unwrap();
            match StatusServiceClient::new(channel.clone())
                .decommission(tokio_stream::iter([pb::DecommissionRequest {
                    request_id: format!("decommission-{case}"),
                    reason: pb::DecommissionReason::Dispensed as i32,
                    location: location.clone(),
                    items: vec![api::item(gtin, &serial)],
                    ..Default::default()
                }]))
                .await
            {
                Ok(answers) => {
                    let answer = answers.into_inner().message().await.unwrap().unwrap();
                    let outcome = answer.results[0].outcome;
                    if outcome == pb::DecommissionOutcome::PermissionDenied as i32 {
                        Err(tonic::Status::permission_denied("item"))
                    } else {
                        assert_eq!(
                            outcome,
                            pb::DecommissionOutcome::Decommissioned as i32,
                            "{what}"
                        );
                        Ok(())
                    }
                }
                Err(status) => Err(status),
            }
        }
        Op::RecallLot => StatusServiceClient::new(channel.clone())
            .recall_lot(pb::RecallLotRequest {
                request_id: format!("recall-{case}"),
                gtin: gtin.into(),
                lot: format!("R-{role}"),
                reason: "matrix".into(),
            })
            .await
            .map(|_| ()),
        Op::SsccPool => {
            let prefix = if gtin == GTIN_IN {
                PREFIX_IN
            } else {
                PREFIX_OUT
            };
            match AggregationServiceClient::new(channel.clone())
                .request_sscc_pool(pb::RequestSsccPoolRequest {
                    request_id: format!("sscc-{case}"),
                    extension_digit: 3,
                    company_prefix: prefix.into(),
                    count: 1,
                    line_id: "line-1".into(),
                    location: location.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while stream.message().await.unwrap().is_some() {}
                    Ok(())
                }
                Err(status) => Err(status),
            }
        }
        Op::ExportEvents => match EventServiceClient::new(channel.clone())
            .export(pb::ExportRequest {
                since_sequence: 1,
                until_sequence: 2,
                format: pb::ExportFormat::Jsonl as i32,
                ..Default::default()
            })
            .await
        {
            Ok(stream) => {
                collect_export(stream.into_inner()).await;
                Ok(())
            }
            Err(status) => Err(status),
        },
        Op::CreateToken => create_token(
            channel,
            &format!("made-{case}"),
            pb::Role::Verifier,
            pb::TokenScope::default(),
        )
        .await
        .map(|_| ()),
        Op::HttpVerify => {
            let path = format!(
                "/01/{gtin}/21/{}?linkType=verificationService&reqGLN={location}&corrUUID=m-{case}",
                stock.active[0]
            );
            let (status, headers, _) =
                common::http_get_with(fixture.server.http, &path, Some(secret));
            match status {
                200 => Ok(()),
                403 => Err(tonic::Status::permission_denied(headers)),
                other => panic!("{what}: HTTP {other}\n{headers}"),
            }
        }
    };
    access(result, &what)
}

#[tokio::test]
async fn every_role_and_operation_in_and_out_of_scope() {
    let dir = tempfile::tempdir().unwrap();
    let mut fixture = fixture(dir.path()).await;
    let admin = channel(&fixture.server).await;
    let mut failures = Vec::new();
    let mut case = 0;
    let gtin_out = fixture.gtin_out.clone();
    for role in ["admin", "line", "verifier", "returns"] {
        let pb_role = match role {
            "admin" => pb::Role::Admin,
            "line" => pb::Role::Line,
            "verifier" => pb::Role::Verifier,
            _ => pb::Role::Returns,
        };
        let secret = token(&admin, &format!("scoped-{role}"), pb_role, scoped()).await;
        let scoped_channel = channel_with_token(&fixture.server, Some(&secret)).await;
        for op in OPS {
            for (gtin, in_scope) in [(GTIN_IN, true), (gtin_out.as_str(), false)] {
                case += 1;
                let global = matches!(op, Op::ExportEvents | Op::CreateToken);
                let expected = if allowed_roles(op).contains(&role) && in_scope && !global {
                    Access::Allowed
                } else {
                    Access::Denied
                };
                let got = call(&mut fixture, &scoped_channel, &secret, role, op, gtin, case).await;
                if got != expected {
                    failures.push(format!(
                        "{role} (scoped) {op:?} {}: expected {expected:?}, got {got:?}",
                        if in_scope { "in scope" } else { "out of scope" }
                    ));
                }
            }
        }
    }
    // An unscoped admin may do everything, everywhere.
    let admin_secret = fixture.server.admin_token();
    for op in OPS {
        for gtin in [GTIN_IN, gtin_out.as_str()] {
            case += 1;
            let got = call(&mut fixture, &admin, &admin_secret, "admin", op, gtin, case).await;
            if got != Access::Allowed {
                failures.push(format!("admin (unscoped) {op:?} {gtin}: got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Location scope: a scoped line token may not act at another location.
    let line = channel_with_token(
        &fixture.server,
        Some(&token(&admin, "line-at-1", pb::Role::Line, scoped()).await),
    )
    .await;
    let elsewhere = PoolServiceClient::new(line)
        .request_pool(pb::RequestPoolRequest {
            request_id: "elsewhere".into(),
            gtin: GTIN_IN.into(),
            count: 1,
            line_id: "line-1".into(),
            location: location_out(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::PermissionDenied, "{elsewhere:?}");
    assert!(elsewhere.message().starts_with("location"), "{elsewhere:?}");

    // HTTP: no token 401 (with WWW-Authenticate), a reqGLN the token may not
    // ask for 403.
    let serial = &fixture.stock[GTIN_IN].active[0];
    let path = |gln: &str| {
        format!("/01/{GTIN_IN}/21/{serial}?linkType=verificationService&reqGLN={gln}&corrUUID=h")
    };
    let (status, headers, _) =
        common::http_get_with(fixture.server.http, &path(&location_in()), None);
    assert_eq!(status, 401, "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{headers}"
    );
    let verifier = token(&admin, "router-1", pb::Role::Verifier, scoped()).await;
    let (status, headers, _) =
        common::http_get_with(fixture.server.http, &path(&location_out()), Some(&verifier));
    assert_eq!(status, 403, "{headers}");
    assert!(headers.contains("reqGLN"), "{headers}");
}

#[tokio::test]
async fn the_audit_trail_names_the_principal_and_undo_compares_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let admin = channel(&server).await;
    api::add_product(&admin, GTIN_IN, "eu-fmd", None, Some(false)).await;
    api::add_lot(&admin, GTIN_IN, "L1", "301231").await.unwrap();
    let pool = api::request_pool(&admin, "p", GTIN_IN, 2).await.unwrap();
    api::commission(&admin, GTIN_IN, "c", "L1", pool.serials.clone()).await;
    let one = channel_with_token(
        &server,
        Some(
            &token(
                &admin,
                "pharmacy-1",
                pb::Role::Returns,
                pb::TokenScope::default(),
            )
            .await,
        ),
    )
    .await;
    let two = channel_with_token(
        &server,
        Some(
            &token(
                &admin,
                "pharmacy-2",
                pb::Role::Returns,
                pb::TokenScope::default(),
            )
            .await,
        ),
    )
    .await;
    let location = location_in();
    let serial = &pool.serials[0];
    let answer = api::decommission_group(
        &one,
        pb::DecommissionRequest {
            request_id: "d1".into(),
            reason: pb::DecommissionReason::Dispensed as i32,
            location: location.clone(),
            actor: "till-3".into(),
            items: vec![api::item(GTIN_IN, serial)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(answer.counts.unwrap().applied, 1);
    let undo = |channel: Channel, id: &'static str| {
        let location = location.clone();
        let serial = serial.clone();
        async move {
            let mut answers = StatusServiceClient::new(channel)
                .undo(tokio_stream::iter([pb::UndoRequest {
                    request_id: id.into(),
                    location,
                    items: vec![api::item(GTIN_IN, &serial)],
                    ..Default::default()
                }]))
                .await
                .unwrap()
                .into_inner();
            answers.message().await.unwrap().unwrap().results[0].outcome
        }
    };
    // Another principal at the same location is another party.
    assert_eq!(undo(two, "u2").await, pb::UndoOutcome::DifferentUser as i32);
    assert_eq!(undo(one, "u1").await, pb::UndoOutcome::Reactivated as i32);
    let text = collect_export(
        EventServiceClient::new(admin)
            .export(pb::ExportRequest {
                since_sequence: 1,
                format: pb::ExportFormat::Jsonl as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let decommissioned = text
        .lines()
        .find(|line| line.contains("EVENT_KIND_DECOMMISSIONED"))
        .expect("decommission event");
    assert!(
        decommissioned.contains("\"principal\":\"pharmacy-1\""),
        "{decommissioned}"
    );
    assert!(
        decommissioned.contains("\"actor\":\"till-3\""),
        "{decommissioned}"
    );
    let added = text
        .lines()
        .find(|line| line.contains("EVENT_KIND_PRODUCT_ADDED"))
        .expect("product event");
    assert!(added.contains("\"principal\":\"admin\""), "{added}");
}

/// Reads one counter of the metrics exposition (0 when absent).
fn metric(server: &Server, series: &str) -> f64 {
    let (_, body) = common::http_get(server.metrics, "/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_flood_of_unknown_serials_trips_the_metric_and_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--enumeration-min-lookups",
            "100",
            "--enumeration-unknown-percent",
            "50",
            "--enumeration-block-seconds",
            "600",
        ],
    );
    let admin = channel(&server).await;
    api::add_product(&admin, GTIN_IN, "eu-fmd", None, Some(false)).await;
    let prober_secret = token(
        &admin,
        "prober",
        pb::Role::Verifier,
        pb::TokenScope::default(),
    )
    .await;
    let prober = channel_with_token(&server, Some(&prober_secret)).await;
    let honest = channel_with_token(
        &server,
        Some(
            &token(
                &admin,
                "honest",
                pb::Role::Verifier,
                pb::TokenScope::default(),
            )
            .await,
        ),
    )
    .await;
    let guesses = |n: usize, tag: &str| -> Vec<pb::PackIdentifier> {
        (0..n)
            .map(|i| api::item(GTIN_IN, &format!("GUESS{tag}{i}")))
            .collect()
    };
    let batch = |channel: Channel, items: Vec<pb::PackIdentifier>| async move {
        VerificationServiceClient::new(channel)
            .verify_batch(pb::VerifyBatchRequest {
                items,
                ..Default::default()
            })
            .await
    };
    // 99 unknown lookups: below the judged minimum.
    batch(prober.clone(), guesses(99, "a")).await.unwrap();
    let series = "serialsvc_enumeration_suspected_total{principal=\"prober\"}";
    assert_eq!(metric(&server, series), 0.0);
    // The 100th: judged, reported, blocked.
    batch(prober.clone(), guesses(1, "b")).await.unwrap();
    assert_eq!(metric(&server, series), 1.0);
    let blocked = batch(prober.clone(), guesses(1, "c")).await.unwrap_err();
    assert_eq!(blocked.code(), Code::ResourceExhausted, "{blocked:?}");
    assert!(blocked.message().contains("blocked"), "{blocked:?}");
    let path = format!(
        "/01/{GTIN_IN}/21/X1?linkType=verificationService&reqGLN={}&corrUUID=c",
        location_in()
    );
    let (status, headers, _) = common::http_get_with(server.http, &path, Some(&prober_secret));
    assert_eq!(status, 429, "{headers}");
    // Another principal is not affected.
    batch(honest, guesses(10, "d"))
        .await
        .expect("another token still verifies");
    assert!(
        metric(
            &server,
            "serialsvc_verifications_refused_total{principal=\"prober\",reason=\"blocked\"}"
        ) >= 2.0
    );
}

#[tokio::test]
async fn the_verification_rate_limit_is_per_principal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--verify-rate-per-principal", "100"]);
    let admin = channel(&server).await;
    api::add_product(&admin, GTIN_IN, "eu-fmd", None, Some(false)).await;
    let items: Vec<pb::PackIdentifier> = (0..100)
        .map(|i| api::item(GTIN_IN, &format!("S{i}")))
        .collect();
    let first = channel_with_token(
        &server,
        Some(
            &token(
                &admin,
                "router-a",
                pb::Role::Verifier,
                pb::TokenScope::default(),
            )
            .await,
        ),
    )
    .await;
    let second = channel_with_token(
        &server,
        Some(
            &token(
                &admin,
                "router-b",
                pb::Role::Verifier,
                pb::TokenScope::default(),
            )
            .await,
        ),
    )
    .await;
    let batch = |channel: Channel| {
        let items = items.clone();
        async move {
            VerificationServiceClient::new(channel)
                .verify_batch(pb::VerifyBatchRequest {
                    items,
                    ..Default::default()
                })
                .await
        }
    };
    batch(first.clone()).await.expect("one second's worth");
    let limited = batch(first.clone()).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains("verify_rate_per_principal"),
        "{limited:?}"
    );
    batch(second)
        .await
        .expect("another token has its own allowance");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    batch(first).await.expect("the allowance refills");
}

#[test]
fn serialctl_manages_tokens_and_uses_the_local_admin_token() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = Server::start(&data);
    // Run from the directory holding data/: the bootstrap token is found
    // without any option, as the README's walkthrough does.
    let endpoint = server.endpoint();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_serialsvc")).with_file_name("serialctl");
    let local = |args: &[&str]| {
        std::process::Command::new(&binary)
            .current_dir(root.path())
            .env_remove("SERIALCTL_TOKEN")
            .env_remove("SERIALCTL_TOKEN_FILE")
            .arg("--endpoint")
            .arg(&endpoint)
            .args(args)
            .output()
            .unwrap()
    };
    let location = location_in();
    let created = local(&[
        "token",
        "create",
        "--role",
        "verifier",
        "--name",
        "router-1",
        "--scope-location",
        &location,
    ]);
    assert!(created.status.success(), "{}", cli::stderr(&created));
    let secret = cli::stdout(&created).trim().to_owned();
    assert!(secret.starts_with("ssk_"), "{secret}");
    assert!(cli::stderr(&created).contains("router-1"));
    let listed = local(&["token", "list"]);
    let text = cli::stdout(&listed);
    assert!(
        text.contains("router-1") && text.contains("verifier"),
        "{text}"
    );
    assert!(
        text.contains(&format!("location={}", location_in())),
        "{text}"
    );
    assert!(!text.contains(&secret), "a listing never shows secrets");
    // The verifier token may verify, not register products.
    let run_with = |token: &str, args: &[&str]| {
        let mut all = vec!["--endpoint", endpoint.as_str(), "--token", token];
        all.extend_from_slice(args);
        common::serialctl(&all)
    };
    let verified = run_with(&secret, &["verify", &format!("(01){GTIN_IN}(21)X")]);
    assert_eq!(
        verified.status.code(),
        Some(1),
        "{}",
        cli::stderr(&verified)
    );
    let denied = run_with(
        &secret,
        &[
            "product",
            "add",
            "--gtin",
            GTIN_IN,
            "--name",
            "N",
            "--company-prefix-length",
            "7",
            "--profile",
            "eu-fmd",
        ],
    );
    assert!(!denied.status.success());
    assert!(
        cli::stderr(&denied).contains("PERMISSION_DENIED"),
        "{}",
        cli::stderr(&denied)
    );
    let revoked = local(&["token", "revoke", "tok-2", "--reason", "router retired"]);
    assert!(revoked.status.success(), "{}", cli::stderr(&revoked));
    assert!(cli::stdout(&revoked).contains("revoked token tok-2"));
    let refused = run_with(&secret, &["verify", &format!("(01){GTIN_IN}(21)X")]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        cli::stderr(&refused).contains("UNAUTHENTICATED"),
        "{}",
        cli::stderr(&refused)
    );
}
