//! The HTTP responder for verification routers: GS1 Lightweight Verification
//! Messaging (DOMAIN.md §4). `GET` on a Digital Link path, canonical
//! (`/01/{gtin}/10/{lot}/21/{serial}?17=YYMMDD`) or legacy
//! (`/gtin/{gtin}/lot/{lot}/ser/{serial}?exp=YYMMDD`), with `linkType`,
//! `context`, `reqGLN` and `corrUUID` in the query; JSON answer.
//!
//! Status codes: 200 with the JSON body; 400 malformed request; 401 no valid
//! token (`Authorization: Bearer <token>`); 403 the token may not verify, or
//! `reqGLN` is not one of its locations, or the GTIN is outside its scope;
//! 404 GTIN not served here; 429 the token's verification rate limit or an
//! enumeration block; 503 while the index is rebuilt. Only 200 carries a body
//! (as the standard has it); every other answer says why in the
//! `X-Verification-Error` header.
//!
//! The requester is the token's principal: `reqGLN` must be one of the
//! token's locations when its scope names any, so a router's token maps the
//! GLNs it may ask for.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use verifier::{Purpose, StatusIndex};

use crate::verification::{self, Item};

/// Header naming what was wrong with a refused request.
pub(crate) const ERROR_HEADER: &str = "x-verification-error";

/// Longest request URI accepted (path and query), in bytes.
const URI_LENGTH_MAX: usize = 2048;

/// What the responder needs.
#[derive(Clone, Debug)]
pub(crate) struct Responder {
    pub(crate) index: Arc<StatusIndex>,
    pub(crate) responder_gln: String,
    pub(crate) access: Arc<crate::access::AccessControl>,
}

/// The principal of the request's token, allowed to verify for `requester`,
/// or the 401/403 answer.
#[allow(clippy::result_large_err)] // the refusal is answered at once, not passed along
fn requester(
    responder: &Responder,
    headers: &HeaderMap,
    requester: &str,
) -> Result<Arc<crate::access::Principal>, Response> {
    use crate::access::Refusal;
    match responder.access.admit(
        "/serial.v1.VerificationService/Verify",
        headers.get(axum::http::header::AUTHORIZATION),
    ) {
        Ok(Some(principal)) => {
            if principal.scope.covers_location(requester) {
                Ok(principal)
            } else {
                Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "reqGLN: {requester} is not a location of token {:?}",
                        principal.name
                    ),
                ))
            }
        }
        Ok(None) => Err(refuse(StatusCode::UNAUTHORIZED, "no token")),
        Err(Refusal::Unauthenticated(why)) => {
            let mut response = refuse(StatusCode::UNAUTHORIZED, why);
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"serialsvc\""),
            );
            Err(response)
        }
        Err(Refusal::Denied(why)) => Err(refuse(StatusCode::FORBIDDEN, why)),
    }
}

/// `/01/…` and `/gtin/…` on the HTTP listener.
pub(crate) fn router(responder: Responder) -> Router {
    Router::new()
        .route("/01/{*rest}", get(respond))
        .route("/gtin/{*rest}", get(respond))
        .with_state(responder)
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Answer {
    verification_timestamp: String,
    #[serde(rename = "responderGLN")]
    responder_gln: String,
    #[serde(rename = "corrUUID")]
    corr_uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Data {
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_failure_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_info: Option<&'static str>,
}

/// The query parameters the responder reads (others are ignored).
#[derive(Default, Debug)]
struct Parameters {
    link_type: Option<String>,
    context: Option<String>,
    requester_gln: Option<String>,
    corr_uuid: Option<String>,
}

fn parameters(query: &str) -> Result<Parameters, String> {
    let mut found = Parameters::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "linkType" => &mut found.link_type,
            "context" => &mut found.context,
            "reqGLN" => &mut found.requester_gln,
            "corrUUID" => &mut found.corr_uuid,
            _ => continue,
        };
        let value = percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("{name}: not UTF-8 after percent-decoding"))?
            .into_owned();
        if slot.replace(value).is_some() {
            return Err(format!("{name}: given more than once"));
        }
    }
    Ok(found)
}

