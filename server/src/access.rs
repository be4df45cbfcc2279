//! Who may call what: API tokens, roles, scopes, the authentication layer in
//! front of every gRPC service, `AccessService`, and the per-principal
//! verification limits (rate and unknown-serial share).
//!
//! A token is a 256-bit random secret (`ssk_` + 64 hex digits). Only its
//! SHA-256 digest is stored (in the `access` column family, with the token's
//! name, role, scope and dates). The in-memory table is the authority for
//! every call and is changed only after the change is durable, so a revoked
//! token is refused from the next call on. Lookups go by the first 8 bytes
//! of the digest; the whole digest is then compared in constant time.
//!
//! Every change goes through one lock (the access family has one writer) and
//! is one RocksDB commit with its TOKEN_CREATED / TOKEN_REVOKED event.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use proto::serial::v1 as pb;
use proto::serial::v1::access_service_server::AccessService;
use sha2::{Digest, Sha256};
use storage::{ChangeSet, Family, Store, keys};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::convert::{self, invalid};
use crate::grpc::Api;

/// The file in the data directory that holds the bootstrap admin secret.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Name of the token the server makes on first start.
pub(crate) const BOOTSTRAP_NAME: &str = "admin";

/// Prefix of every secret (so a leaked one is recognisable in logs and scans).
const SECRET_PREFIX: &str = "ssk_";

/// Longest token name or id.
const NAME_LENGTH_MAX: usize = 64;

/// Entries per scope list.
pub(crate) const SCOPE_ENTRIES_MAX: usize = 64;

/// Tokens kept (revoked ones included): the table is in memory.
pub(crate) const TOKENS_MAX: usize = 100_000;

/// Stored record version.
const RECORD_VERSION: u8 = 1;

/// What a token may do (the numbering of `serial.v1.Role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Everything.
    Admin,
    /// A packaging line.
    Line,
    /// A verification router.
    Verifier,
    /// A returns processor.
    Returns,
}

impl Role {
    fn from_code(code: i32) -> Option<Role> {
        match pb::Role::try_from(code).ok()? {
            pb::Role::Admin => Some(Role::Admin),
            pb::Role::Line => Some(Role::Line),
            pb::Role::Verifier => Some(Role::Verifier),
            pb::Role::Returns => Some(Role::Returns),
            pb::Role::Unspecified => None,
        }
    }

    fn code(self) -> pb::Role {
        match self {
            Role::Admin => pb::Role::Admin,
            Role::Line => pb::Role::Line,
            Role::Verifier => pb::Role::Verifier,
            Role::Returns => pb::Role::Returns,
        }
    }

    /// The name used on the command line and in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Line => "line",
            Role::Verifier => "verifier",
            Role::Returns => "returns",
        }
    }
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// No token needed (health checking, reflection).
    Open,
    /// A token of one of these roles.
    Roles(&'static [Role]),
    /// An ADMIN token without scope: it sees every GTIN and every token.
    GlobalAdmin,
}

const ALL: &[Role] = &[Role::Admin, Role::Line, Role::Verifier, Role::Returns];
const ADMIN: &[Role] = &[Role::Admin];
const LINE: &[Role] = &[Role::Admin, Role::Line];
const VERIFY: &[Role] = &[Role::Admin, Role::Verifier, Role::Returns];
const CHANGE_STATUS: &[Role] = &[Role::Admin, Role::Line, Role::Returns];

/// The method → roles table (the service comments of the contract say the
/// same). An unknown method needs a valid token and is then answered
/// UNIMPLEMENTED by the router.
pub(crate) fn rule(path: &str) -> Rule {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Rule::Roles(ALL);
    };
    if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
        return Rule::Open;
    }
    match (service.strip_prefix("serial.v1.").unwrap_or(""), method) {
        ("ServerInfoService", _) => Rule::Roles(ALL),
        ("MasterDataService", "GetProduct" | "ListProducts" | "ListLots" | "GetGuessingRatios") => {
            Rule::Roles(ALL)
        }
        ("MasterDataService", _) => Rule::Roles(ADMIN),
        ("PoolService", _) => Rule::Roles(LINE),
        ("VerificationService", _) => Rule::Roles(VERIFY),
        ("StatusService", "Decommission" | "Undo") => Rule::Roles(CHANGE_STATUS),
        ("StatusService", _) => Rule::Roles(ADMIN),
        ("AggregationService", "GetHierarchy") => Rule::Roles(CHANGE_STATUS),
        ("AggregationService", _) => Rule::Roles(LINE),
        ("EventService" | "ReconciliationService" | "AccessService", _) => Rule::GlobalAdmin,
        _ => Rule::Roles(ALL),
    }
}

/// What a token may touch; every non-empty list must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    /// GS1 company prefixes (6–12 digits).
    pub(crate) company_prefixes: Vec<String>,
    /// GTIN-14s.
    pub(crate) gtins: Vec<String>,
    /// GLNs or site codes.
    pub(crate) locations: Vec<String>,
}

