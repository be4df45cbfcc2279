//! The returns processor's commands end to end through the real binaries:
//! `serialctl decommission` and `serialctl undo` on scan files (every line
//! answered, the summary by outcome, the refused file with reasons, re-runs
//! replaying the stored outcomes, standard input), EU Art. 13 undo rules,
//! `serialctl verify` seeing each state, `lot recall`, `product withdraw`
//! and `pack flag`, and the exit statuses.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;
use common::cli::{
    add_lot, add_product, commission, read_lines, request_pool, run, run_code, run_stdin, stderr,
    stdout, unknown_serial,
};

/// A GTIN with a valid check digit, company prefix 9520123 (7 digits).
const GTIN: &str = "09520123456788";
/// A second product, for the withdrawal.
const GTIN_OTHER: &str = "05012345678900";
const LOT: &str = "LOT-A1";
const EXPIRY: &str = "281231";
/// A second registered lot of GTIN.
const LOT_OTHER: &str = "LOT-B2";
const EXPIRY_OTHER: &str = "290630";
const SITE: &str = "SITE-1";

/// Registers `gtin` with lots and commissions `commissioned[i]` serials of
/// a fresh pool into `lots[i]`; returns the whole pool (the serials after
/// the commissioned ones stay allocated).
fn setup(
    server: &Server,
    dir: &Path,
    gtin: &str,
    lots: &[(&str, &str)],
    counts: &[usize],
) -> Vec<String> {
    add_product(server, gtin, "EU_FMD");
    for (lot, expiry) in lots {
        add_lot(server, gtin, lot, expiry);
    }
    let pool = dir.join(format!("pool-{gtin}.txt"));
    request_pool(server, gtin, 30, &format!("status-pool-{gtin}"), &pool, &[]);
    let serials = read_lines(&pool);
    assert_eq!(serials.len(), 30);
    let mut next = 0;
    for ((lot, _), count) in lots.iter().zip(counts) {
        let applied = dir.join(format!("applied-{gtin}-{lot}.txt"));
        commission(server, gtin, lot, &serials[next..next + count], &applied);
        next += count;
    }
    serials
}

fn bracketed(gtin: &str, lot: Option<&str>, serial: &str) -> String {
    match lot {
        Some(lot) => format!("(01){gtin}(10){lot}(21){serial}"),
        None => format!("(01){gtin}(21){serial}"),
    }
}

/// Writes `lines` (raw bytes, each ended by LF) to `path`.
fn write_lines(path: &Path, lines: &[&[u8]]) {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    std::fs::write(path, bytes).unwrap();
}

/// The lines of a refused file, sorted (their order follows the answers).
fn refused_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The `request ids P-0, …` prefix a bulk command announced on standard error.
fn request_id_prefix(output: &Output) -> String {
    let text = stderr(output);
    let line = text
        .lines()
        .find(|line| line.contains("request ids "))
        .unwrap_or_else(|| panic!("no request ids in {text:?}"));
    let ids = line.split("request ids ").nth(1).unwrap();
    ids.split("-0,").next().unwrap().to_owned()
}

/// `serialctl verify SCAN`: its one answer line.
fn verify_line(server: &Server, scan: &str) -> String {
    let output = run(server, &["verify", scan]);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        stderr(&output)
    );
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim_end().to_owned()
}

