//! `serialctl token`: API tokens (AccessService) — create one for a line, a
//! verification router or a returns desk, list them, revoke one. Needs an
//! admin token without scope (the bootstrap token in `data/admin.token`
//! is one).

use std::process::ExitCode;

use proto::serial::v1 as pb;
use proto::serial::v1::access_service_client::AccessServiceClient;
use serde_json::{Value, json};

use crate::Connection;
use crate::output::{Table, timestamp};
use crate::rpc;

/// Pages fetched by one listing before it stops.
const PAGES_MAX: usize = 10_000;

/// Arguments of `serialctl token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once, on standard output.
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    List(ListArgs),
    /// Revoke a token at once and for good.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Everything.
    Admin,
    /// Pools, commissioning, returns, aggregation, decommission and undo.
    Line,
    /// Verification only.
    Verifier,
    /// Verification, saleable returns, decommission, undo, hierarchy reads.
    Returns,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Role of the token.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Name, 1-64 characters of [A-Za-z0-9._-]: the principal recorded in
    /// the audit trail; unique among unrevoked tokens.
    #[arg(long)]
    name: String,
    /// Only these GS1 company prefixes (repeat or separate with commas).
    #[arg(
        long = "scope-company-prefix",
        value_name = "DIGITS",
        value_delimiter = ','
    )]
    company_prefixes: Vec<String>,
    /// Only these GTINs (repeat or separate with commas).
    #[arg(long = "scope-gtin", value_name = "GTIN", value_delimiter = ',')]
    gtins: Vec<String>,
    /// Only at these locations, GLNs or site codes (repeat or separate with
    /// commas); for a verification router, the requester GLNs it may ask for.
    #[arg(long = "scope-location", value_name = "GLN", value_delimiter = ',')]
    locations: Vec<String>,
    /// Seconds until the token stops working (default: never).
    #[arg(long, value_name = "SECONDS")]
    expires_in_seconds: Option<u64>,
    /// Idempotency key (1-64 printable ASCII); default: a fresh one.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Include revoked tokens.
    #[arg(long)]
    all: bool,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RevokeArgs {
    /// The token's id (`serialctl token list`).
    token_id: String,
    /// Why, 0-256 characters; recorded with the event.
    #[arg(long, default_value = "")]
    reason: String,
    /// Idempotency key (1-64 printable ASCII); default: derived from the token id.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
}

/// Runs `serialctl token …`.
pub(crate) async fn run(connection: Connection, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let mut client = AccessServiceClient::new(rpc::connect(&connection, &connection.auth).await?);
    match args.command {
        TokenCommand::Create(create) => {
            let role = match create.role {
                RoleArg::Admin => pb::Role::Admin,
                RoleArg::Line => pb::Role::Line,
                RoleArg::Verifier => pb::Role::Verifier,
                RoleArg::Returns => pb::Role::Returns,
            };
            let expires_at = create.expires_in_seconds.map(|seconds| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                prost_types::Timestamp {
                    seconds: i64::try_from(now.as_secs().saturating_add(seconds))
                        .unwrap_or(i64::MAX),
                    nanos: 0,
                }
            });
            let request = pb::CreateTokenRequest {
                request_id: rpc::request_id_or_fresh(create.request_id.as_deref())?,
                name: create.name,
                role: role as i32,
                scope: Some(pb::TokenScope {
                    company_prefixes: create.company_prefixes,
                    gtins: create.gtins,
                    locations: create.locations,
                }),
                expires_at,
            };
            let answer = client
                .create_token(request)
                .await
                .map_err(|status| rpc::status_error("create token", &status))?
                .into_inner();
            let info = answer.token_info.unwrap_or_default();
            if answer.secret_withheld {
                eprintln!(
                    "token {} ({}) was already made by this request id; its secret is shown only once: revoke it and create another if it was lost",
                    info.token_id, info.name
                );
                return Ok(ExitCode::from(1));
            }
            eprintln!(
                "created token {} named {} with role {}; the secret below is shown only this once",
                info.token_id,
                info.name,
                role_name(info.role)
            );
            println!("{}", answer.secret);
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(list) => {
            let mut tokens = Vec::new();
            let mut page_token = String::new();
            for _ in 0..PAGES_MAX {
                let page = client
                    .list_tokens(pb::ListTokensRequest {
                        page_size: 0,
                        page_token: page_token.clone(),
                        include_revoked: list.all,
                    })
                    .await
                    .map_err(|status| rpc::status_error("list tokens", &status))?
                    .into_inner();
                tokens.extend(page.tokens);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if list.json {
                let values: Vec<Value> = tokens.iter().map(token_json).collect();
                println!("{}", Value::Array(values));
            } else {
                let mut table = Table::new(&[
                    "TOKEN ID", "NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES", "REVOKED", "BY",
                ]);
                for token in &tokens {
                    table.push(vec![
                        token.token_id.clone(),
                        token.name.clone(),
                        role_name(token.role).to_owned(),
                        scope_text(token.scope.as_ref()),
                        timestamp(token.created_at.as_ref().map(|t| t.seconds)),
                        token
                            .expires_at
                            .as_ref()
                            .map_or_else(|| "never".to_owned(), |t| timestamp(Some(t.seconds))),
                        if token.revoked {
                            timestamp(token.revoked_at.as_ref().map(|t| t.seconds))
                        } else {
                            "no".to_owned()
                        },
                        token.created_by.clone(),
                    ]);
                }
                print!("{}", table.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(revoke) => {
            let request_id = match revoke.request_id.as_deref() {
                Some(given) => rpc::request_id_or_fresh(Some(given))?,
                None => {
                    rpc::derived_request_id("token-revoke", &[&revoke.token_id, &revoke.reason])
                }
            };
            let answer = client
                .revoke_token(pb::RevokeTokenRequest {
                    request_id,
                    token_id: revoke.token_id.clone(),
                    reason: revoke.reason,
                })
                .await
                .map_err(|status| rpc::status_error("revoke token", &status))?
                .into_inner();
            let info = answer.token_info.unwrap_or_default();
            if answer.already_revoked {
                println!(
                    "token {} ({}) was already revoked",
                    info.token_id, info.name
                );
            } else {
                println!("revoked token {} ({})", info.token_id, info.name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn role_name(code: i32) -> &'static str {
    match pb::Role::try_from(code) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Line) => "line",
        Ok(pb::Role::Verifier) => "verifier",
        Ok(pb::Role::Returns) => "returns",
        _ => "?",
    }
}

fn scope_text(scope: Option<&pb::TokenScope>) -> String {
    let Some(scope) = scope else {
        return "any".to_owned();
    };
    let mut parts = Vec::new();
    for (label, list) in [
        ("prefix", &scope.company_prefixes),
        ("gtin", &scope.gtins),
        ("location", &scope.locations),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label}={}", list.join(",")));
        }
    }
    if parts.is_empty() {
        "any".to_owned()
    } else {
        parts.join(" ")
    }
}

fn token_json(token: &pb::TokenInfo) -> Value {
    let scope = token.scope.clone().unwrap_or_default();
    json!({
        "token_id": token.token_id,
        "name": token.name,
        "role": role_name(token.role),
        "scope": {
            "company_prefixes": scope.company_prefixes,
            "gtins": scope.gtins,
            "locations": scope.locations,
        },
        "created_at": token.created_at.as_ref().map(|t| t.seconds),
        "expires_at": token.expires_at.as_ref().map(|t| t.seconds),
        "revoked": token.revoked,
        "revoked_at": token.revoked_at.as_ref().map(|t| t.seconds),
        "created_by": token.created_by,
    })
}
