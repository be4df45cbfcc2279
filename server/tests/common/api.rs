//! gRPC helpers shared by the integration tests: connect, register master
//! data, request pools, commission and return.

// Helpers panic on failure by design: they run inside tests.
#![allow(clippy::unwrap_used)]

use proto::serial::v1 as pb;
use proto::serial::v1::master_data_service_client::MasterDataServiceClient;
use proto::serial::v1::pool_service_client::PoolServiceClient;
use proto::serial::v1::request_pool_response::Message;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

use super::Server;

/// Adds `authorization: Bearer <secret>` to every call.
#[derive(Clone, Debug)]
pub struct Bearer(pub Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connected channel whose calls carry a token.
pub type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// A channel authenticated with the server's bootstrap admin token.
pub async fn channel(server: &Server) -> Channel {
    channel_with_token(server, Some(&server.admin_token())).await
}

/// A channel whose calls carry `token` (none: no authorization metadata).
pub async fn channel_with_token(server: &Server, token: Option<&str>) -> Channel {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the server");
    let bearer =
        token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).expect("ASCII token"));
    InterceptedService::new(channel, Bearer(bearer))
}

pub async fn add_product(
    channel: &Channel,
    gtin: &str,
    profile: &str,
    custom: Option<(&str, u32)>,
    guessing: Option<bool>,
) {
    let mut client = MasterDataServiceClient::new(channel.clone());
    client
        .add_product(pb::AddProductRequest {
            request_id: format!("product-{gtin}"),
            gtin: gtin.into(),
            name: "Test product".into(),
            company_prefix_length: 7,
            market_profile: profile.into(),
            custom_format: custom.map(|(alphabet, length)| pb::SerialFormat {
                alphabet: alphabet.into(),
                length,
            }),
            ndc: None,
            guessing_rule_enforced: guessing,
        })
        .await
        .expect("add product");
}

pub async fn add_lot(
    channel: &Channel,
    gtin: &str,
    lot: &str,
    expiry: &str,
) -> Result<pb::Lot, tonic::Status> {
    let mut client = MasterDataServiceClient::new(channel.clone());
    let request = pb::AddLotRequest {
        request_id: format!("lot-{lot}"),
        gtin: gtin.into(),
        lot: lot.into(),
        expiry: expiry.into(),
    };
    client
        .add_lot(request)
        .await
        .map(|r| r.into_inner().lot.expect("lot"))
}

/// A pool as the client received it.
#[derive(Debug)]
pub struct Pool {
    pub header: pb::PoolHeader,
    pub serials: Vec<String>,
    pub summary: pb::PoolSummary,
}

pub async fn request_pool(
    channel: &Channel,
    request_id: &str,
    gtin: &str,
    count: u64,
) -> Result<Pool, tonic::Status> {
    request_pool_from(channel, request_id, gtin, count, "").await
}

pub async fn request_pool_from(
    channel: &Channel,
    request_id: &str,
    gtin: &str,
    count: u64,
    token: &str,
) -> Result<Pool, tonic::Status> {
    request_pool_with(channel, request_id, gtin, count, token, None).await
}

pub async fn request_pool_with(
    channel: &Channel,
    request_id: &str,
    gtin: &str,
    count: u64,
    token: &str,
    format_override: Option<pb::SerialFormat>,
) -> Result<Pool, tonic::Status> {
    let mut client = PoolServiceClient::new(channel.clone());
    let request = pb::RequestPoolRequest {
        request_id: request_id.into(),
        gtin: gtin.into(),
        count,
        line_id: "LINE-1".into(),
        page_token: token.into(),
        format_override,
        ..Default::default()
    };
    let mut stream = client.request_pool(request).await?.into_inner();
    let (mut header, mut summary, mut serials) = (None, None, Vec::new());
    while let Some(message) = stream.message().await? {
        match message.message.expect("message") {
            Message::Header(h) => header = Some(h),
            Message::Chunk(chunk) => {
                assert_eq!(
                    chunk.offset,
                    serials.len() as u64
                        + token
                            .strip_prefix("offset:")
                            .map_or(0, |o| o.parse::<u64>().unwrap())
                );
                serials.extend(chunk.serials);
            }
            Message::Summary(s) => summary = Some(s),
        }
    }
    Ok(Pool {
        header: header.expect("header"),
        serials,
        summary: summary.expect("summary"),
    })
}

pub async fn commission(
    channel: &Channel,
    gtin: &str,
    request_id: &str,
    lot: &str,
    serials: Vec<String>,
) -> pb::CommissionResponse {
    let group = pb::CommissionRequest {
        request_id: request_id.into(),
        gtin: gtin.into(),
        lot: lot.into(),
        serials,
        ..Default::default()
    };
    commission_group(channel, group).await
}

/// Sends one commissioning group as it is and returns its answer.
pub async fn commission_group(
    channel: &Channel,
    group: pb::CommissionRequest,
) -> pb::CommissionResponse {
    let mut client = PoolServiceClient::new(channel.clone());
    let mut answers = client
        .commission(tokio_stream::iter([group]))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().expect("one answer")
}

pub async fn return_serials(
    channel: &Channel,
    gtin: &str,
    request_id: &str,
    serials: Vec<String>,
) -> pb::ReturnSerialsResponse {
    let group = pb::ReturnSerialsRequest {
        request_id: request_id.into(),
        gtin: gtin.into(),
        serials,
        ..Default::default()
    };
    return_group(channel, group).await
}

/// Sends one return group as it is and returns its answer.
pub async fn return_group(
    channel: &Channel,
    group: pb::ReturnSerialsRequest,
) -> pb::ReturnSerialsResponse {
    let mut client = PoolServiceClient::new(channel.clone());
    let mut answers = client
        .return_serials(tokio_stream::iter([group]))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().expect("one answer")
}

/// A pack given by its GTIN and serial only.
pub fn item(gtin: &str, serial: &str) -> pb::PackIdentifier {
    pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: gtin.into(),
            serial: serial.into(),
            lot: None,
            expiry: None,
        })),
    }
}

/// Sends one decommission group as it is and returns its answer.
pub async fn decommission_group(
    channel: &Channel,
    group: pb::DecommissionRequest,
) -> pb::DecommissionResponse {
    let mut answers =
        proto::serial::v1::status_service_client::StatusServiceClient::new(channel.clone())
            .decommission(tokio_stream::iter([group]))
            .await
            .unwrap()
            .into_inner();
    answers.message().await.unwrap().expect("one answer")
}

/// Creates an unscoped token named `name` with `role` (by the admin) and
/// answers its secret.
pub async fn create_token(server: &Server, name: &str, role: pb::Role) -> String {
    proto::serial::v1::access_service_client::AccessServiceClient::new(channel(server).await)
        .create_token(pb::CreateTokenRequest {
            request_id: format!("token-{name}"),
            name: name.into(),
            role: role as i32,
            scope: None,
            expires_at: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create token {name}: {e}"))
        .into_inner()
        .secret
}

/// A channel authenticated as a new unscoped principal `name` with `role`.
pub async fn principal_channel(server: &Server, name: &str, role: pb::Role) -> Channel {
    let secret = create_token(server, name, role).await;
    channel_with_token(server, Some(&secret)).await
}