#[test]
fn decommission_file_answers_every_line_and_reruns_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(
        &server,
        dir.path(),
        GTIN,
        &[(LOT, EXPIRY), (LOT_OTHER, EXPIRY_OTHER)],
        &[20],
    );
    let unknown = unknown_serial(&serials);
    let allocated = &serials[25];

    let good = [
        bracketed(GTIN, Some(LOT), &serials[0]),
        format!("]d201{GTIN}17{EXPIRY}10{LOT}<GS>21{}", serials[1]),
        format!("https://id.gs1.org/01/{GTIN}/21/{}", serials[2]),
    ];
    let unknown_line = bracketed(GTIN, None, &unknown);
    let malformed = "(01)09520123456789(21)XYZ";
    let allocated_line = bracketed(GTIN, None, allocated);
    let mismatch = bracketed(GTIN, Some(LOT_OTHER), &serials[3]);
    let file = dir.path().join("returns.txt");
    write_lines(
        &file,
        &[
            good[0].as_bytes(),        // 1
            good[1].as_bytes(),        // 2
            good[2].as_bytes(),        // 3
            b"",                       // 4: blank, skipped
            unknown_line.as_bytes(),   // 5
            malformed.as_bytes(),      // 6: parsed (and refused) by the server
            good[0].as_bytes(),        // 7: a double scan
            allocated_line.as_bytes(), // 8
            mismatch.as_bytes(),       // 9
            b"(01)\xff\xfe",           // 10: not UTF-8, refused unsent
        ],
    );
    let decommission = [
        "decommission",
        "--reason",
        "dispensed",
        "--location",
        SITE,
        "--actor",
        "alice",
        "--group-size",
        "3",
        file.to_str().unwrap(),
    ];
    let first = run_code(&server, 1, &decommission);
    let summary = "decommissioned: 3\nalready set: 1\nrefused: 5\n  LOT_MISMATCH: 1\n  MALFORMED: 2\n  NOT_COMMISSIONED: 1\n  UNKNOWN_SERIAL: 1\n";
    assert_eq!(stdout(&first), summary, "{}", stderr(&first));
    assert!(
        stderr(&first).contains("5 refused items written to"),
        "{}",
        stderr(&first)
    );

    // Every refused line, with its line number, outcome and reason.
    let refused_file = dir.path().join("returns.txt.refused");
    let refused = refused_lines(&refused_file);
    assert_eq!(refused.len(), 5, "{refused:?}");
    let find = |prefix: &str| {
        refused
            .iter()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in {refused:?}"))
            .clone()
    };
    let line = find(&format!("{unknown_line}\tUNKNOWN_SERIAL (line 5): "));
    assert!(
        line.contains("state: unknown; EU alert: unknown serial"),
        "{line}"
    );
    let line = find(&format!("{malformed}\tMALFORMED (line 6): encoded: "));
    assert!(line.contains("check digit"), "{line}");
    let line = find(&format!("{allocated_line}\tNOT_COMMISSIONED (line 8): "));
    assert!(line.contains("state: allocated"), "{line}");
    let line = find(&format!("{mismatch}\tLOT_MISMATCH (line 9): "));
    assert!(
        line.contains("EU alert: batch does not match serial"),
        "{line}"
    );
    let line = find("(01)\u{fffd}\u{fffd}\tMALFORMED (line 10): encoded: not UTF-8 text");
    assert!(line.contains("(byte 4)"), "{line}");

    // verify sees the decommissioned packs, and the refused one still active.
    for scan in &good {
        let line = verify_line(&server, scan);
        assert!(
            line.contains("; state: decommissioned (dispensed);"),
            "{line}"
        );
    }
    let line = verify_line(&server, &bracketed(GTIN, None, &serials[3]));
    assert!(line.contains("; state: active;"), "{line}");

    // The same command again: the same request ids, the stored outcomes
    // (a fresh id would have said "already set" for every good line).
    let second = run_code(&server, 1, &decommission);
    assert_eq!(stdout(&second), summary, "{}", stderr(&second));
    assert_eq!(request_id_prefix(&second), request_id_prefix(&first));
    assert!(request_id_prefix(&first).starts_with("d-"));
    assert_eq!(refused_lines(&refused_file), refused);

    // --json changes only the form of the summary.
    let mut json_args = decommission.to_vec();
    json_args.insert(1, "--json");
    let third = run_code(&server, 1, &json_args);
    let value: serde_json::Value = serde_json::from_str(&stdout(&third)).unwrap();
    assert_eq!(value["accepted"], 3, "{value}");
    assert_eq!(value["already_done"], 1, "{value}");
    assert_eq!(value["refused"], 5, "{value}");
    assert_eq!(value["refused_by_reason"]["MALFORMED"], 2, "{value}");
    assert_eq!(value["refused_file"], refused_file.to_str().unwrap());
    assert_eq!(value["groups"], 3, "{value}");
    assert_eq!(
        value["request_id_prefix"],
        request_id_prefix(&first).as_str()
    );

    // Another reason for the same packs: already inactive, with the reason.
    let again = dir.path().join("again.txt");
    write_lines(&again, &[good[0].as_bytes()]);
    let output = run_code(
        &server,
        1,
        &[
            "decommission",
            "--reason",
            "destroyed",
            "--location",
            SITE,
            "--actor",
            "alice",
            again.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&output),
        "decommissioned: 0\nalready set: 0\nrefused: 1\n  ALREADY_INACTIVE: 1\n"
    );
    let lines = refused_lines(&dir.path().join("again.txt.refused"));
    assert_eq!(
        lines,
        vec![format!(
            "{}\tALREADY_INACTIVE (line 1): state: decommissioned (dispensed); EU alert: pack already inactive",
            good[0]
        )]
    );

    // A bare serial is no pack identifier (no GTIN): the server says so.
    let bare = dir.path().join("bare.txt");
    write_lines(&bare, &[serials[4].as_bytes()]);
    let output = run_code(
        &server,
        1,
        &[
            "decommission",
            "--reason",
            "dispensed",
            "--location",
            SITE,
            bare.to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&output).ends_with("refused: 1\n  MALFORMED: 1\n"),
        "{}",
        stdout(&output)
    );

    // A file with nothing refused: exit 0, and no refused file is left.
    let clean = dir.path().join("clean.txt");
    write_lines(
        &clean,
        &[
            good[1].as_bytes(),
            bracketed(GTIN, None, &serials[4]).as_bytes(),
        ],
    );
    std::fs::write(dir.path().join("clean.txt.refused"), "stale\n").unwrap();
    let output = run_code(
        &server,
        0,
        &[
            "decommission",
            "--reason",
            "dispensed",
            "--location",
            SITE,
            "--actor",
            "alice",
            clean.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&output),
        "decommissioned: 1\nalready set: 1\nrefused: 0\n"
    );
    assert!(!dir.path().join("clean.txt.refused").exists());
}

