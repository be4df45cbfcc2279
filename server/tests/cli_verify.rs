//! `serialctl verify` end to end through the real binaries: scans given as
//! arguments in every encoding, the answer lines (state, VRS answer, EU
//! alert, lot and expiry match), malformed items, `--json`, scan files of
//! several batches (and standard input) answered line by line in order,
//! the summary, and the exit statuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::cli::{
    add_lot, add_product, commission, read_lines, request_pool, run, run_code, run_stdin, stderr,
    stdout, unknown_serial,
};
use common::{Server, serialctl};

/// A GTIN with a valid check digit, company prefix 9520123 (7 digits).
const GTIN: &str = "09520123456788";
/// A valid GTIN that is not registered.
const GTIN_UNKNOWN: &str = "00012345600012";
const LOT: &str = "LOT-A1";
const EXPIRY: &str = "281231";
/// A second registered lot, which none of the packs belongs to.
const LOT_OTHER: &str = "LOT-B2";
const EXPIRY_OTHER: &str = "290630";

/// `serialctl verify ARGS…`: the exit status and the answer lines.
fn verify(server: &Server, args: &[&str]) -> (i32, Vec<String>) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let output = run(server, &all);
    let code = output.status.code().expect("exit status");
    assert!(
        code == 0 || code == 1,
        "serialctl {all:?} exited {code}\nstderr: {}",
        stderr(&output)
    );
    (code, stdout(&output).lines().map(str::to_owned).collect())
}

/// A product, two lots, a pool of 20 serials of which the first 10 are
/// commissioned into LOT; returns the pool.
fn setup(server: &Server, dir: &Path) -> Vec<String> {
    add_product(server, GTIN, "EU_FMD");
    for (lot, expiry) in [(LOT, EXPIRY), (LOT_OTHER, EXPIRY_OTHER)] {
        add_lot(server, GTIN, lot, expiry);
    }
    let pool = dir.join("pool.txt");
    request_pool(server, GTIN, 20, "verify-pool-1", &pool, &[]);
    let serials = read_lines(&pool);
    assert_eq!(serials.len(), 20);
    let output = commission(server, GTIN, LOT, &serials[..10], &dir.join("applied.txt"));
    assert!(stdout(&output).starts_with("commissioned: 10\n"));
    serials
}

fn bracketed(lot: Option<&str>, expiry: Option<&str>, serial: &str) -> String {
    let mut text = format!("(01){GTIN}");
    if let Some(expiry) = expiry {
        text.push_str(&format!("(17){expiry}"));
    }
    if let Some(lot) = lot {
        text.push_str(&format!("(10){lot}"));
    }
    text.push_str(&format!("(21){serial}"));
    text
}

