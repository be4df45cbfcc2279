//! What every network subcommand shares: the bearer token, the
//! authenticated channel, one-line gRPC error messages, request ids and the
//! retry policy for indeterminate outcomes.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use proto::serial::v1::server_info_service_client::ServerInfoServiceClient;
use proto::serial::v1::{GetServerInfoRequest, ServerLimits};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Status};
use xxhash_rust::xxh3::Xxh3Default;

use crate::Connection;

/// Attempts of one call (or consecutive attempts of a stream without
/// progress) before giving up on a retryable failure.
pub(crate) const ATTEMPTS_MAX: u32 = 5;

/// Consecutive failed attempts of a stream without progress before giving
/// up: with [`backoff`], about 16 s, time for a server to restart.
pub(crate) const STREAM_ATTEMPTS_MAX: u32 = 8;

/// Longest request id the API accepts (common.proto, Idempotency).
pub(crate) const REQUEST_ID_LENGTH_MAX: usize = 64;

/// Where `serialctl` looks for a token when neither `--token` nor
/// `--token-file` is given: the bootstrap admin token of a server started
/// from this directory with its default data directory (`scripts/serve`).
pub(crate) const DEFAULT_TOKEN_FILE: &str = "data/admin.token";

/// The API token, shared by every network subcommand.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AuthArgs {
    /// API token (made by `serialctl token create`), sent as `authorization: Bearer <token>`.
    #[arg(
        long,
        global = true,
        env = "SERIALCTL_TOKEN",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    token: Option<String>,
    /// File holding the API token (first line) [default: data/admin.token,
    /// the bootstrap admin token of a local server, when it exists].
    #[arg(
        long,
        global = true,
        env = "SERIALCTL_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "token"
    )]
    token_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    /// The token: `--token`, else `--token-file`, else [`DEFAULT_TOKEN_FILE`]
    /// if it exists, else none.
    fn secret(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let (path, required) = match &self.token_file {
            Some(path) => (path.clone(), true),
            None => (std::path::PathBuf::from(DEFAULT_TOKEN_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = text.lines().next().unwrap_or("").trim().to_owned();
                if secret.is_empty() {
                    anyhow::bail!("--token-file: {} holds no token", path.display());
                }
                Ok(Some(secret))
            }
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => {
                Err(error).with_context(|| format!("--token-file: cannot read {}", path.display()))
            }
        }
    }
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connected channel that authenticates every call.
pub(crate) type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// Connects to the server; every call on the channel carries the token.
pub(crate) async fn connect(connection: &Connection, auth: &AuthArgs) -> anyhow::Result<Channel> {
    let bearer = match auth.secret()? {
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| anyhow!("--token: must be printable ASCII"))?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(
        connection.channel().await?,
        Bearer(bearer),
    ))
}

/// The canonical name of a gRPC code, as the API documentation writes it.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `CODE: message` on one line.
pub(crate) fn describe(status: &Status) -> String {
    let message = one_line(status.message());
    if message.is_empty() {
        code_name(status.code()).to_owned()
    } else {
        format!("{}: {message}", code_name(status.code()))
    }
}

/// `action: CODE: message`, the one-line error of a failed call.
pub(crate) fn status_error(action: &str, status: &Status) -> anyhow::Error {
    anyhow!("{action}: {}", describe(status))
}

/// Collapses line breaks so an error stays one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a failure leaves the outcome indeterminate or transient, so the
/// same request (same request id) may be sent again. Every state-changing
/// call is idempotent by request id, so a retry never applies a change
/// twice. `overload_possible`: RESOURCE_EXHAUSTED means "server overloaded"
/// for this call (it can also mean "limit reached", which no retry fixes).
pub(crate) fn is_retryable(status: &Status, overload_possible: bool) -> bool {
    match status.code() {
        // UNKNOWN and INTERNAL are what tonic reports for a connection that
        // broke mid-call (transport or HTTP/2 errors).
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::Unknown
        | Code::Internal => true,
        Code::ResourceExhausted => overload_possible,
        _ => false,
    }
}

/// Wait before attempt `attempt + 1`: 250 ms doubling, at most 4 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(4)))
}

/// Runs a unary call, retrying retryable failures (see [`is_retryable`])
/// with backoff up to [`ATTEMPTS_MAX`] attempts. `call` must build the same
/// request (same request id) every time.
pub(crate) async fn call_with_retry<T, F, Fut>(action: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if is_retryable(&status, true) && attempt + 1 < ATTEMPTS_MAX => {
                let wait = backoff(attempt);
                attempt += 1;
                eprintln!(
                    "note: {action}: {}; retrying in {} ms (attempt {} of {ATTEMPTS_MAX})",
                    describe(&status),
                    wait.as_millis(),
                    attempt + 1
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(status_error(action, &status)),
        }
    }
}