#[test]
fn undo_follows_the_eu_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(&server, dir.path(), GTIN, &[(LOT, EXPIRY)], &[10]);
    let packs: Vec<String> = serials[..3]
        .iter()
        .map(|serial| bracketed(GTIN, Some(LOT), serial))
        .collect();
    let file = dir.path().join("packs.txt");
    write_lines(&file, &[packs[0].as_bytes(), packs[1].as_bytes()]);
    run_code(
        &server,
        0,
        &[
            "decommission",
            "--reason",
            "checked-out",
            "--location",
            SITE,
            "--actor",
            "alice",
            "--note",
            "hospital order 77",
            file.to_str().unwrap(),
        ],
    );
    let destroyed = dir.path().join("destroyed.txt");
    write_lines(&destroyed, &[packs[2].as_bytes()]);
    run_code(
        &server,
        0,
        &[
            "decommission",
            "--reason",
            "destroyed",
            "--location",
            SITE,
            "--actor",
            "alice",
            destroyed.to_str().unwrap(),
        ],
    );

    // The party Art. 13 compares is the token's principal: "bob" is another
    // token; "alice" works with the admin token that decommissioned.
    let bob = run_code(
        &server,
        0,
        &["token", "create", "--role", "returns", "--name", "bob"],
    );
    let bob = stdout(&bob).trim().to_owned();
    let endpoint = server.endpoint();
    let undo = |actor: &str, location: &str, extra: &[&str], path: &Path, code: i32| {
        let mut args = vec!["undo", "--location", location, "--actor", actor];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        let output = if actor == "bob" {
            let mut all = vec!["--endpoint", endpoint.as_str(), "--token", bob.as_str()];
            all.extend_from_slice(&args);
            let output = common::serialctl(&all);
            assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
            output
        } else {
            run_code(&server, code, &args)
        };
        let refused = refused_path(path);
        let refused = if refused.exists() {
            refused_lines(&refused).join("\n")
        } else {
            String::new()
        };
        (stdout(&output), refused)
    };

    // Another principal at the same location: a different user, nothing changes.
    let (summary, refused) = undo("bob", SITE, &[], &file, 1);
    assert_eq!(
        summary,
        "reactivated: 0\nalready active: 0\nrefused: 2\n  DIFFERENT_USER: 2\n"
    );
    assert!(
        refused.contains(&format!(
            "{}\tDIFFERENT_USER (line 1): state: decommissioned (checked out); EU alert: undo by different user; decommissioned at: ",
            packs[0]
        )),
        "{refused}"
    );
    // The same actor at another location.
    let (summary, _) = undo("alice", "SITE-2", &[], &file, 1);
    assert_eq!(
        summary,
        "reactivated: 0\nalready active: 0\nrefused: 2\n  DIFFERENT_LOCATION: 2\n"
    );
    // Only packs of the expected reason.
    let (summary, _) = undo("alice", SITE, &["--expected-reason", "dispensed"], &file, 1);
    assert_eq!(
        summary,
        "reactivated: 0\nalready active: 0\nrefused: 2\n  REASON_MISMATCH: 2\n"
    );
    let line = verify_line(&server, &packs[0]);
    assert!(
        line.contains("; state: decommissioned (checked out);"),
        "{line}"
    );

    // The same party, the same location, within the window: active again.
    let first = run_code(
        &server,
        0,
        &[
            "undo",
            "--location",
            SITE,
            "--actor",
            "alice",
            "--expected-reason",
            "checked-out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&first),
        "reactivated: 2\nalready active: 0\nrefused: 0\n"
    );
    assert!(!refused_path(&file).exists());
    for pack in &packs[..2] {
        let line = verify_line(&server, pack);
        assert!(line.contains(": verified: yes; state: active;"), "{line}");
    }
    // Re-run: replayed, identical.
    let again = run_code(
        &server,
        0,
        &[
            "undo",
            "--location",
            SITE,
            "--actor",
            "alice",
            "--expected-reason",
            "checked-out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout(&again), stdout(&first));
    assert_eq!(request_id_prefix(&again), request_id_prefix(&first));
    // A new undo of active packs (another expected reason, so other ids):
    // already active.
    let (summary, _) = undo("alice", SITE, &[], &file, 0);
    assert_eq!(summary, "reactivated: 0\nalready active: 2\nrefused: 0\n");

    // Destroyed cannot be undone.
    let (summary, refused) = undo("alice", SITE, &[], &destroyed, 1);
    assert_eq!(
        summary,
        "reactivated: 0\nalready active: 0\nrefused: 1\n  NOT_UNDOABLE: 1\n"
    );
    assert!(refused.contains("EU alert: undo not allowed"), "{refused}");
}

fn refused_path(file: &Path) -> std::path::PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".refused");
    name.into()
}