/// The metrics label of a verdict.
fn verdict_result(verdict: &verifier::Verdict) -> crate::telemetry::VerificationResult {
    use crate::telemetry::VerificationResult as R;
    if verdict.verified {
        R::Verified
    } else if !verdict.product_known || verdict.state == verifier::PackState::Unknown {
        R::Unknown
    } else {
        R::NotVerified
    }
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    let why = why.into();
    if status == StatusCode::BAD_REQUEST {
        crate::telemetry::handles().verified(crate::telemetry::VerificationResult::Malformed, 1);
    }
    let mut response = status.into_response();
    // Header values must be visible ASCII: replace anything else.
    let text: String = why
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(ERROR_HEADER, value);
    }
    response
}

async fn respond(State(responder): State<Responder>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(path_and_query) = uri.path_and_query() else {
        return refuse(StatusCode::BAD_REQUEST, "no path");
    };
    if path_and_query.as_str().len() > URI_LENGTH_MAX {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("URI longer than {URI_LENGTH_MAX} bytes"),
        );
    }
    let parameters = match parameters(uri.query().unwrap_or("")) {
        Ok(parameters) => parameters,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let connectivity = parameters.link_type.as_deref() == Some("checkConnectivity")
        || parameters.context.as_deref() == Some("checkConnectivity");
    match parameters.link_type.as_deref() {
        None | Some("verificationService") | Some("checkConnectivity") => {}
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "linkType: {other:?} is not served here (verificationService or checkConnectivity)"
                ),
            );
        }
    }
    let corr_uuid = match parameters.corr_uuid.as_deref() {
        None => return refuse(StatusCode::BAD_REQUEST, "corrUUID: required"),
        Some(text) => match verification::corr_uuid("corrUUID", text) {
            Ok(value) => value,
            Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
        },
    };
    let principal = match parameters.requester_gln.as_deref() {
        None => return refuse(StatusCode::BAD_REQUEST, "reqGLN: required"),
        Some(text) => {
            if let Err(why) = verification::gln("reqGLN", text) {
                return refuse(StatusCode::BAD_REQUEST, why);
            }
            match requester(&responder, &headers, text) {
                Ok(principal) => principal,
                Err(response) => return response,
            }
        }
    };
    if connectivity {
        // The connectivity check: the responder answers, no pack is looked up.
        return answer(&responder, corr_uuid, None);
    }
    if !responder.index.is_ready() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the status index is being rebuilt",
        );
    }
    let data = match gs1::parse_digital_link(path_and_query.as_str()) {
        Ok(data) => data,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let (Some(gtin), Some(serial)) = (data.gtin().cloned(), data.serial().cloned()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the path must carry a GTIN (01) and a serial (21)",
        );
    };
    let purpose = match parameters.context.as_deref() {
        Some("dscsaSaleableReturn") => Purpose::SaleableReturn,
        _ => Purpose::Verify,
    };
    if purpose == Purpose::SaleableReturn && (data.lot().is_none() || data.expiry().is_none()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a dscsaSaleableReturn request needs the lot (10) and the expiry (17 or exp)",
        );
    }
    if !principal.scope.covers_gtin(gtin.as_str()) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "GTIN {gtin} is outside the scope of token {:?}",
                principal.name
            ),
        );
    }
    if let Err(status) = responder.access.admit_verifications(&principal, 1) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, status.message());
    }
    let item = Item {
        gtin_value: verification::gtin_value(&gtin),
        gtin,
        serial,
        lot: data.lot().cloned(),
        expiry: data.expiry(),
        encoded: true,
    };
    let verdicts =
        verification::verify_parsed(&responder.index, &[&item], purpose, crate::convert::today());
    let Some(verdict) = verdicts.first() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "no verdict");
    };
    let result = verdict_result(verdict);
    crate::telemetry::handles().verified(result, 1);
    responder.access.observe_verifications(
        &principal,
        1,
        u64::from(result == crate::telemetry::VerificationResult::Unknown),
    );
    if !verdict.product_known {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("GTIN {} is not served here", item.gtin),
        );
    }
    let data = Data {
        verified: verdict.verified,
        verification_failure_reason: verdict.failure.map(|f| f.vrs_text()),
        additional_info: verdict.info.map(|i| i.vrs_text()),
    };
    answer(&responder, corr_uuid, Some(data))
}