impl Scope {
    fn from_message(message: Option<&pb::TokenScope>) -> Result<Scope, Status> {
        let Some(message) = message else {
            return Ok(Scope::default());
        };
        let limit = |field: &str, list: &[String]| {
            if list.len() > SCOPE_ENTRIES_MAX {
                return Err(invalid(
                    field,
                    format!("{} entries; at most {SCOPE_ENTRIES_MAX}", list.len()),
                ));
            }
            Ok(())
        };
        limit("scope.company_prefixes", &message.company_prefixes)?;
        limit("scope.gtins", &message.gtins)?;
        limit("scope.locations", &message.locations)?;
        let mut scope = Scope::default();
        for (index, prefix) in message.company_prefixes.iter().enumerate() {
            if !(6..=12).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &format!("scope.company_prefixes[{index}]"),
                    format!("{prefix:?} is not a GS1 company prefix (6–12 digits)"),
                ));
            }
            scope.company_prefixes.push(prefix.clone());
        }
        for (index, gtin) in message.gtins.iter().enumerate() {
            let gtin = convert::gtin(&format!("scope.gtins[{index}]"), gtin)?;
            scope.gtins.push(gtin.as_str().to_owned());
        }
        for (index, location) in message.locations.iter().enumerate() {
            scope.locations.push(convert::identifier(
                &format!("scope.locations[{index}]"),
                location,
                true,
            )?);
        }
        Ok(scope)
    }

    fn message(&self) -> pb::TokenScope {
        pb::TokenScope {
            company_prefixes: self.company_prefixes.clone(),
            gtins: self.gtins.clone(),
            locations: self.locations.clone(),
        }
    }

    /// Whether the scope restricts anything.
    pub(crate) fn is_unrestricted(&self) -> bool {
        self.company_prefixes.is_empty() && self.gtins.is_empty() && self.locations.is_empty()
    }

    /// Whether the scope covers this GTIN-14.
    pub(crate) fn covers_gtin(&self, gtin14: &str) -> bool {
        (self.gtins.is_empty() || self.gtins.iter().any(|g| g == gtin14))
            && (self.company_prefixes.is_empty()
                || self.company_prefixes.iter().any(|p| {
                    gtin14
                        .get(1..)
                        .is_some_and(|rest| rest.starts_with(p.as_str()))
                }))
    }

    /// Whether the scope covers this SSCC (18 digits): by company prefix
    /// only, since a GTIN says nothing about the SSCCs of its company.
    pub(crate) fn covers_sscc(&self, sscc: &str) -> bool {
        self.company_prefixes.is_empty()
            || self.company_prefixes.iter().any(|p| {
                sscc.get(1..)
                    .is_some_and(|rest| rest.starts_with(p.as_str()))
            })
    }

    /// Whether the scope covers a company prefix asked for (SSCC pools).
    pub(crate) fn covers_company_prefix(&self, prefix: &str) -> bool {
        self.company_prefixes.is_empty()
            || self
                .company_prefixes
                .iter()
                .any(|p| prefix.starts_with(p.as_str()))
    }

    /// Whether the scope covers this location; an empty location is covered
    /// only when the scope names none.
    pub(crate) fn covers_location(&self, location: &str) -> bool {
        self.locations.is_empty() || self.locations.iter().any(|l| l == location)
    }
}

/// The caller of a request: its token, as the authentication layer found it.
#[derive(Debug)]
pub(crate) struct Principal {
    number: u64,
    /// Token id.
    pub(crate) token_id: String,
    /// Token name: the principal recorded in events and compared by undo.
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// Scope.
    pub(crate) scope: Scope,
    /// Expiry, µs since the epoch (0 = never).
    expires_micros: u64,
    /// Its verification counters (one lock per principal, none shared).
    guard: Mutex<Guard>,
}

impl Principal {
    fn denied(&self, what: impl std::fmt::Display) -> Status {
        Status::permission_denied(format!(
            "{what} is outside the scope of token {:?}",
            self.name
        ))
    }

    /// PERMISSION_DENIED unless the scope covers the GTIN-14.
    pub(crate) fn check_gtin(&self, field: &str, gtin14: &str) -> Result<(), Status> {
        if self.scope.covers_gtin(gtin14) {
            Ok(())
        } else {
            Err(self.denied(format_args!("{field}: GTIN {gtin14}")))
        }
    }

    /// PERMISSION_DENIED unless the scope covers the location.
    pub(crate) fn check_location(&self, field: &str, location: &str) -> Result<(), Status> {
        if self.scope.covers_location(location) {
            Ok(())
        } else if location.is_empty() {
            Err(Status::permission_denied(format!(
                "{field}: required by the location scope of token {:?}",
                self.name
            )))
        } else {
            Err(self.denied(format_args!("{field}: location {location:?}")))
        }
    }

    /// PERMISSION_DENIED unless the scope covers the SSCC.
    pub(crate) fn check_sscc(&self, field: &str, sscc: &str) -> Result<(), Status> {
        if self.scope.covers_sscc(sscc) {
            Ok(())
        } else {
            Err(self.denied(format_args!("{field}: SSCC {sscc}")))
        }
    }