#[test]
fn decommission_reads_standard_input_and_location_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(&server, dir.path(), GTIN, &[(LOT, EXPIRY)], &[10]);
    let unknown = bracketed(GTIN, None, &unknown_serial(&serials));
    let input = format!(
        "{}\r\n{}\n{unknown}\n",
        bracketed(GTIN, None, &serials[0]),
        bracketed(GTIN, Some(LOT), &serials[1])
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let output = run_stdin(
        &server,
        Some(&work),
        &[("SERIALCTL_LOCATION", SITE)],
        &["decommission", "--reason", "sample", "-"],
        input.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "decommissioned: 2\nalready set: 0\nrefused: 1\n  UNKNOWN_SERIAL: 1\n"
    );
    let refused = refused_lines(&work.join("decommission.refused"));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with(&format!("{unknown}\tUNKNOWN_SERIAL (line 3)")),
        "{refused:?}"
    );
    // The same input again replays; --refused puts the file elsewhere.
    let elsewhere = dir.path().join("elsewhere.txt");
    let again = run_stdin(
        &server,
        Some(&work),
        &[],
        &[
            "decommission",
            "--reason",
            "sample",
            "--location",
            SITE,
            "--refused",
            elsewhere.to_str().unwrap(),
            "-",
        ],
        input.as_bytes(),
    );
    assert_eq!(stdout(&again), stdout(&output), "{}", stderr(&again));
    assert_eq!(request_id_prefix(&again), request_id_prefix(&output));
    assert_eq!(refused_lines(&elsewhere), refused);
    let line = verify_line(&server, &bracketed(GTIN, None, &serials[0]));
    assert!(line.contains("; state: decommissioned (sample);"), "{line}");
}

