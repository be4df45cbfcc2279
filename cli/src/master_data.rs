//! `serialctl product`, `serialctl lot` and `serialctl ratios`: master
//! data (MasterDataService) — register and list products and lots, and
//! report the EU guessing-rule figures per GTIN — plus the two irreversible
//! changes of a returns processor's admin (StatusService): recall a lot,
//! withdraw a product.

use std::process::ExitCode;

use anyhow::anyhow;
use proto::serial::v1::master_data_service_client::MasterDataServiceClient;
use proto::serial::v1::{
    AddLotRequest, AddProductRequest, GetGuessingRatiosRequest, GetProductRequest, GuessingRatio,
    ListLotsRequest, ListProductsRequest, Lot, LotStatus, Product, RecallLotRequest, SerialFormat,
    WithdrawProductRequest,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::Connection;
use crate::output::{Table, timestamp};
use crate::rpc::{self, AuthArgs};
use crate::status::{call_status, check_text};

/// Pages fetched by one listing before it stops, a bound against a server
/// that never ends a listing.
const PAGES_MAX: usize = 100_000;

/// Arguments of `serialctl product`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProductArgs {
    #[command(subcommand)]
    command: ProductCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ProductCommand {
    /// Register a product (GTIN) with its market profile; prints the stored product.
    Add(ProductAddArgs),
    /// List every registered product (all pages).
    List(ProductListArgs),
    /// Show one product.
    Show(ProductShowArgs),
    /// Withdraw a product (irreversible): every pack of every lot is reported withdrawn.
    Withdraw(ProductWithdrawArgs),
}

#[derive(Debug, clap::Args)]
struct ProductAddArgs {
    /// GTIN, 8, 12, 13 or 14 digits with a valid check digit.
    #[arg(long)]
    gtin: String,
    /// Product name, 1 to 200 characters.
    #[arg(long)]
    name: String,
    /// Length of the GS1 company prefix inside the GTIN, 6 to 12.
    #[arg(long, value_name = "L")]
    company_prefix_length: u32,
    /// Market profile: EU_FMD, US_DSCSA, RU_CHESTNY_ZNAK, BR_ANVISA, SA_RSD, RFID_SGTIN96 or CUSTOM
    /// (the server's list: GetServerInfo).
    #[arg(long, value_name = "P")]
    profile: String,
    /// CUSTOM profile only: the characters serials are drawn from (CSET 82, no repeats).
    #[arg(long, value_name = "A")]
    alphabet: Option<String>,
    /// CUSTOM profile only: the serial length, 1 to 20.
    #[arg(long, value_name = "N")]
    length: Option<u32>,
    /// US NDC, 10 digits (hyphens allowed); must be the NDC inside the GTIN.
    #[arg(long)]
    ndc: Option<String>,
    /// Override the profile's EU guessing-rule default for this GTIN.
    #[arg(long, value_enum, value_name = "on|off")]
    guessing_rule: Option<OnOff>,
    /// Idempotency key (1-64 printable ASCII); default: a fresh one.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the stored product as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, clap::Args)]
struct ProductListArgs {
    /// Only products of this market profile.
    #[arg(long, value_name = "P")]
    profile: Option<String>,
    /// Only products of this company prefix (digits).
    #[arg(long, value_name = "DIGITS")]
    company_prefix: Option<String>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ProductShowArgs {
    /// GTIN, 8, 12, 13 or 14 digits.
    #[arg(long)]
    gtin: String,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = IRREVERSIBLE_HELP)]
struct ProductWithdrawArgs {
    /// GTIN of a registered product.
    #[arg(long)]
    gtin: String,
    /// Why, 1 to 256 characters; recorded with the product and the event.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Idempotency key (1-64 printable ASCII). Default: derived from the GTIN and the reason.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the product and the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

const IRREVERSIBLE_HELP: &str = "\
Irreversible. Verification reports the packs recalled or withdrawn at once \
(VRS additionalInfo \"Recalled\"), and no decommission of them can be \
undone. Doing it \
again is harmless: the answer says it was already done. The default request \
id is derived from the arguments, so re-running the same command (after a \
lost answer, say) is answered with the stored result, changing nothing.";

/// Arguments of `serialctl lot`.
#[derive(Debug, clap::Args)]
pub(crate) struct LotArgs {
    #[command(subcommand)]
    command: LotCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LotCommand {
    /// Register a lot (batch) of a product with its expiry; prints the stored lot.
    Add(LotAddArgs),
    /// List lots (all pages), optionally of one GTIN.
    List(LotListArgs),
    /// Recall a lot (irreversible): every pack of it is reported recalled.
    Recall(LotRecallArgs),
}

#[derive(Debug, clap::Args)]
struct LotAddArgs {
    /// GTIN of a registered product.
    #[arg(long)]
    gtin: String,
    /// Lot, 1 to 20 characters of GS1 CSET 82.
    #[arg(long)]
    lot: String,
    /// Expiry as GS1 AI (17): YYMMDD, day 00 = end of the month.
    #[arg(long, value_name = "YYMMDD")]
    expiry: String,
    /// Idempotency key (1-64 printable ASCII); default: a fresh one.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the stored lot as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct LotListArgs {
    /// Only lots of this GTIN.
    #[arg(long)]
    gtin: Option<String>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = IRREVERSIBLE_HELP)]
struct LotRecallArgs {
    /// GTIN of a registered product.
    #[arg(long)]
    gtin: String,
    /// A registered lot of it.
    #[arg(long)]
    lot: String,
    /// Why, 1 to 256 characters; recorded with the lot and the event.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Idempotency key (1-64 printable ASCII). Default: derived from the GTIN, lot and reason.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the lot and the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `serialctl ratios`.
#[derive(Debug, clap::Args)]
pub(crate) struct RatiosArgs {
    /// Only these GTINs (repeatable); default: every product, all pages.
    #[arg(long)]
    gtin: Vec<String>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

type Client = MasterDataServiceClient<rpc::Channel>;

async fn client(connection: &Connection, auth: &AuthArgs) -> anyhow::Result<Client> {
    Ok(MasterDataServiceClient::new(
        rpc::connect(connection, auth).await?,
    ))
}

/// Runs `serialctl product …`.
pub(crate) async fn run_product(
    connection: Connection,
    args: ProductArgs,
) -> anyhow::Result<ExitCode> {
    match args.command {
        ProductCommand::Add(add) => product_add(&connection, &connection.auth, add).await,
        ProductCommand::List(list) => product_list(&connection, &connection.auth, list).await,
        ProductCommand::Show(show) => product_show(&connection, &connection.auth, show).await,
        ProductCommand::Withdraw(withdraw) => {
            product_withdraw(&connection, &connection.auth, withdraw).await
        }
    }
}

/// Runs `serialctl lot …`.
pub(crate) async fn run_lot(connection: Connection, args: LotArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LotCommand::Add(add) => lot_add(&connection, &connection.auth, add).await,
        LotCommand::List(list) => lot_list(&connection, &connection.auth, list).await,
        LotCommand::Recall(recall) => lot_recall(&connection, &connection.auth, recall).await,
    }
}

/// The request id given, checked, or one derived from `parts`.
fn request_id_or_derived(given: Option<&str>, tag: &str, parts: &[&str]) -> anyhow::Result<String> {
    match given {
        Some(_) => rpc::request_id_or_fresh(given),
        None => Ok(rpc::derived_request_id(tag, parts)),
    }
}

async fn product_withdraw(
    connection: &Connection,
    auth: &AuthArgs,
    args: ProductWithdrawArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    check_text("--reason", &args.reason, true)?;
    let request = WithdrawProductRequest {
        request_id: request_id_or_derived(
            args.request_id.as_deref(),
            "product-withdraw",
            &[gtin.as_str(), &args.reason],
        )?,
        gtin: gtin.as_str().to_owned(),
        reason: args.reason.clone(),
    };
    let response = call_status(
        connection,
        auth,
        "withdraw product",
        &request,
        |mut client, request| async move { client.withdraw_product(request).await },
    )
    .await?;
    let product = response
        .product
        .ok_or_else(|| anyhow!("withdraw product: the answer carries no product"))?;
    print_change(
        args.json,
        || product_json(&product),
        || print_product(&product, false),
        ("withdrawn", response.already_withdrawn),
        response.active_packs_affected,
        &request.request_id,
    );
    Ok(ExitCode::SUCCESS)
}

async fn lot_recall(
    connection: &Connection,
    auth: &AuthArgs,
    args: LotRecallArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    gs1::Lot::new(&args.lot).map_err(|error| anyhow!("--lot {:?}: lot: {error}", args.lot))?;
    check_text("--reason", &args.reason, true)?;
    let request = RecallLotRequest {
        request_id: request_id_or_derived(
            args.request_id.as_deref(),
            "lot-recall",
            &[gtin.as_str(), &args.lot, &args.reason],
        )?,
        gtin: gtin.as_str().to_owned(),
        lot: args.lot.clone(),
        reason: args.reason.clone(),
    };
    let response = call_status(
        connection,
        auth,
        "recall lot",
        &request,
        |mut client, request| async move { client.recall_lot(request).await },
    )
    .await?;
    let lot = response
        .lot
        .ok_or_else(|| anyhow!("recall lot: the answer carries no lot"))?;
    print_change(
        args.json,
        || lot_json(&lot),
        || print!("{}", lot_lines(&lot)),
        ("recalled", response.already_recalled),
        response.active_packs_affected,
        &request.request_id,
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the answer to a withdrawal or a recall: the record (`record_json`
/// with the fields below, or as `print_record` prints it), whether it was
/// already done (`already`: the past participle and the flag), and how many
/// active packs it affected.
fn print_change(
    json: bool,
    record_json: impl FnOnce() -> Value,
    print_record: impl FnOnce(),
    already: (&str, bool),
    active_packs_affected: u64,
    request_id: &str,
) {
    let (done, already) = already;
    if json {
        let mut value = record_json();
        value[format!("already_{done}")] = json!(already);
        value["active_packs_affected"] = json!(active_packs_affected);
        value["request_id"] = json!(request_id);
        println!("{value}");
    } else {
        print_record();
        println!("already {done}: {}", yes_no(already));
        println!("active packs affected: {active_packs_affected}");
    }
}

async fn product_add(
    connection: &Connection,
    auth: &AuthArgs,
    args: ProductAddArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    let custom_format = match (&args.alphabet, args.length) {
        (None, None) => None,
        (alphabet, length) => Some(SerialFormat {
            alphabet: alphabet.clone().unwrap_or_default(),
            length: length.unwrap_or(0),
        }),
    };
    let request = AddProductRequest {
        request_id: rpc::request_id_or_fresh(args.request_id.as_deref())?,
        gtin: gtin.as_str().to_owned(),
        name: args.name,
        company_prefix_length: args.company_prefix_length,
        market_profile: args.profile,
        custom_format,
        ndc: args.ndc,
        guessing_rule_enforced: args.guessing_rule.map(|rule| matches!(rule, OnOff::On)),
    };
    let client = client(connection, auth).await?;
    let response = rpc::call_with_retry("add product", || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.add_product(request).await }
    })
    .await?;
    let product = response
        .product
        .ok_or_else(|| anyhow!("add product: the answer carries no product"))?;
    print_product(&product, args.json);
    Ok(ExitCode::SUCCESS)
}

async fn product_show(
    connection: &Connection,
    auth: &AuthArgs,
    args: ProductShowArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    let client = client(connection, auth).await?;
    let request = GetProductRequest {
        gtin: gtin.as_str().to_owned(),
    };
    let response = rpc::call_with_retry("get product", || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.get_product(request).await }
    })
    .await?;
    let product = response
        .product
        .ok_or_else(|| anyhow!("get product: the answer carries no product"))?;
    print_product(&product, args.json);
    Ok(ExitCode::SUCCESS)
}

async fn product_list(
    connection: &Connection,
    auth: &AuthArgs,
    args: ProductListArgs,
) -> anyhow::Result<ExitCode> {
    let client = client(connection, auth).await?;
    let mut products = Vec::new();
    let mut page_token = String::new();
    for _ in 0..PAGES_MAX {
        let request = ListProductsRequest {
            page_size: 0,
            page_token: page_token.clone(),
            market_profile: args.profile.clone().unwrap_or_default(),
            company_prefix: args.company_prefix.clone().unwrap_or_default(),
        };
        let page = rpc::call_with_retry("list products", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.list_products(request).await }
        })
        .await?;
        products.extend(page.products);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.json {
        let array: Vec<Value> = products.iter().map(product_json).collect();
        println!("{}", Value::Array(array));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "GTIN",
        "NAME",
        "PROFILE",
        "FORMAT",
        "GUESSING RULE",
        "NDC",
        "WITHDRAWN",
    ]);
    for product in &products {
        table.push(vec![
            product.gtin.clone(),
            product.name.clone(),
            product.market_profile.clone(),
            format_text(product.serial_format.as_ref()),
            on_off(product.guessing_rule_enforced).to_owned(),
            product.ndc.clone().unwrap_or_else(|| "-".to_owned()),
            yes_no(product.withdrawn).to_owned(),
        ]);
    }
    print!("{}", table.render());
    eprintln!("{} products", products.len());
    Ok(ExitCode::SUCCESS)
}

async fn lot_add(
    connection: &Connection,
    auth: &AuthArgs,
    args: LotAddArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = rpc::parse_gtin("--gtin", &args.gtin)?;
    gs1::Lot::new(&args.lot).map_err(|error| anyhow!("--lot {:?}: lot: {error}", args.lot))?;
    gs1::Expiry::new(&args.expiry)
        .map_err(|error| anyhow!("--expiry {:?}: expiry: {error}", args.expiry))?;
    let request = AddLotRequest {
        request_id: rpc::request_id_or_fresh(args.request_id.as_deref())?,
        gtin: gtin.as_str().to_owned(),
        lot: args.lot.clone(),
        expiry: args.expiry.clone(),
    };
    let client = client(connection, auth).await?;
    let mut attempt = 0;
    let response = loop {
        let mut call = client.clone();
        match call.add_lot(request.clone()).await {
            Ok(response) => break response.into_inner(),
            Err(status) if status.code() == Code::AlreadyExists => {
                return Err(lot_conflict(&client, &request, &status).await);
            }
            Err(status) if rpc::is_retryable(&status, true) && attempt + 1 < rpc::ATTEMPTS_MAX => {
                let wait = rpc::backoff(attempt);
                attempt += 1;
                eprintln!(
                    "note: add lot: {}; retrying in {} ms (attempt {} of {})",
                    rpc::describe(&status),
                    wait.as_millis(),
                    attempt + 1,
                    rpc::ATTEMPTS_MAX
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(rpc::status_error("add lot", &status)),
        }
    };
    let lot = response
        .lot
        .ok_or_else(|| anyhow!("add lot: the answer carries no lot"))?;
    if args.json {
        println!("{}", lot_json(&lot));
    } else {
        print!("{}", lot_lines(&lot));
    }
    Ok(ExitCode::SUCCESS)
}

/// The error for a lot registered with another expiry, naming both values:
/// the stored expiry is looked up and added when the server's message
/// does not name both.
async fn lot_conflict(
    client: &Client,
    request: &AddLotRequest,
    status: &tonic::Status,
) -> anyhow::Error {
    let stored = find_lot(client, &request.gtin, &request.lot).await;
    match stored.as_ref().and_then(|lot| lot.expiry.as_ref()) {
        Some(expiry)
            if expiry.yymmdd != request.expiry
                && !(status.message().contains(&expiry.yymmdd)
                    && status.message().contains(&request.expiry)) =>
        {
            anyhow!(
                "add lot: ALREADY_EXISTS: lot {} of GTIN {} is registered with expiry {} ({}), not {} (server: {})",
                request.lot,
                request.gtin,
                expiry.yymmdd,
                expiry.iso_date,
                request.expiry,
                rpc::one_line(status.message())
            )
        }
        _ => rpc::status_error("add lot", status),
    }
}

/// The stored lot, if the listing can find it (best effort).
async fn find_lot(client: &Client, gtin: &str, lot: &str) -> Option<Lot> {
    let mut page_token = String::new();
    for _ in 0..PAGES_MAX {
        let mut call = client.clone();
        let page = call
            .list_lots(ListLotsRequest {
                page_size: 0,
                page_token: page_token.clone(),
                gtin: gtin.to_owned(),
                status: LotStatus::Unspecified.into(),
            })
            .await
            .ok()?
            .into_inner();
        if let Some(found) = page.lots.into_iter().find(|stored| stored.lot == lot) {
            return Some(found);
        }
        if page.next_page_token.is_empty() {
            return None;
        }
        page_token = page.next_page_token;
    }
    None
}

async fn lot_list(
    connection: &Connection,
    auth: &AuthArgs,
    args: LotListArgs,
) -> anyhow::Result<ExitCode> {
    let gtin = match &args.gtin {
        Some(text) => rpc::parse_gtin("--gtin", text)?.as_str().to_owned(),
        None => String::new(),
    };
    let client = client(connection, auth).await?;
    let mut lots = Vec::new();
    let mut page_token = String::new();
    for _ in 0..PAGES_MAX {
        let request = ListLotsRequest {
            page_size: 0,
            page_token: page_token.clone(),
            gtin: gtin.clone(),
            status: LotStatus::Unspecified.into(),
        };
        let page = rpc::call_with_retry("list lots", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.list_lots(request).await }
        })
        .await?;
        lots.extend(page.lots);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.json {
        let array: Vec<Value> = lots.iter().map(lot_json).collect();
        println!("{}", Value::Array(array));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["GTIN", "LOT", "EXPIRY", "DATE", "STATUS", "EXPIRED"]);
    for lot in &lots {
        let (yymmdd, iso) = expiry_parts(lot);
        table.push(vec![
            lot.gtin.clone(),
            lot.lot.clone(),
            yymmdd,
            iso,
            lot_status(lot).to_owned(),
            yes_no(lot.expired).to_owned(),
        ]);
    }
    print!("{}", table.render());
    eprintln!("{} lots", lots.len());
    Ok(ExitCode::SUCCESS)
}

/// Runs `serialctl ratios`.
pub(crate) async fn run_ratios(
    connection: Connection,
    args: RatiosArgs,
) -> anyhow::Result<ExitCode> {
    let gtins = args
        .gtin
        .iter()
        .map(|text| rpc::parse_gtin("--gtin", text).map(|gtin| gtin.as_str().to_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = client(&connection, &connection.auth).await?;
    let mut ratios = Vec::new();
    let mut page_token = String::new();
    for _ in 0..PAGES_MAX {
        let request = GetGuessingRatiosRequest {
            gtins: gtins.clone(),
            page_size: 0,
            page_token: page_token.clone(),
        };
        let page = rpc::call_with_retry("get guessing ratios", || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.get_guessing_ratios(request).await }
        })
        .await?;
        ratios.extend(page.ratios);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if args.json {
        let array: Vec<Value> = ratios.iter().map(ratio_json).collect();
        println!("{}", Value::Array(array));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "GTIN",
        "ISSUED",
        "SPACE",
        "RATIO",
        "LIMIT",
        "ENFORCED",
        "REMAINING",
    ]);
    for ratio in &ratios {
        table.push(vec![
            ratio.gtin.clone(),
            ratio.issued.to_string(),
            ratio.space_size.clone(),
            format!("{:.3e}", ratio.ratio),
            format!("{:.3e}", ratio.ratio_limit),
            yes_no(ratio.enforced).to_owned(),
            ratio.issuable_remaining.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

fn print_product(product: &Product, json: bool) {
    if json {
        println!("{}", product_json(product));
        return;
    }
    let mut lines = vec![
        ("gtin", product.gtin.clone()),
        ("name", product.name.clone()),
        ("company prefix", product.company_prefix.clone()),
        (
            "company prefix length",
            product.company_prefix_length.to_string(),
        ),
        ("market profile", product.market_profile.clone()),
        ("serial format", format_text(product.serial_format.as_ref())),
        ("ndc", product.ndc.clone().unwrap_or_else(|| "-".to_owned())),
        (
            "guessing rule",
            if product.guessing_rule_enforced {
                "enforced".to_owned()
            } else {
                "not enforced".to_owned()
            },
        ),
        (
            "created at",
            timestamp(product.created_at.as_ref().map(|t| t.seconds)),
        ),
        ("withdrawn", yes_no(product.withdrawn).to_owned()),
    ];
    if product.withdrawn {
        lines.push((
            "withdrawn at",
            timestamp(product.withdrawn_at.as_ref().map(|t| t.seconds)),
        ));
        lines.push(("withdrawal reason", or_dash(&product.withdrawal_reason)));
    }
    for (name, value) in lines {
        println!("{name}: {value}");
    }
}

fn lot_lines(lot: &Lot) -> String {
    let (yymmdd, iso) = expiry_parts(lot);
    let mut text = format!(
        "gtin: {}\nlot: {}\nexpiry: {yymmdd}\nexpiry date: {iso}\nstatus: {}\nexpired: {}\ncreated at: {}\n",
        lot.gtin,
        lot.lot,
        lot_status(lot),
        yes_no(lot.expired),
        timestamp(lot.created_at.as_ref().map(|t| t.seconds)),
    );
    if lot.status() == LotStatus::Recalled {
        text.push_str(&format!(
            "recalled at: {}\nrecall reason: {}\n",
            timestamp(lot.recalled_at.as_ref().map(|t| t.seconds)),
            or_dash(&lot.recall_reason)
        ));
    }
    text
}

fn product_json(product: &Product) -> Value {
    json!({
        "gtin": product.gtin,
        "name": product.name,
        "company_prefix_length": product.company_prefix_length,
        "company_prefix": product.company_prefix,
        "market_profile": product.market_profile,
        "serial_format": product.serial_format.as_ref().map(|format| json!({
            "alphabet": format.alphabet,
            "length": format.length,
        })),
        "ndc": product.ndc,
        "guessing_rule_enforced": product.guessing_rule_enforced,
        "created_at": product.created_at.as_ref().map(|t| timestamp(Some(t.seconds))),
        "withdrawn": product.withdrawn,
        "withdrawn_at": product.withdrawn_at.as_ref().map(|t| timestamp(Some(t.seconds))),
        "withdrawal_reason": product.withdrawal_reason,
    })
}

fn lot_json(lot: &Lot) -> Value {
    json!({
        "gtin": lot.gtin,
        "lot": lot.lot,
        "expiry": lot.expiry.as_ref().map(|expiry| json!({
            "yymmdd": expiry.yymmdd,
            "iso_date": expiry.iso_date,
        })),
        "status": lot_status(lot),
        "expired": lot.expired,
        "created_at": lot.created_at.as_ref().map(|t| timestamp(Some(t.seconds))),
        "recalled_at": lot.recalled_at.as_ref().map(|t| timestamp(Some(t.seconds))),
        "recall_reason": lot.recall_reason,
    })
}

fn ratio_json(ratio: &GuessingRatio) -> Value {
    json!({
        "gtin": ratio.gtin,
        "issued": ratio.issued,
        "space_size": ratio.space_size,
        "ratio": ratio.ratio,
        "ratio_limit": ratio.ratio_limit,
        "enforced": ratio.enforced,
        "issuable_remaining": ratio.issuable_remaining,
    })
}

/// `N chars of "ALPHABET"`.
pub(crate) fn format_text(format: Option<&SerialFormat>) -> String {
    match format {
        Some(format) => format!("{} chars of {:?}", format.length, format.alphabet),
        None => "-".to_owned(),
    }
}

fn expiry_parts(lot: &Lot) -> (String, String) {
    match &lot.expiry {
        Some(expiry) => (expiry.yymmdd.clone(), expiry.iso_date.clone()),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

fn lot_status(lot: &Lot) -> &'static str {
    match lot.status() {
        LotStatus::Active => "ACTIVE",
        LotStatus::Recalled => "RECALLED",
        LotStatus::Unspecified => "UNSPECIFIED",
    }
}

/// The text, or "-" when empty.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

pub(crate) fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}