    /// PERMISSION_DENIED unless the scope covers the company prefix.
    pub(crate) fn check_company_prefix(&self, field: &str, prefix: &str) -> Result<(), Status> {
        if self.scope.covers_company_prefix(prefix) {
            Ok(())
        } else {
            Err(self.denied(format_args!("{field}: company prefix {prefix}")))
        }
    }

    /// The violation of an item outside the scope, for per-item answers.
    pub(crate) fn item_violation(&self, field: &str, gtin14: &str) -> pb::FieldViolation {
        convert::violation(
            field,
            pb::ValidationRule::Unspecified,
            format!(
                "GTIN {gtin14} is outside the scope of token {:?}",
                self.name
            ),
        )
    }
}

/// The principal the authentication layer attached to a request.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no principal: the call carried no valid token"))
}

/// One stored token (the `access` family's value, prost-encoded inside the
/// storage envelope).
#[derive(Clone, PartialEq, prost::Message)]
struct TokenRecord {
    /// SHA-256 of the secret.
    #[prost(bytes = "vec", tag = "1")]
    secret_sha256: Vec<u8>,
    /// The token as listed.
    #[prost(message, optional, tag = "2")]
    info: Option<pb::TokenInfo>,
    /// Why it was revoked.
    #[prost(string, tag = "3")]
    revoke_reason: String,
}

/// A stored CreateToken / RevokeToken answer, for retries of its request id.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestRecord {
    /// Hash of the request's parameters.
    #[prost(fixed64, tag = "1")]
    parameters: u64,
    /// The token the request made or revoked.
    #[prost(uint64, tag = "2")]
    token: u64,
    /// RevokeToken: it was already revoked.
    #[prost(bool, tag = "3")]
    already_revoked: bool,
}

fn parameters_hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.digest()
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn lookup_key(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn new_secret() -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Status::unavailable(format!("no entropy for a token secret: {e}")))?;
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + 64);
    secret.push_str(SECRET_PREFIX);
    for byte in bytes {
        secret.push_str(&format!("{byte:02x}"));
    }
    Ok(secret)
}

fn token_id(number: u64) -> String {
    format!("tok-{number}")
}

fn token_number(field: &str, text: &str) -> Result<u64, Status> {
    text.strip_prefix("tok-")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| token_id(*n) == text)
        .ok_or_else(|| invalid(field, format!("{text:?} is not a token id (tok-<number>)")))
}

fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty()
        || name.len() > NAME_LENGTH_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "name",
            format!("{name:?} must be 1–{NAME_LENGTH_MAX} characters of [A-Za-z0-9._-]"),
        ));
    }
    Ok(())
}

/// Per-principal verification limits (`verify_rate_per_principal` and the
/// `enumeration_*` keys of the configuration).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifyLimits {
    /// Packs a principal may verify per second (0 = no limit); bursts up to
    /// one second's worth.
    pub rate_per_second: u32,
    /// Window over which the unknown-serial share is measured.
    pub window: Duration,
    /// Lookups in a window before the share is judged.
    pub min_lookups: u64,
    /// Share of unknown serials (percent) that counts as enumeration.
    pub unknown_percent: u8,
    /// How long a principal caught enumerating is refused (0 = not refused,
    /// only reported).
    pub block: Duration,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            rate_per_second: 0,
            window: Duration::from_secs(60),
            min_lookups: 1000,
            unknown_percent: 50,
            block: Duration::ZERO,
        }
    }
}

/// One principal's verification counters.
#[derive(Debug)]
struct Guard {
    /// Token bucket (may go below zero for a batch larger than the burst).
    allowance: f64,
    refilled: Instant,
    window_started: Instant,
    lookups: u64,
    unknown: u64,
    reported: bool,
    blocked_until: Option<Instant>,
}

