//! What the `serialctl` end-to-end tests share: running the command against
//! a test server, reading its output, and registering the product, lots and
//! pools the tests start from.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{Server, serialctl};

/// The product name the tests register.
pub const PRODUCT_NAME: &str = "Example 10 mg tablets";

/// Runs serialctl against the server.
pub fn run(server: &Server, args: &[&str]) -> Output {
    let endpoint = server.endpoint();
    let token_file = server.data_dir.join("admin.token");
    let token_file = token_file.to_str().unwrap();
    let mut all = vec!["--endpoint", endpoint.as_str(), "--token-file", token_file];
    all.extend_from_slice(args);
    serialctl(&all)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs and requires the exit status `code`.
pub fn run_code(server: &Server, code: i32, args: &[&str]) -> Output {
    let output = run(server, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "serialctl {args:?}\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// Runs serialctl against the server with `input` on standard input, in
/// `dir` (or the current directory) and with `env` set.
pub fn run_stdin(
    server: &Server,
    dir: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
    input: &[u8],
) -> Output {
    let binary = Path::new(env!("CARGO_BIN_EXE_serialsvc")).with_file_name("serialctl");
    let mut command = Command::new(&binary);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .envs(env.iter().copied())
        .arg("--endpoint")
        .arg(server.endpoint())
        .arg("--token-file")
        .arg(server.data_dir.join("admin.token"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

/// `serialctl product add` of `gtin` (company prefix of 7 digits) under
/// the market `profile`; requires success.
pub fn add_product(server: &Server, gtin: &str, profile: &str) -> Output {
    run_code(
        server,
        0,
        &[
            "product",
            "add",
            "--gtin",
            gtin,
            "--name",
            PRODUCT_NAME,
            "--company-prefix-length",
            "7",
            "--profile",
            profile,
        ],
    )
}

/// `serialctl lot add`; requires success.
pub fn add_lot(server: &Server, gtin: &str, lot: &str, expiry: &str) -> Output {
    run_code(
        server,
        0,
        &[
            "lot", "add", "--gtin", gtin, "--lot", lot, "--expiry", expiry,
        ],
    )
}

/// `serialctl pool request` of `count` serials on LINE-1 (plus `extra`
/// arguments) into `out`; requires success.
pub fn request_pool(
    server: &Server,
    gtin: &str,
    count: u64,
    request_id: &str,
    out: &Path,
    extra: &[&str],
) -> Output {
    let count_text = count.to_string();
    let mut args = vec![
        "pool",
        "request",
        "--gtin",
        gtin,
        "--count",
        &count_text,
        "--line",
        "LINE-1",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--request-id", request_id, "--out", out.to_str().unwrap()]);
    run_code(server, 0, &args)
}

/// The lines of a text file.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `serials` to `applied` and commissions them into `lot`; requires
/// success.
pub fn commission(
    server: &Server,
    gtin: &str,
    lot: &str,
    serials: &[String],
    applied: &Path,
) -> Output {
    std::fs::write(applied, serials.join("\n") + "\n").unwrap();
    run_code(
        server,
        0,
        &[
            "commission",
            "--gtin",
            gtin,
            "--lot",
            lot,
            applied.to_str().unwrap(),
        ],
    )
}

/// A serial of the pool's shape that the pool does not hold.
pub fn unknown_serial(serials: &[String]) -> String {
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
}