fn answer(responder: &Responder, corr_uuid: String, data: Option<Data>) -> Response {
    let body = Answer {
        verification_timestamp: rfc3339_millis(crate::convert::now_micros()),
        responder_gln: responder.responder_gln.clone(),
        corr_uuid,
        data,
    };
    axum::Json(body).into_response()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for microseconds since the epoch.
pub(crate) fn rfc3339_millis(micros: u64) -> String {
    let seconds = micros / 1_000_000;
    let millis = (micros % 1_000_000) / 1000;
    let date = gs1::CalendarDate::from_days_since_epoch((seconds / 86_400) as i64)
        .unwrap_or(gs1::CalendarDate::UNIX_EPOCH);
    let in_day = seconds % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-21T07:30:05.123456Z
        assert_eq!(
            rfc3339_millis(1_795_246_205_123_456),
            "2026-11-21T07:30:05.123Z"
        );
    }

    #[test]
    fn parameters_are_decoded_and_unknown_ones_ignored() {
        let p = parameters("linkType=verificationService&context=dscsaSaleableReturn&reqGLN=0614141000005&corrUUID=a%2Db&17=271231&foo=bar").unwrap();
        assert_eq!(p.link_type.as_deref(), Some("verificationService"));
        assert_eq!(p.context.as_deref(), Some("dscsaSaleableReturn"));
        assert_eq!(p.requester_gln.as_deref(), Some("0614141000005"));
        assert_eq!(p.corr_uuid.as_deref(), Some("a-b"));
        assert!(
            parameters("corrUUID=a&corrUUID=b")
                .unwrap_err()
                .contains("more than once")
        );
    }

    proptest::proptest! {
        /// The query parser never panics, and a value percent-encoded by a
        /// client comes back as it was.
        #[test]
        fn query_parameters_round_trip_and_never_panic(
            raw in "[ -~]{0,200}",
            value in "\\PC{0,40}",
        ) {
            let _ = parameters(&raw);
            let encoded = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC);
            let parsed = parameters(&format!("reqGLN=x&corrUUID={encoded}&other=1")).unwrap();
            proptest::prop_assert_eq!(parsed.corr_uuid.as_deref(), Some(value.as_str()));
        }

        /// Any path and query on the responder's routes is answered with a
        /// status (never a panic); only 200 carries a body.
        #[test]
        fn any_request_uri_is_answered_without_panicking(
            path in "(/01/|/gtin/)[ -~]{0,120}",
            query in "[ -~]{0,80}",
        ) {
            let index = Arc::new(StatusIndex::new(1).unwrap());
            index.set_ready();
            let (access, secret) = crate::access::tests::shared();
            let responder = Responder { index, responder_gln: String::new(), access };
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
            );
            let text = format!("{}?{}", path.replace(' ', "%20"), query.replace(' ', "+").replace('#', "%23"));
            let Ok(uri) = text.parse::<Uri>() else {
                return Ok(()); // not a URI at all: the HTTP layer refuses it first
            };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let response = runtime.block_on(respond(State(responder), headers, uri));
            let status = response.status();
            proptest::prop_assert!(
                [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND].contains(&status),
                "{status}"
            );
        }
    }
}