impl Guard {
    fn new() -> Guard {
        let now = Instant::now();
        Guard {
            // Clamped to one second's worth at the first refill.
            allowance: f64::INFINITY,
            refilled: now,
            window_started: now,
            lookups: 0,
            unknown: 0,
            reported: false,
            blocked_until: None,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    tokens: BTreeMap<u64, TokenRecord>,
    principals: HashMap<u64, Arc<Principal>>,
    /// First 8 bytes of the digest → token number.
    by_digest: HashMap<u64, u64>,
}

impl Table {
    fn insert(&mut self, number: u64, record: TokenRecord) {
        let info = record.info.clone().unwrap_or_default();
        let revoked = info.revoked;
        if revoked {
            self.principals.remove(&number);
            self.by_digest.remove(&lookup_key(&record.secret_sha256));
        } else {
            let scope = info.scope.as_ref();
            let principal = Principal {
                number,
                token_id: info.token_id.clone(),
                name: info.name.clone(),
                role: Role::from_code(info.role).unwrap_or(Role::Verifier),
                scope: Scope {
                    company_prefixes: scope
                        .map(|s| s.company_prefixes.clone())
                        .unwrap_or_default(),
                    gtins: scope.map(|s| s.gtins.clone()).unwrap_or_default(),
                    locations: scope.map(|s| s.locations.clone()).unwrap_or_default(),
                },
                expires_micros: info.expires_at.as_ref().map_or(0, convert::micros_of),
                guard: Mutex::new(Guard::new()),
            };
            self.principals.insert(number, Arc::new(principal));
            self.by_digest
                .insert(lookup_key(&record.secret_sha256), number);
        }
        self.tokens.insert(number, record);
    }

    fn live_admins(&self, now: u64) -> usize {
        self.principals
            .values()
            .filter(|p| p.role == Role::Admin && (p.expires_micros == 0 || p.expires_micros > now))
            .count()
    }
}

/// The token table, its writer and the verification limits.
#[derive(Debug)]
pub(crate) struct AccessControl {
    store: Arc<Store>,
    table: RwLock<Table>,
    /// The access family's single writer.
    writer: Mutex<()>,
    limits: VerifyLimits,
}

/// Why a call was not let in.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No, unknown, expired or revoked token.
    Unauthenticated(String),
    /// The role does not cover the call.
    Denied(String),
}

impl Refusal {
    pub(crate) fn status(self) -> Status {
        match self {
            Refusal::Unauthenticated(why) => Status::unauthenticated(why),
            Refusal::Denied(why) => Status::permission_denied(why),
        }
    }
}

impl AccessControl {
    /// Loads every token; on a store without any, makes the bootstrap admin
    /// token and writes its secret to `<data_dir>/admin.token` (mode 0600)
    /// before the token is committed, so a crash between the two leaves a
    /// file whose token is simply made again on the next start.
    pub(crate) fn open(
        store: Arc<Store>,
        data_dir: &Path,
        limits: VerifyLimits,
    ) -> anyhow::Result<AccessControl> {
        let access = AccessControl {
            store,
            table: RwLock::new(Table::default()),
            writer: Mutex::new(()),
            limits,
        };
        let mut loaded = Vec::new();
        let mut failure = None;
        access.store.scan_prefix(
            Family::Access,
            &[Family::Access.prefix(), keys::access::TOKEN],
            &[Family::Access.prefix(), keys::access::TOKEN],
            |key, _version, payload| {
                match (keys::decode_token(key), TokenRecord::decode(payload)) {
                    (Some(number), Ok(record)) => loaded.push((number, record)),
                    (_, Err(error)) => {
                        failure = Some(format!("token key {key:02x?}: {error}"));
                        return false;
                    }
                    (None, _) => {
                        failure = Some(format!("malformed token key {key:02x?}"));
                        return false;
                    }
                }
                true
            },
        )?;
        if let Some(failure) = failure {
            anyhow::bail!("access family: {failure}");
        }
        {
            let mut table = access.table.write();
            for (number, record) in loaded {
                table.insert(number, record);
            }
        }
        if access.table.read().tokens.is_empty() {
            access.bootstrap(data_dir)?;
        }
        Ok(access)
    }

    fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let secret = new_secret().map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_secret_file(&path, &secret)
            .with_context(|| format!("write the bootstrap admin token to {}", path.display()))?;
        let now = convert::now_micros();
        let info = pb::TokenInfo {
            token_id: token_id(1),
            name: BOOTSTRAP_NAME.to_owned(),
            role: pb::Role::Admin as i32,
            scope: Some(pb::TokenScope::default()),
            created_at: Some(convert::timestamp(now)),
            expires_at: None,
            revoked: false,
            revoked_at: None,
            created_by: "bootstrap".to_owned(),
        };
        self.commit_token(1, &secret, info, BOOTSTRAP_NAME, None)
            .map_err(|s| anyhow::anyhow!("store the bootstrap admin token: {}", s.message()))?;
        tracing::info!(file = %path.display(), "made the bootstrap admin token (role admin, no scope)");
        Ok(())
    }

    /// Commits a new token and its event, then enters it in the table.
    fn commit_token(
        &self,
        number: u64,
        secret: &str,
        info: pb::TokenInfo,
        by: &str,
        request: Option<(Vec<u8>, RequestRecord)>,
    ) -> Result<(), Status> {
        let record = TokenRecord {
            secret_sha256: digest(secret).to_vec(),
            info: Some(info.clone()),
            revoke_reason: String::new(),
        };
        let mut change = ChangeSet::new();
        change.put(
            Family::Access,
            keys::token(number),
            storage::value::encode(RECORD_VERSION, &record.encode_to_vec()),
        );
        if let Some((key, answer)) = request {
            change.put(
                Family::Access,
                key,
                storage::value::encode(RECORD_VERSION, &answer.encode_to_vec()),
            );
        }
        change.event(issuer::events::encode_body(
            &issuer::events::EventHeader {
                kind: issuer::events::kind::TOKEN_CREATED,
                principal: by.to_owned(),
                token_id: info.token_id.clone(),
                reason_text: format!(
                    "{} ({})",
                    info.name,
                    Role::from_code(info.role).map_or("?", Role::name)
                ),
                ..Default::default()
            },
            [],
        ));
        self.store.commit(change).map_err(storage_status)?;
        self.table.write().insert(number, record);
        Ok(())
    }