/// A fresh request id: 128 random bits (the standard library's randomly
/// keyed hasher, mixed with the clock and the process id) in hex.
pub(crate) fn fresh_request_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mut words = [0u64; 2];
    for (index, word) in words.iter_mut().enumerate() {
        // Each RandomState has its own random keys.
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_usize(index);
        *word = hasher.finish();
    }
    format!("serialctl-{:016x}{:016x}", words[0], words[1])
}

/// Checks a client-chosen request id (or prefix) against the API's rule:
/// 1 to `length_max` printable ASCII characters (0x21–0x7E).
pub(crate) fn check_request_id(flag: &str, id: &str, length_max: usize) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > length_max {
        return Err(anyhow!(
            "{flag}: must be 1 to {length_max} characters, found {}",
            id.chars().count()
        ));
    }
    if let Some((position, found)) = id
        .char_indices()
        .find(|(_, c)| !matches!(c, '\x21'..='\x7e'))
    {
        return Err(anyhow!(
            "{flag}: character {found:?} at position {position} is not printable ASCII (0x21-0x7E)"
        ));
    }
    Ok(())
}

/// The request id given, checked, or a fresh one.
pub(crate) fn request_id_or_fresh(given: Option<&str>) -> anyhow::Result<String> {
    match given {
        Some(id) => {
            check_request_id("--request-id", id, REQUEST_ID_LENGTH_MAX)?;
            Ok(id.to_owned())
        }
        None => Ok(fresh_request_id()),
    }
}

/// A request id derived from what a request does: `TAG-<32 hex digits>`,
/// an XXH3-128 hash of `parts` joined by line feeds. The same parts give
/// the same id, so re-running a command is answered from the result the
/// server stored instead of being applied again. `tag` is at most 31
/// characters of printable ASCII, so the id stays within the API's 64.
pub(crate) fn derived_request_id(tag: &str, parts: &[&str]) -> String {
    let mut hasher = Xxh3Default::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update(b"\n");
        }
        hasher.update(part.as_bytes());
    }
    format!("{tag}-{:032x}", hasher.digest128())
}

/// The server's published limits (GetServerInfo); every limit it does not
/// publish reads 0.
pub(crate) async fn server_limits(channel: Channel) -> anyhow::Result<ServerLimits> {
    let client = ServerInfoServiceClient::new(channel);
    let info = call_with_retry("get server info", || {
        let mut client = client.clone();
        async move { client.get_server_info(GetServerInfoRequest {}).await }
    })
    .await?;
    Ok(info.limits.unwrap_or_default())
}

/// A GTIN argument, checked and normalised to 14 digits, or an error
/// naming the flag and the rule broken.
pub(crate) fn parse_gtin(flag: &str, text: &str) -> anyhow::Result<gs1::Gtin> {
    gs1::Gtin::new(text).map_err(|error| anyhow!("{flag} {text:?}: gtin: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_valid_and_distinct() {
        let first = fresh_request_id();
        let second = fresh_request_id();
        assert_ne!(first, second);
        for id in [first, second] {
            check_request_id("--request-id", &id, REQUEST_ID_LENGTH_MAX).unwrap();
        }
    }

    #[test]
    fn request_id_rules() {
        let check = |id: &str| check_request_id("--request-id", id, 8).is_ok();
        assert!(check("a"));
        assert!(check("!~abcdef"));
        assert!(!check(""));
        assert!(!check("abcdefghi"));
        assert!(!check("a b"));
        assert!(!check("é"));
    }

    #[test]
    fn derived_request_ids_depend_on_every_part() {
        let id = derived_request_id("lot-recall", &["09520123456788", "LOT1", "why"]);
        assert_eq!(
            id,
            derived_request_id("lot-recall", &["09520123456788", "LOT1", "why"])
        );
        assert_ne!(
            id,
            derived_request_id("lot-recall", &["09520123456788", "LOT1", "why not"])
        );
        assert_ne!(
            id,
            derived_request_id("lot-recall", &["09520123456788", "LOT1why"])
        );
        check_request_id("--request-id", &id, REQUEST_ID_LENGTH_MAX).unwrap();
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), Duration::from_secs(4));
    }
}
