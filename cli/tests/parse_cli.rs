//! `serialctl parse` run as a real process: every input form, the JSON
//! output, and the exit status and message on bad input.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn serialctl_parse(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_serialctl"));
    command
        .arg("parse")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// The `name: value` lines of a successful run.
fn fields(output: &Output) -> Vec<(String, String)> {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty());
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Runs `args` (and optional stdin) and checks that each expected field
/// is printed with that value.
fn check(args: &[&str], stdin: Option<&[u8]>, expected: &[(&str, &str)]) {
    let got = fields(&serialctl_parse(args, stdin));
    for (name, value) in expected {
        let found = got.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(
            found,
            Some(*value),
            "field {name:?} for {args:?}; got {got:?}"
        );
    }
}

/// Runs `args` and checks exit status 1 and the one-line message.
fn check_error(args: &[&str], stdin: Option<&[u8]>, expected: &str) {
    let output = serialctl_parse(args, stdin);
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    assert!(output.stdout.is_empty(), "{args:?}");
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        format!("{expected}\n")
    );
}

/// The fields of the sample pack, whatever form it came in.
fn pack_fields(form: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("input form", form),
        ("GTIN", "09520123456788"),
        ("lot", "ABC123"),
        ("serial", "XYZ"),
        ("expiry", "251231"),
        ("expiry date", "2025-12-31"),
        ("fits SGTIN-96", "no (needs SGTIN-198)"),
        (
            "element string",
            "]d201095201234567881725123110ABC123<GS>21XYZ",
        ),
        ("bracketed", "(01)09520123456788(17)251231(10)ABC123(21)XYZ"),
        (
            "Digital Link",
            "https://id.gs1.org/01/09520123456788/10/ABC123/21/XYZ?17=251231",
        ),
        (
            "legacy Digital Link",
            "https://id.gs1.org/gtin/09520123456788/lot/ABC123/ser/XYZ?exp=251231",
        ),
        ("EPC URI", "(give --company-prefix-length to see it)"),
    ]
}

#[test]
fn every_input_form() {
    let scanner_with_gs = "]d2010952012345678817251231\u{1d}10ABC123\u{1d}21XYZ";
    check(&[scanner_with_gs], None, &pack_fields("element string"));
    check(
        &["]d201095201234567881725123110ABC123<GS>21XYZ"],
        None,
        &pack_fields("element string"),
    );
    check(
        &["]d201095201234567881725123110ABC123\\x1d21XYZ"],
        None,
        &pack_fields("element string"),
    );
    check(
        &["]d201095201234567881725123110ABC123{GS}21XYZ"],
        None,
        &pack_fields("element string"),
    );
    check(
        &["(01)09520123456788(17)251231(10)ABC123(21)XYZ"],
        None,
        &pack_fields("bracketed"),
    );
    check(
        &["https://example.com/01/09520123456788/10/ABC123/21/XYZ?17=251231&linkType=all"],
        None,
        &pack_fields("Digital Link"),
    );
    check(
        &["https://vrs.example/gtin/09520123456788/lot/ABC123/ser/XYZ?exp=251231"],
        None,
        &pack_fields("legacy Digital Link"),
    );
}

#[test]
fn raw_bytes_from_stdin_lose_one_line_terminator() {
    let scan = b"]d201095201234567881725123110ABC123\x1d21XYZ";
    check(
        &["-"],
        Some(&[&scan[..], b"\r\n"].concat()),
        &pack_fields("element string"),
    );
    check(
        &["-"],
        Some(&[&scan[..], b"\n"].concat()),
        &pack_fields("element string"),
    );
    check(&["-"], Some(scan), &pack_fields("element string"));
    check_error(
        &["-"],
        Some(&[&scan[..], b"\n\n"].concat()),
        "error: at position 41: trailing CR/LF line terminator",
    );
}

#[test]
fn epc_uris_need_or_give_the_prefix_length() {
    check(
        &["urn:epc:id:sgtin:0614141.812345.6789"],
        None,
        &[
            ("input form", "EPC URI"),
            ("GTIN", "80614141123458"),
            ("serial", "6789"),
            ("fits SGTIN-96", "yes"),
            ("company prefix length", "7"),
            ("element string", "]d20180614141123458216789"),
            ("EPC URI", "urn:epc:id:sgtin:0614141.812345.6789"),
        ],
    );
    check(
        &["(00)106141412345678908", "--company-prefix-length", "7"],
        None,
        &[
            ("SSCC", "106141412345678908"),
            ("Digital Link", "https://id.gs1.org/00/106141412345678908"),
            ("EPC URI", "urn:epc:id:sscc:0614141.1234567890"),
        ],
    );
    check_error(
        &[
            "urn:epc:id:sgtin:0614141.812345.6789",
            "--company-prefix-length",
            "8",
        ],
        None,
        "error: --company-prefix-length 8 contradicts the EPC URI, whose company prefix has 7 digits",
    );
}