#[test]
fn verify_answers_each_pack() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(&server, dir.path());
    let active = &serials[0];

    // A commissioned pack, with lot and expiry: verified.
    let full = bracketed(Some(LOT), Some(EXPIRY), active);
    let (code, lines) = verify(&server, &[&full]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        vec![format!(
            "{full}: verified: yes; state: active; lot: matched; expiry: matched"
        )]
    );

    // The same pack in every other encoding: one verified line each, in order.
    let encodings = [
        format!("https://id.gs1.org/01/{GTIN}/10/{LOT}/21/{active}?17={EXPIRY}"),
        format!("/gtin/{GTIN}/lot/{LOT}/ser/{active}?exp={EXPIRY}"),
        format!("]d201{GTIN}17{EXPIRY}10{LOT}<GS>21{active}"),
        format!("01{GTIN}21{active}\u{1d}10{LOT}"),
        format!("urn:epc:id:sgtin:9520123.045678.{active}"),
    ];
    let args: Vec<&str> = encodings.iter().map(String::as_str).collect();
    let (code, lines) = verify(&server, &args);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.len(), encodings.len(), "{lines:?}");
    for line in &lines {
        assert!(line.contains(&format!("(01){GTIN}")), "{line}");
        assert!(
            line.contains(&format!("(21){active}: verified: yes; state: active;")),
            "{line}"
        );
    }
    assert!(
        lines[0].contains("lot: matched; expiry: matched"),
        "{}",
        lines[0]
    );
    assert!(
        lines[4].contains("lot: not provided; expiry: not provided"),
        "{}",
        lines[4]
    );

    // An unknown serial.
    let unknown = bracketed(None, None, &unknown_serial(&serials));
    let (code, lines) = verify(&server, &[&unknown]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(
        lines,
        vec![format!(
            "{unknown}: verified: no (No_match_GTIN_Serial); state: unknown; alert: unknown serial; lot: not provided; expiry: not provided"
        )]
    );

    // Lot mismatches: a registered lot the pack is not in, an unregistered lot.
    let other_lot = bracketed(Some(LOT_OTHER), None, active);
    let unregistered_lot = bracketed(Some("NO-SUCH-LOT"), None, active);
    let wrong_expiry = bracketed(Some(LOT), Some(EXPIRY_OTHER), active);
    let (code, lines) = verify(&server, &[&other_lot, &unregistered_lot, &wrong_expiry]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(
        lines,
        vec![
            format!(
                "{other_lot}: verified: no (No_match_GTIN_Serial_Lot); state: active; alert: batch does not match serial; lot: mismatched; expiry: not provided"
            ),
            format!(
                "{unregistered_lot}: verified: no (No_match_GTIN_Serial_Lot); state: active; alert: unknown batch; lot: mismatched; expiry: not provided"
            ),
            format!(
                "{wrong_expiry}: verified: no (No_match_GTIN_Serial_Expiry); state: active; alert: expiry does not match batch; lot: matched; expiry: mismatched"
            ),
        ]
    );

    // Allocated in the pool, never commissioned: no pack carries it.
    let allocated = bracketed(Some(LOT), None, &serials[15]);
    let (code, lines) = verify(&server, &[&allocated]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(
        lines,
        vec![format!(
            "{allocated}: verified: no (No_match_GTIN_Serial); state: allocated; alert: unknown serial; lot: not checked; expiry: not provided"
        )]
    );

    // A malformed item names the field and rule; the others are answered.
    let bad_check_digit = format!("(01)09520123456789(21){active}");
    let unknown_product = format!("(01){GTIN_UNKNOWN}(21){active}");
    let (code, lines) = verify(&server, &[&full, &bad_check_digit, "", &unknown_product]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].ends_with(": verified: yes; state: active; lot: matched; expiry: matched"));
    assert!(
        lines[1].starts_with(&format!(
            "{bad_check_digit}: malformed: encoded: check digit: "
        )),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("expected 8, found 9"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("\"\": malformed: encoded: required: "),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        format!(
            "{unknown_product}: verified: no (No_match_GTIN_Serial); state: unknown; alert: unknown product; lot: not provided; expiry: not provided"
        )
    );

    // --json: one object per line, stable keys.
    let (code, lines) = verify(&server, &["--json", &full, &bad_check_digit, &other_lot]);
    assert_eq!(code, 1, "{lines:?}");
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(objects.len(), 3);
    let good = &objects[0];
    assert_eq!(good["input"], full.as_str());
    assert_eq!(good["line"], serde_json::Value::Null);
    assert_eq!(good["gtin"], GTIN);
    assert_eq!(good["serial"], active.as_str());
    assert_eq!(good["lot"], LOT);
    assert_eq!(good["expiry"], EXPIRY);
    assert_eq!(good["verified"], true);
    assert_eq!(good["verification_failure_reason"], serde_json::Value::Null);
    assert_eq!(good["product_known"], true);
    assert_eq!(good["state"], "active");
    assert_eq!(good["lot_match"], "matched");
    assert_eq!(good["expiry_match"], "matched");
    assert_eq!(good["recalled"], false);
    assert_eq!(good["error"], serde_json::Value::Null);
    let bad = &objects[1];
    assert_eq!(bad["verified"], false);
    assert_eq!(bad["state"], serde_json::Value::Null);
    assert_eq!(bad["error"]["field"], "encoded");
    assert_eq!(bad["error"]["rule"], "check_digit");
    let mismatch = &objects[2];
    assert_eq!(mismatch["verified"], false);
    assert_eq!(
        mismatch["verification_failure_reason"],
        "No_match_GTIN_Serial_Lot"
    );
    assert_eq!(mismatch["alert"], "batch_does_not_match_serial");
    assert_eq!(mismatch["lot_match"], "mismatched");
    let keys = |value: &serde_json::Value| value.as_object().unwrap().len();
    assert!(objects.iter().all(|object| keys(object) == keys(good)));
}

/// What a line of the scan file is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Verified,
    Unknown,
    Allocated,
    Malformed,
    UnknownProduct,
}

#[test]
fn verify_file_answers_every_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(&server, dir.path());

    // About 3000 scans (three batches and more), with blank lines and CRLF.
    let mut text = String::new();
    let mut expected: Vec<(u64, Kind, String)> = Vec::new();
    let mut line_number = 0;
    for i in 0..3000usize {
        let (kind, scan) = match i % 7 {
            0..=2 => (
                Kind::Verified,
                bracketed(Some(LOT), Some(EXPIRY), &serials[i % 10]),
            ),
            3 => (Kind::Unknown, bracketed(None, None, &format!("NOPE{i}"))),
            4 => (
                Kind::Allocated,
                bracketed(None, None, &serials[10 + i % 10]),
            ),
            5 => (Kind::Malformed, format!("(01){GTIN}(21)bad#{i}")),
            _ => (
                Kind::UnknownProduct,
                format!("https://id.gs1.org/01/{GTIN_UNKNOWN}/21/X{i}"),
            ),
        };
        line_number += 1;
        text.push_str(&scan);
        text.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
        expected.push((line_number, kind, scan));
        if i % 500 == 0 {
            line_number += 1;
            text.push_str(if i % 1000 == 0 { "\n" } else { "  \r\n" });
        }
    }
    let file = dir.path().join("scans.txt");
    std::fs::write(&file, &text).unwrap();
    let count = |kind: Kind| expected.iter().filter(|(_, k, _)| *k == kind).count();

    let output = run_code(&server, 1, &["verify", "--file", file.to_str().unwrap()]);
    let lines: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(lines.len(), expected.len(), "one answer per scan");
    for (line, (number, kind, scan)) in lines.iter().zip(&expected) {
        let prefix = format!("line {number}: ");
        assert!(line.starts_with(&prefix), "expected {prefix:?}: {line}");
        let answer = &line[prefix.len()..];
        let fits = match kind {
            Kind::Verified => answer.starts_with(&format!(
                "{scan}: verified: yes; state: active; lot: matched; expiry: matched"
            )),
            Kind::Unknown => answer.starts_with(&format!(
                "{scan}: verified: no (No_match_GTIN_Serial); state: unknown; alert: unknown serial;"
            )),
            Kind::Allocated => answer.starts_with(&format!(
                "{scan}: verified: no (No_match_GTIN_Serial); state: allocated;"
            )),
            Kind::Malformed => answer.starts_with(&format!("{scan}: malformed: encoded: charset: ")),
            Kind::UnknownProduct => answer.contains(
                ": verified: no (No_match_GTIN_Serial); state: unknown; alert: unknown product;",
            ),
        };
        assert!(fits, "line {number} ({kind:?}): {line}");
    }
    let not_verified = count(Kind::Unknown) + count(Kind::Allocated) + count(Kind::UnknownProduct);
    let summary = stderr(&output);
    let expected_summary = format!(
        "items: {}\nverified: {}\nnot verified: {not_verified}\n  No_match_GTIN_Serial: {not_verified}\nmalformed: {}\n  encoded: charset: {}\nEU alerts:\n  unknown product: {}\n  unknown serial: {}\n",
        expected.len(),
        count(Kind::Verified),
        count(Kind::Malformed),
        count(Kind::Malformed),
        count(Kind::UnknownProduct),
        count(Kind::Unknown) + count(Kind::Allocated),
    );
    assert!(
        summary.ends_with(&expected_summary),
        "summary:\n{summary}\nexpected:\n{expected_summary}"
    );

    // The same file on standard input, as JSON: the same answers.
    let json = run_stdin(
        &server,
        None,
        &[],
        &["verify", "--json", "--file", "-"],
        text.as_bytes(),
    );
    assert_eq!(json.status.code(), Some(1), "{}", stderr(&json));
    let objects: Vec<serde_json::Value> = std::str::from_utf8(&json.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(objects.len(), expected.len());
    for (object, (number, kind, scan)) in objects.iter().zip(&expected) {
        assert_eq!(object["line"], *number, "{object}");
        assert_eq!(object["input"], scan.as_str(), "{object}");
        assert_eq!(object["verified"], *kind == Kind::Verified, "{object}");
        assert_eq!(
            object["error"].is_null(),
            *kind != Kind::Malformed,
            "{object}"
        );
    }

    // A file where everything verifies exits 0.
    let good = dir.path().join("good.txt");
    let scans: Vec<String> = serials[..10]
        .iter()
        .map(|serial| bracketed(Some(LOT), None, serial))
        .collect();
    std::fs::write(&good, scans.join("\n")).unwrap();
    let output = run_code(&server, 0, &["verify", "--file", good.to_str().unwrap()]);
    assert_eq!(stdout(&output).lines().count(), 10);
    assert!(stderr(&output).contains("items: 10\nverified: 10\nnot verified: 0\nmalformed: 0\n"));
}

#[test]
fn usage_and_connection_errors_exit_2() {
    // Nothing listens on port 1.
    let output = serialctl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--timeout-seconds",
        "2",
        "verify",
        "(01)09520123456788(21)X",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with("error: cannot connect"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());

    let output = serialctl(&["verify"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let output = serialctl(&["verify", "--file", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("missing.txt"),
        "{}",
        stderr(&output)
    );

    let help = serialctl(&["verify", "--help"]);
    assert!(stdout(&help).contains("Exit status: 0 when every pack is verified"));
}
