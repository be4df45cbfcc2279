//! The packaging-line and master-data commands of `serialctl`, end to end
//! through the real binaries: product and lot registration, pool requests
//! streamed to a file (and replayed), commissioning, returns, idempotent
//! re-runs and per-item rejections written to `FILE.rejected`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::Server;
use common::cli::{self, run, run_code, stderr, stdout};

/// A GTIN with a valid check digit, company prefix 9520123 (7 digits).
const GTIN: &str = "09520123456788";
/// The same GTIN with a wrong check digit.
const GTIN_BAD_CHECK_DIGIT: &str = "09520123456789";
/// The EU market profile, named as master_data.proto names it.
const PROFILE: &str = "EU_FMD";
const LOT: &str = "LOT-A1";
const EXPIRY: &str = "281231";

/// Runs and requires exit status 1 with a one-line `error: …` message;
/// returns that message.
fn run_error(server: &Server, args: &[&str]) -> String {
    let output = run(server, args);
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "serialctl {args:?} should fail\nstdout: {}\nstderr: {message}",
        stdout(&output)
    );
    let line = message
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in {message:?}"));
    line.to_owned()
}

fn add_product(server: &Server) {
    let output = cli::add_product(server, GTIN, PROFILE);
    let text = stdout(&output);
    assert!(text.contains(&format!("gtin: {GTIN}")), "{text}");
    // The profile's spelling in answers is the server's business (the
    // contract writes EU_FMD); compare it loosely.
    let profile = text
        .lines()
        .find_map(|line| line.strip_prefix("market profile: "))
        .unwrap_or_else(|| panic!("no market profile in {text}"));
    assert_eq!(
        profile.to_ascii_uppercase().replace('-', "_"),
        PROFILE,
        "{text}"
    );
}

fn add_lot(server: &Server) {
    let output = cli::add_lot(server, GTIN, LOT, EXPIRY);
    let text = stdout(&output);
    assert!(text.contains(&format!("lot: {LOT}")), "{text}");
    assert!(text.contains(&format!("expiry: {EXPIRY}")), "{text}");
}

/// Requests a pool into `out` and returns its serials.
fn request_pool(server: &Server, count: u64, request_id: &str, out: &Path) -> Vec<String> {
    let output = cli::request_pool(
        server,
        GTIN,
        count,
        request_id,
        out,
        &["--location", "SITE-1"],
    );
    let log = stderr(&output);
    assert!(log.contains(": OK: "), "header status missing: {log}");
    assert!(
        log.contains(&format!("granted {count}, written {count}")),
        "summary missing: {log}"
    );
    assert!(stdout(&output).is_empty(), "serials went to stdout too");
    cli::read_lines(out)
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn products_and_lots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));

    add_product(&server);
    // Adding the identical definition again is fine.
    add_product(&server);
    let error = run_error(
        &server,
        &[
            "product",
            "add",
            "--gtin",
            GTIN_BAD_CHECK_DIGIT,
            "--name",
            "Bad",
            "--company-prefix-length",
            "7",
            "--profile",
            PROFILE,
        ],
    );
    assert!(error.contains("gtin"), "field not named: {error}");
    assert!(error.contains("check digit"), "rule not named: {error}");

    let shown = run_code(&server, 0, &["product", "show", "--gtin", GTIN]);
    assert!(stdout(&shown).contains("name: Example 10 mg tablets"));
    let listed = run_code(&server, 0, &["product", "list", "--json"]);
    let products: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(products[0]["gtin"], GTIN, "{products}");

    add_lot(&server);
    add_lot(&server);
    let error = run_error(
        &server,
        &[
            "lot", "add", "--gtin", GTIN, "--lot", LOT, "--expiry", "291130",
        ],
    );
    assert!(
        error.contains(EXPIRY) && error.contains("291130"),
        "both expiries should be named: {error}"
    );
    let lots = run_code(&server, 0, &["lot", "list", "--gtin", GTIN, "--json"]);
    let lots: serde_json::Value = serde_json::from_str(&stdout(&lots)).unwrap();
    assert_eq!(lots[0]["lot"], LOT, "{lots}");
    assert_eq!(lots[0]["expiry"]["yymmdd"], EXPIRY, "{lots}");

    let ratios = run_code(&server, 0, &["ratios"]);
    let text = stdout(&ratios);
    assert!(text.starts_with("GTIN"), "{text}");
    assert!(text.contains(GTIN), "{text}");
}