    /// The principal of a bearer secret, or why there is none.
    pub(crate) fn authenticate(&self, secret: &str) -> Result<Arc<Principal>, Refusal> {
        let digest = digest(secret);
        let table = self.table.read();
        let principal = table
            .by_digest
            .get(&lookup_key(&digest))
            .and_then(|number| Some((table.tokens.get(number)?, table.principals.get(number)?)))
            .filter(|(record, _)| bool::from(record.secret_sha256.as_slice().ct_eq(&digest)))
            .map(|(_, principal)| Arc::clone(principal))
            .ok_or_else(|| Refusal::Unauthenticated("unknown or revoked token".to_owned()))?;
        if principal.expires_micros != 0 && principal.expires_micros <= convert::now_micros() {
            return Err(Refusal::Unauthenticated(format!(
                "token {:?} has expired",
                principal.name
            )));
        }
        Ok(principal)
    }

    /// Lets a call in or says why not: the token in `authorization`, then
    /// the method's rule. `Ok(None)` for open methods.
    pub(crate) fn admit(
        &self,
        path: &str,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Option<Arc<Principal>>, Refusal> {
        let rule = rule(path);
        if rule == Rule::Open {
            return Ok(None);
        }
        let secret = bearer(authorization)?;
        let principal = self.authenticate(secret)?;
        let allowed = match rule {
            Rule::Open => true,
            Rule::Roles(roles) => roles.contains(&principal.role),
            Rule::GlobalAdmin => principal.role == Role::Admin && principal.scope.is_unrestricted(),
        };
        if !allowed {
            let needs = match rule {
                Rule::GlobalAdmin => "an admin token without scope".to_owned(),
                Rule::Roles(roles) => roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                Rule::Open => String::new(),
            };
            return Err(Refusal::Denied(format!(
                "{path} needs {needs}; token {:?} has role {}{}",
                principal.name,
                principal.role.name(),
                if principal.scope.is_unrestricted() {
                    ""
                } else {
                    " with a scope"
                }
            )));
        }
        Ok(Some(principal))
    }

    /// Admits `count` verifications for the principal, or answers
    /// RESOURCE_EXHAUSTED (rate limit, or a block for enumeration).
    pub(crate) fn admit_verifications(
        &self,
        principal: &Principal,
        count: usize,
    ) -> Result<(), Status> {
        let limits = self.limits;
        if limits.rate_per_second == 0 && limits.block.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        let mut guard = principal.guard.lock();
        if let Some(until) = guard.blocked_until {
            if until > now {
                crate::telemetry::handles().verify_refused(&principal.name, "blocked");
                return Err(Status::resource_exhausted(format!(
                    "token {:?} is blocked from verifying for {} s more: too many lookups of unknown serials",
                    principal.name,
                    (until - now).as_secs() + 1
                )));
            }
            guard.blocked_until = None;
        }
        if limits.rate_per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(limits.rate_per_second);
        guard.allowance =
            (guard.allowance + now.duration_since(guard.refilled).as_secs_f64() * rate).min(rate);
        guard.refilled = now;
        let wanted = count as f64;
        if guard.allowance < wanted.min(rate) {
            crate::telemetry::handles().verify_refused(&principal.name, "rate");
            return Err(Status::resource_exhausted(format!(
                "token {:?} may verify {} packs per second (verify_rate_per_principal); retry later",
                principal.name, limits.rate_per_second
            )));
        }
        guard.allowance -= wanted;
        Ok(())
    }

    /// Counts answered lookups and the unknown serials among them; reports
    /// (and, if configured, blocks) a principal whose unknown share in the
    /// window reaches the threshold.
    pub(crate) fn observe_verifications(&self, principal: &Principal, lookups: u64, unknown: u64) {
        if lookups == 0 {
            return;
        }
        let limits = self.limits;
        let now = Instant::now();
        let mut guard = principal.guard.lock();
        if now.duration_since(guard.window_started) >= limits.window {
            guard.window_started = now;
            guard.lookups = 0;
            guard.unknown = 0;
            guard.reported = false;
        }
        guard.lookups += lookups;
        guard.unknown += unknown;
        let suspicious = guard.lookups >= limits.min_lookups
            && guard.unknown * 100 >= guard.lookups * u64::from(limits.unknown_percent);
        if suspicious && !guard.reported {
            guard.reported = true;
            crate::telemetry::handles().enumeration_suspected(&principal.name);
            let blocked = !limits.block.is_zero();
            if blocked {
                guard.blocked_until = Some(now + limits.block);
            }
            tracing::warn!(
                principal = %principal.name,
                token_id = %principal.token_id,
                lookups = guard.lookups,
                unknown = guard.unknown,
                window_seconds = limits.window.as_secs(),
                blocked_seconds = limits.block.as_secs(),
                "possible serial enumeration: a high share of lookups are of unknown serials"
            );
        }
    }

    fn snapshot(&self, number: u64) -> Option<TokenRecord> {
        self.table.read().tokens.get(&number).cloned()
    }

    fn create(
        &self,
        caller: &Principal,
        request: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        convert::identifier("request_id", &request.request_id, true)?;
        check_name(&request.name)?;
        let role = Role::from_code(request.role)
            .ok_or_else(|| invalid("role", "required: admin, line, verifier or returns"))?;
        let scope = Scope::from_message(request.scope.as_ref())?;
        let now = convert::now_micros();
        let expires = request.expires_at.as_ref().map(convert::micros_of);
        if let Some(expires) = expires
            && expires <= now
        {
            return Err(invalid("expires_at", "must be in the future"));
        }
        let scope_text = format!(
            "{}|{}|{}",
            scope.company_prefixes.join(","),
            scope.gtins.join(","),
            scope.locations.join(",")
        );
        let parameters = parameters_hash(&[
            request.name.as_bytes(),
            &[role.code() as u8],
            scope_text.as_bytes(),
            &expires.unwrap_or(0).to_be_bytes(),
        ]);
        let request_key = keys::access_request(
            keys::access::CREATE_REQUEST,
            caller.number,
            request.request_id.as_bytes(),
        );
        let _writer = self.writer.lock();
        if let Some(answer) = self.stored_request(&request_key)? {
            if answer.parameters != parameters {
                return Err(invalid(
                    "request_id",
                    "already used for a CreateToken with other parameters",
                ));
            }
            let record = self
                .snapshot(answer.token)
                .ok_or_else(|| Status::internal("a stored CreateToken answer names no token"))?;
            return Ok(pb::CreateTokenResponse {
                token_info: record.info,
                secret: String::new(),
                secret_withheld: true,
            });
        }
        let (number, taken) = {
            let table = self.table.read();
            if table.tokens.len() >= TOKENS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "{TOKENS_MAX} tokens exist; no more can be made"
                )));
            }
            let taken = table.principals.values().any(|p| p.name == request.name);
            (table.tokens.keys().next_back().map_or(1, |n| n + 1), taken)
        };
        if taken {
            return Err(Status::already_exists(format!(
                "name: an unrevoked token is already named {:?}",
                request.name
            )));
        }
        let secret = new_secret()?;
        let info = pb::TokenInfo {
            token_id: token_id(number),
            name: request.name.clone(),
            role: role.code() as i32,
            scope: Some(scope.message()),
            created_at: Some(convert::timestamp(now)),
            expires_at: request.expires_at,
            revoked: false,
            revoked_at: None,
            created_by: caller.name.clone(),
        };
        self.commit_token(
            number,
            &secret,
            info.clone(),
            &caller.name,
            Some((
                request_key,
                RequestRecord {
                    parameters,
                    token: number,
                    already_revoked: false,
                },
            )),
        )?;
        tracing::info!(token_id = %info.token_id, name = %info.name, role = role.name(), by = %caller.name, "token created");
        Ok(pb::CreateTokenResponse {
            token_info: Some(info),
            secret,
            secret_withheld: false,
        })
    }

    fn stored_request(&self, key: &[u8]) -> Result<Option<RequestRecord>, Status> {
        match self
            .store
            .get(Family::Access, key)
            .map_err(storage_status)?
        {
            None => Ok(None),
            Some((_, payload)) => RequestRecord::decode(payload.as_slice())
                .map(Some)
                .map_err(|e| Status::data_loss(format!("stored access request: {e}"))),
        }
    }

    fn revoke(
        &self,
        caller: &Principal,
        request: pb::RevokeTokenRequest,
    ) -> Result<pb::RevokeTokenResponse, Status> {
        convert::identifier("request_id", &request.request_id, true)?;
        let number = token_number("token_id", &request.token_id)?;
        let reason = crate::status::text("reason", &request.reason, false)?;
        let parameters = parameters_hash(&[request.token_id.as_bytes(), reason.as_bytes()]);
        let request_key = keys::access_request(
            keys::access::REVOKE_REQUEST,
            caller.number,
            request.request_id.as_bytes(),
        );
        let _writer = self.writer.lock();
        if let Some(answer) = self.stored_request(&request_key)? {
            if answer.parameters != parameters {
                return Err(invalid(
                    "request_id",
                    "already used for a RevokeToken with other parameters",
                ));
            }
            let record = self
                .snapshot(answer.token)
                .ok_or_else(|| Status::internal("a stored RevokeToken answer names no token"))?;
            return Ok(pb::RevokeTokenResponse {
                token_info: record.info,
                already_revoked: answer.already_revoked,
            });
        }
        let mut record = self
            .snapshot(number)
            .ok_or_else(|| Status::not_found(format!("token_id: no token {}", request.token_id)))?;
        let mut info = record.info.clone().unwrap_or_default();
        let already_revoked = info.revoked;
        let now = convert::now_micros();
        if !already_revoked && info.role == pb::Role::Admin as i32 {
            let table = self.table.read();
            let this_counts = table
                .principals
                .get(&number)
                .is_some_and(|p| p.expires_micros == 0 || p.expires_micros > now);
            if this_counts && table.live_admins(now) <= 1 {
                return Err(Status::failed_precondition(format!(
                    "token_id: {} is the last unrevoked admin token; create another admin token first",
                    request.token_id
                )));
            }
        }
        if already_revoked {
            // Nothing changes and nothing is stored: a retry finds it
            // revoked again (revocation is for good), the same answer.
            return Ok(pb::RevokeTokenResponse {
                token_info: Some(info),
                already_revoked,
            });
        }
        let mut change = ChangeSet::new();
        {
            info.revoked = true;
            info.revoked_at = Some(convert::timestamp(now));
            record.info = Some(info.clone());
            record.revoke_reason.clone_from(&reason);
            change.put(
                Family::Access,
                keys::token(number),
                storage::value::encode(RECORD_VERSION, &record.encode_to_vec()),
            );
            change.event(issuer::events::encode_body(
                &issuer::events::EventHeader {
                    kind: issuer::events::kind::TOKEN_REVOKED,
                    principal: caller.name.clone(),
                    request_id: request.request_id.clone(),
                    token_id: info.token_id.clone(),
                    reason_text: reason,
                    ..Default::default()
                },
                [],
            ));
        }
        change.put(
            Family::Access,
            request_key,
            storage::value::encode(
                RECORD_VERSION,
                &RequestRecord {
                    parameters,
                    token: number,
                    already_revoked,
                }
                .encode_to_vec(),
            ),
        );
        self.store.commit(change).map_err(storage_status)?;
        self.table.write().insert(number, record);
        tracing::info!(token_id = %info.token_id, name = %info.name, by = %caller.name, "token revoked");
        Ok(pb::RevokeTokenResponse {
            token_info: Some(info),
            already_revoked,
        })
    }

    fn list(&self, request: &pb::ListTokensRequest) -> Result<pb::ListTokensResponse, Status> {
        let after = if request.page_token.is_empty() {
            0
        } else {
            token_number("page_token", &request.page_token)?
        };
        let size = match request.page_size as usize {
            0 => 100,
            n => n.min(crate::master_data::PAGE_SIZE_MAX),
        };
        let table = self.table.read();
        let mut tokens = Vec::new();
        let mut next_page_token = String::new();
        for record in table.tokens.range(after + 1..).map(|(_, r)| r) {
            let Some(info) = &record.info else { continue };
            if info.revoked && !request.include_revoked {
                continue;
            }
            if tokens.len() == size {
                // Another token follows: the next page starts after the last one listed.
                next_page_token = tokens
                    .last()
                    .map(|last: &pb::TokenInfo| last.token_id.clone())
                    .unwrap_or_default();
                break;
            }
            tokens.push(info.clone());
        }
        Ok(pb::ListTokensResponse {
            tokens,
            next_page_token,
        })
    }
}