#[test]
fn other_ais_are_listed() {
    check(
        &["]d2010460123456789321abcDEF1234567<GS>91ee07<GS>92abc+/="],
        None,
        &[
            ("(91) crypto key", "ee07"),
            ("(92) crypto code", "abc+/="),
            (
                "Digital Link",
                "https://id.gs1.org/01/04601234567893/21/abcDEF1234567?91=ee07&92=abc%2B%2F%3D",
            ),
        ],
    );
}

#[test]
fn human_output_is_aligned() {
    let output = serialctl_parse(&["(01)09520123456788(21)XYZ"], None);
    let expected = "\
input form:          bracketed
GTIN:                09520123456788
serial:              XYZ
fits SGTIN-96:       no (needs SGTIN-198)
element string:      ]d2010952012345678821XYZ
bracketed:           (01)09520123456788(21)XYZ
Digital Link:        https://id.gs1.org/01/09520123456788/21/XYZ
legacy Digital Link: https://id.gs1.org/gtin/09520123456788/ser/XYZ
EPC URI:             (give --company-prefix-length to see it)
";
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
}

#[test]
fn json_is_one_object() {
    let output = serialctl_parse(
        &[
            "]d201095201234567881725120010ABC123<GS>21XYZ",
            "--json",
            "--company-prefix-length",
            "7",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let check = |pointer: &str, expected: serde_json::Value| {
        assert_eq!(
            json.pointer(pointer),
            Some(&expected),
            "{pointer} in {json}"
        );
    };
    check("/input_form", "element string".into());
    check("/gtin", "09520123456788".into());
    check("/lot", "ABC123".into());
    check("/serial", "XYZ".into());
    check("/serial_fits_sgtin96", false.into());
    check("/expiry", "251200".into());
    check("/expiry_date", "2025-12-31".into());
    check("/company_prefix_length", 7.into());
    check("/others", serde_json::json!([]));
    check(
        "/encodings/element_string",
        "]d201095201234567881725120010ABC123\u{1d}21XYZ".into(),
    );
    check(
        "/encodings/bracketed",
        "(01)09520123456788(17)251200(10)ABC123(21)XYZ".into(),
    );
    check(
        "/encodings/digital_link",
        "https://id.gs1.org/01/09520123456788/10/ABC123/21/XYZ?17=251200".into(),
    );
    check(
        "/encodings/epc_uri",
        "urn:epc:id:sgtin:9520123.045678.XYZ".into(),
    );
}

#[test]
fn bad_input_exits_1_with_the_rule() {
    check_error(
        &["]d20109520123456789"],
        None,
        "error: AI (01) at position 18: bad check digit: expected 8, found 9",
    );
    check_error(
        &["]d2010952012345678810ABC123<GS><GS>21XYZ"],
        None,
        "error: at position 31: two GS separators in a row",
    );
    check_error(
        &["(01)09520123456788(21)A B"],
        None,
        "error: AI (21) at position 23: space is not in CSET 82",
    );
    check_error(
        &["/01/09520123456788/21/XYZ/10/ABC"],
        None,
        "error: at position 26: qualifier 10 out of order: the order is 22, 10, 21, each at most once",
    );
    check_error(
        &["urn:epc:id:sgtin:0614141.812345.a/b", "--json"],
        None,
        "error: at position 33: bad percent escape: \" & / < > ? must be written as %XX",
    );
    check_error(&[""], None, "error: at position 0: no data");
}

#[test]
fn usage_errors_exit_2() {
    let check_usage = |args: &[&str]| {
        let output = serialctl_parse(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    };
    check_usage(&[]);
    check_usage(&["(01)09520123456788", "--company-prefix-length", "5"]);
    check_usage(&["(01)09520123456788", "--company-prefix-length", "13"]);
    check_usage(&["(01)09520123456788", "--bogus"]);
}