#[test]
fn pool_commission_return() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    add_product(&server);
    add_lot(&server);

    // A pool of 2000 distinct, valid serials, streamed to a file.
    let pool_file = dir.path().join("pool.txt");
    let serials = request_pool(&server, 2000, "pool-test-1", &pool_file);
    assert_eq!(serials.len(), 2000);
    let distinct: HashSet<&String> = serials.iter().collect();
    assert_eq!(distinct.len(), 2000, "serials repeat");
    for serial in &serials {
        gs1::Serial::new(serial).unwrap_or_else(|e| panic!("invalid serial {serial:?}: {e}"));
    }

    // The same request id streams the same pool again.
    let replay_file = dir.path().join("replay.txt");
    request_pool(&server, 2000, "pool-test-1", &replay_file);
    assert_eq!(
        std::fs::read(&pool_file).unwrap(),
        std::fs::read(&replay_file).unwrap(),
        "a replay must give the identical file"
    );

    // Commission the first 1500 (in several groups), return the other 500.
    let applied = dir.path().join("applied.txt");
    write_lines(&applied, &serials[..1500]);
    let commission = [
        "commission",
        "--gtin",
        GTIN,
        "--lot",
        LOT,
        "--line",
        "LINE-1",
        "--location",
        "SITE-1",
        "--group-size",
        "400",
        applied.to_str().unwrap(),
    ];
    let first = run_code(&server, 0, &commission);
    let summary = stdout(&first);
    assert_eq!(
        summary,
        "commissioned: 1500\nalready commissioned: 0\nrejected: 0\n",
        "{}",
        stderr(&first)
    );
    assert!(!Path::new(&format!("{}.rejected", applied.display())).exists());

    let unused = dir.path().join("unused.txt");
    write_lines(&unused, &serials[1500..]);
    let returned = run_code(
        &server,
        0,
        &[
            "pool",
            "return",
            "--gtin",
            GTIN,
            "--line",
            "LINE-1",
            "--location",
            "SITE-1",
            unused.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&returned),
        "voided: 500\nalready voided: 0\nrejected: 0\n",
        "{}",
        stderr(&returned)
    );

    // Re-running the same command is idempotent: same summary, exit 0.
    let again = run_code(&server, 0, &commission);
    assert_eq!(stdout(&again), summary, "{}", stderr(&again));

    // Returned serials can never be commissioned.
    let voided = dir.path().join("voided.txt");
    write_lines(&voided, &serials[1500..1501]);
    let output = run(
        &server,
        &[
            "commission",
            "--gtin",
            GTIN,
            "--lot",
            LOT,
            voided.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let rejected = std::fs::read_to_string(format!("{}.rejected", voided.display())).unwrap();
    assert!(
        rejected.starts_with(&format!("{}\tVOIDED", serials[1500])),
        "{rejected}"
    );
}

#[test]
fn commission_rejects_malformed_and_unknown_items() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    add_product(&server);
    add_lot(&server);
    let serials = request_pool(&server, 20, "pool-test-2", &dir.path().join("pool.txt"));

    // A serial of the same shape that was never issued.
    let unknown = {
        let first = &serials[0];
        let last = first.chars().last().unwrap();
        let replacement = serials
            .iter()
            .flat_map(|serial| serial.chars())
            .find(|c| *c != last)
            .unwrap();
        let candidate = format!("{}{replacement}", &first[..first.len() - 1]);
        assert!(!serials.contains(&candidate));
        candidate
    };
    let malformed = "bad serial!";
    let scan = format!("(01){GTIN}(10){LOT}(21){}", serials[2]);
    let lines = vec![
        serials[0].clone(),
        String::new(),
        malformed.to_owned(),
        serials[1].clone(),
        unknown.clone(),
        scan,
        serials[3].clone(),
    ];
    let file = dir.path().join("scanned.txt");
    write_lines(&file, &lines);
    let output = run(
        &server,
        &[
            "commission",
            "--gtin",
            GTIN,
            "--lot",
            LOT,
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "commissioned: 4\nalready commissioned: 0\nrejected: 2\n  MALFORMED: 1\n  UNKNOWN_SERIAL: 1\n",
        "{}",
        stderr(&output)
    );
    let rejected = std::fs::read_to_string(format!("{}.rejected", file.display())).unwrap();
    let rejected: Vec<&str> = rejected.lines().collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .any(|line| line.starts_with(&format!("{malformed}\tMALFORMED (line 3)"))),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|line| line.starts_with(&format!("{unknown}\tUNKNOWN_SERIAL (line 5)"))),
        "{rejected:?}"
    );
}

#[test]
fn errors_are_one_line_with_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    // Pooling for a GTIN that is not registered.
    let error = run_error(
        &server,
        &[
            "pool",
            "request",
            "--gtin",
            GTIN,
            "--count",
            "10",
            "--line",
            "LINE-1",
            "--request-id",
            "pool-test-3",
            "--out",
            dir.path().join("never.txt").to_str().unwrap(),
        ],
    );
    assert!(error.contains("FAILED_PRECONDITION"), "{error}");
    // Nothing is written before the pool header arrives.
    assert!(!dir.path().join("never.txt").exists());
}