fn storage_status(error: storage::StorageError) -> Status {
    Status::unavailable(format!("storage: {error}"))
}

/// The secret of an `authorization: Bearer <secret>` header.
fn bearer(header: Option<&http::HeaderValue>) -> Result<&str, Refusal> {
    let header = header.ok_or_else(|| {
        Refusal::Unauthenticated(
            "no token: send the metadata `authorization: Bearer <token>`".to_owned(),
        )
    })?;
    let text = header
        .to_str()
        .map_err(|_| Refusal::Unauthenticated("authorization: not printable ASCII".to_owned()))?;
    let (scheme, secret) = text.split_once(' ').ok_or_else(|| {
        Refusal::Unauthenticated("authorization: expected `Bearer <token>`".to_owned())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
        return Err(Refusal::Unauthenticated(
            "authorization: expected `Bearer <token>`".to_owned(),
        ));
    }
    Ok(secret.trim())
}

/// Writes the secret to `path` with mode 0600, durably (temporary file,
/// fsync, rename, fsync of the directory).
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("token.tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

#[tonic::async_trait]
impl AccessService for Api {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = principal(&request)?;
        let access = Arc::clone(&self.access);
        let request = request.into_inner();
        tokio::task::spawn_blocking(move || access.create(&caller, request))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?
            .map(Response::new)
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        principal(&request)?;
        self.access.list(request.get_ref()).map(Response::new)
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = principal(&request)?;
        let access = Arc::clone(&self.access);
        let request = request.into_inner();
        tokio::task::spawn_blocking(move || access.revoke(&caller, request))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?
            .map(Response::new)
    }
}

/// The authentication layer: every gRPC call but health and reflection
/// needs a valid token whose role the method allows; the principal goes into
/// the request's extensions for the handlers' scope checks.
#[derive(Clone, Debug)]
pub(crate) struct AuthLayer {
    access: Arc<AccessControl>,
}

impl AuthLayer {
    pub(crate) fn new(access: Arc<AccessControl>) -> Self {
        AuthLayer { access }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            access: Arc::clone(&self.access),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Auth<S> {
    inner: S,
    access: Arc<AccessControl>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.access.admit(
            request.uri().path(),
            request.headers().get(http::header::AUTHORIZATION),
        ) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                AuthFuture::Inner {
                    future: self.inner.call(request),
                }
            }
            Err(refusal) => AuthFuture::Refused {
                response: Some(refusal.status().into_http()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call, or the refusal.
    #[project = AuthFutureProjection]
    pub(crate) enum AuthFuture<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<http::Response<tonic::body::Body>> },
    }
}

impl<F, E> std::future::Future for AuthFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = Result<http::Response<tonic::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProjection::Inner { future } => future.poll(cx),
            AuthFutureProjection::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One access table for the unit tests (a store in a temporary
    /// directory kept for the life of the test process) and its admin secret.
    pub(crate) fn shared() -> (Arc<AccessControl>, String) {
        static SHARED: std::sync::OnceLock<(Arc<AccessControl>, String)> =
            std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let directory = tempfile::tempdir().unwrap().keep();
                let store = Arc::new(issuer::open_store(&directory).unwrap());
                let access =
                    AccessControl::open(store, &directory, VerifyLimits::default()).unwrap();
                let secret = std::fs::read_to_string(directory.join(ADMIN_TOKEN_FILE)).unwrap();
                (Arc::new(access), secret.trim().to_owned())
            })
            .clone()
    }

    #[test]
    fn the_bootstrap_token_is_an_unscoped_admin_in_a_private_file() {
        let (access, secret) = shared();
        let principal = access.authenticate(&secret).unwrap();
        assert_eq!(
            (principal.role, principal.name.as_str()),
            (Role::Admin, BOOTSTRAP_NAME)
        );
        assert!(principal.scope.is_unrestricted());
        assert!(access.authenticate("ssk_00").is_err());
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        assert!(access.authenticate(&wrong).is_err());
    }

    #[test]
    fn the_method_table_matches_the_contract() {
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Rule::Open);
        assert_eq!(
            rule("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Rule::Open
        );
        assert_eq!(
            rule("/serial.v1.PoolService/RequestPool"),
            Rule::Roles(LINE)
        );
        assert_eq!(
            rule("/serial.v1.MasterDataService/AddLot"),
            Rule::Roles(ADMIN)
        );
        assert_eq!(
            rule("/serial.v1.MasterDataService/ListLots"),
            Rule::Roles(ALL)
        );
        assert_eq!(
            rule("/serial.v1.StatusService/Undo"),
            Rule::Roles(CHANGE_STATUS)
        );
        assert_eq!(
            rule("/serial.v1.StatusService/RecallLot"),
            Rule::Roles(ADMIN)
        );
        assert_eq!(
            rule("/serial.v1.AccessService/CreateToken"),
            Rule::GlobalAdmin
        );
        assert_eq!(
            rule("/serial.v1.VerificationService/Verify"),
            Rule::Roles(VERIFY)
        );
        // Every method of the contract has an entry that is not the fallback.
        let set =
            <prost_types::FileDescriptorSet as prost::Message>::decode(proto::FILE_DESCRIPTOR_SET)
                .unwrap();
        for file in set.file {
            for service in file.service {
                for method in service.method {
                    let path = format!(
                        "/{}.{}/{}",
                        file.package.as_deref().unwrap_or(""),
                        service.name.as_deref().unwrap_or(""),
                        method.name.as_deref().unwrap_or("")
                    );
                    assert_ne!(rule(&path), Rule::Open, "{path}");
                }
            }
        }
    }

    #[test]
    fn scopes_match_every_non_empty_list() {
        let scope = Scope {
            company_prefixes: vec!["4012345".into()],
            gtins: Vec::new(),
            locations: vec!["4012345000009".into()],
        };
        assert!(scope.covers_gtin("04012345123456"));
        assert!(!scope.covers_gtin("04099999123456"));
        assert!(scope.covers_sscc("340123450000000017"));
        assert!(!scope.covers_sscc("340999990000000017"));
        assert!(scope.covers_location("4012345000009"));
        assert!(!scope.covers_location(""));
        let gtins = Scope {
            gtins: vec!["04012345123456".into()],
            ..Scope::default()
        };
        assert!(gtins.covers_gtin("04012345123456"));
        assert!(!gtins.covers_gtin("04012345123463"));
        assert!(Scope::default().covers_gtin("x"));
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let value = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(Some(&value("Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer(Some(&value("bearer abc"))).unwrap(), "abc");
        assert!(bearer(None).is_err());
        assert!(bearer(Some(&value("Basic abc"))).is_err());
        assert!(bearer(Some(&value("Bearer "))).is_err());
        assert!(bearer(Some(&value("abc"))).is_err());
    }

    #[test]
    fn token_ids_round_trip() {
        assert_eq!(token_number("token_id", &token_id(42)).unwrap(), 42);
        for bad in [
            "",
            "tok-",
            "tok-01",
            "tok-x",
            "42",
            "tok-99999999999999999999",
        ] {
            assert!(token_number("token_id", bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn token_records_round_trip(
            digest in proptest::collection::vec(any::<u8>(), 32),
            name in "[A-Za-z0-9._-]{1,64}",
            role in 1i32..=4,
            revoked: bool,
            reason in "[ -~]{0,40}",
        ) {
            let record = TokenRecord {
                secret_sha256: digest,
                info: Some(pb::TokenInfo { name, role, revoked, ..Default::default() }),
                revoke_reason: reason,
            };
            prop_assert_eq!(TokenRecord::decode(record.encode_to_vec().as_slice()).unwrap(), record);
        }

        #[test]
        fn decoders_and_parsers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
            text in "\\PC{0,80}",
        ) {
            let _ = TokenRecord::decode(bytes.as_slice());
            let _ = RequestRecord::decode(bytes.as_slice());
            let _ = token_number("token_id", &text);
            let _ = rule(&text);
            if let Ok(value) = http::HeaderValue::from_str(&text) {
                let _ = bearer(Some(&value));
            }
        }
    }
}