/// Runs `args` (exit status 0) and requires the answer to hold each of
/// `lines` and to end with `ending`; then runs them again and requires the
/// same answer.
fn run_replayed(server: &Server, args: &[&str], lines: &[&str], ending: &str) {
    let first = run_code(server, 0, args);
    let text = stdout(&first);
    for line in lines {
        assert!(text.contains(line), "{text}");
    }
    assert!(text.ends_with(ending), "{text}");
    let again = run_code(server, 0, args);
    assert_eq!(stdout(&again), text);
}

/// Runs `args` (exit status 0) and parses the JSON answer.
fn run_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let output = run_code(server, 0, args);
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Runs `args` and requires exit status 1 with an error naming NOT_FOUND.
fn run_not_found(server: &Server, args: &[&str]) {
    let output = run_code(server, 1, args);
    assert!(stderr(&output).contains("NOT_FOUND"), "{}", stderr(&output));
}

#[test]
fn recall_withdraw_and_flag_print_their_results_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let serials = setup(
        &server,
        dir.path(),
        GTIN,
        &[(LOT, EXPIRY), (LOT_OTHER, EXPIRY_OTHER)],
        &[10, 5],
    );
    // Two packs of LOT decommissioned: 8 of its packs stay active.
    let file = dir.path().join("two.txt");
    let decommissioned = bracketed(GTIN, None, &serials[0]);
    write_lines(
        &file,
        &[
            decommissioned.as_bytes(),
            bracketed(GTIN, None, &serials[1]).as_bytes(),
        ],
    );
    run_code(
        &server,
        0,
        &[
            "decommission",
            "--reason",
            "locked",
            "--location",
            SITE,
            file.to_str().unwrap(),
        ],
    );

    let recall = [
        "lot",
        "recall",
        "--gtin",
        GTIN,
        "--lot",
        LOT,
        "--reason",
        "contamination, notice 2026-17",
    ];
    // A retry of the same command replays the stored answer.
    run_replayed(
        &server,
        &recall,
        &[&format!("lot: {LOT}\n"), "status: RECALLED\n"],
        "already recalled: no\nactive packs affected: 8\n",
    );
    // Recalling again for another reason changes nothing and says so.
    let value = run_json(
        &server,
        &[
            "lot", "recall", "--gtin", GTIN, "--lot", LOT, "--reason", "again", "--json",
        ],
    );
    assert_eq!(value["status"], "RECALLED", "{value}");
    assert_eq!(value["already_recalled"], true, "{value}");
    assert_eq!(value["active_packs_affected"], 0, "{value}");
    assert!(
        value["request_id"]
            .as_str()
            .unwrap()
            .starts_with("lot-recall-")
    );

    // Verification reports the recall; a decommission of the lot cannot be undone.
    let line = verify_line(&server, &bracketed(GTIN, None, &serials[2]));
    assert!(line.contains("; info: Recalled;"), "{line}");
    assert!(line.contains("flags: recalled"), "{line}");
    let output = run_code(
        &server,
        1,
        &["undo", "--location", SITE, file.to_str().unwrap()],
    );
    assert_eq!(
        stdout(&output),
        "reactivated: 0\nalready active: 0\nrefused: 2\n  RECALLED: 2\n"
    );
    // An unknown lot is an error naming the status.
    run_not_found(
        &server,
        &[
            "lot", "recall", "--gtin", GTIN, "--lot", "NO-SUCH", "--reason", "x",
        ],
    );

    // Withdrawal: every active pack of every lot (8 recalled + 5 others).
    let withdraw = [
        "product",
        "withdraw",
        "--gtin",
        GTIN,
        "--reason",
        "market exit",
    ];
    run_replayed(
        &server,
        &withdraw,
        &[&format!("gtin: {GTIN}\n"), "withdrawn: yes\n"],
        "already withdrawn: no\nactive packs affected: 13\n",
    );
    let value = run_json(
        &server,
        &[
            "product", "withdraw", "--gtin", GTIN, "--reason", "really", "--json",
        ],
    );
    assert_eq!(value["withdrawn"], true, "{value}");
    assert_eq!(value["already_withdrawn"], true, "{value}");
    assert_eq!(value["active_packs_affected"], 0, "{value}");
    let line = verify_line(&server, &bracketed(GTIN, None, &serials[12]));
    assert!(line.contains("flags: withdrawn"), "{line}");
    // A product not registered.
    run_not_found(
        &server,
        &["product", "withdraw", "--gtin", GTIN_OTHER, "--reason", "x"],
    );

    // Pack flags: set, repeat (unchanged), clear.
    let pack = bracketed(GTIN, None, &serials[3]);
    let output = run_code(
        &server,
        0,
        &["pack", "flag", "--suspect", "--reason", "case 9", &pack],
    );
    assert_eq!(
        stdout(&output),
        "state: active\nsuspect: yes\nillegitimate: no\nunchanged: no\n"
    );
    let line = verify_line(&server, &pack);
    assert!(line.contains("; info: Suspect;"), "{line}");
    assert!(line.ends_with(", suspect"), "{line}");
    let output = run_code(
        &server,
        0,
        &["pack", "flag", "--suspect", "--reason", "case 9", &pack],
    );
    assert!(
        stdout(&output).ends_with("unchanged: yes\n"),
        "{}",
        stdout(&output)
    );
    let value = run_json(
        &server,
        &[
            "pack",
            "flag",
            "--clear",
            "--reason",
            "case 9 closed",
            "--json",
            &pack,
        ],
    );
    assert_eq!(value["suspect"], false, "{value}");
    assert_eq!(value["unchanged"], false, "{value}");
    // Exactly one action.
    let output = run(
        &server,
        &[
            "pack",
            "flag",
            "--suspect",
            "--clear",
            "--reason",
            "x",
            &pack,
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn usage_and_connection_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scans.txt");
    std::fs::write(&file, format!("(01){GTIN}(21)ABC\n")).unwrap();
    let path = file.to_str().unwrap();
    let run_bare = |args: &[&str]| {
        let binary = Path::new(env!("CARGO_BIN_EXE_serialsvc")).with_file_name("serialctl");
        Command::new(&binary)
            .env_remove("SERIALCTL_LOCATION")
            .env_remove("SERIALCTL_ACTOR")
            .args(args)
            .output()
            .unwrap()
    };
    // Nothing listens on port 1.
    let output = run_bare(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--timeout-seconds",
        "2",
        "decommission",
        "--reason",
        "dispensed",
        "--location",
        SITE,
        path,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("error: cannot connect"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());
    // No location (nor SERIALCTL_LOCATION), an unknown reason.
    let output = run_bare(&["decommission", "--reason", "dispensed", path]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--location"),
        "{}",
        stderr(&output)
    );
    let output = run_bare(&["decommission", "--reason", "lost", "--location", SITE, path]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // A location outside CSET 82, checked before connecting.
    let output = run_bare(&[
        "undo",
        "--location",
        "SITE 1",
        "--endpoint",
        "http://127.0.0.1:1",
        path,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--location \"SITE 1\": character ' ' at position 4"),
        "{}",
        stderr(&output)
    );
    // A missing input file.
    let missing = dir.path().join("missing.txt");
    let output = run_bare(&[
        "undo",
        "--location",
        SITE,
        "--endpoint",
        "http://127.0.0.1:1",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("missing.txt"),
        "{}",
        stderr(&output)
    );

    let help = stdout(&run_bare(&["decommission", "--help"]));
    assert!(
        help.contains("Exit status: 0 when every item was decommissioned"),
        "{help}"
    );
    assert!(help.contains("SERIALCTL_LOCATION"), "{help}");
    assert!(help.contains("free-sample"), "{help}");
}
