//! The configuration through the real binary: file < environment < flags,
//! unknown keys and bad values refused with the key and the rule, and a
//! server started from a file serving with its values.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Server, http_get};

fn serialsvc(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_serialsvc"));
    command.args(args);
    // Only the variables each case sets.
    for (key, _) in std::env::vars() {
        if key.starts_with("SERIALSVC_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run serialsvc")
}

fn effective(output: &Output) -> toml::Table {
    assert!(output.status.success(), "{output:?}");
    toml::from_str(&String::from_utf8_lossy(&output.stdout)).expect("check-config prints TOML")
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("serialsvc.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "shards = 8\nqueue_depth = 7\npool_count_max = 5000\n",
    );
    let output = serialsvc(
        &["check-config", "--config", &file, "--shards", "10"],
        &[("SERIALSVC_SHARDS", "9"), ("SERIALSVC_QUEUE_DEPTH", "11")],
    );
    let config = effective(&output);
    assert_eq!(config["shards"].as_integer(), Some(10), "flag");
    assert_eq!(config["queue_depth"].as_integer(), Some(11), "environment");
    assert_eq!(config["pool_count_max"].as_integer(), Some(5000), "file");
    assert_eq!(
        config["return_group_max"].as_integer(),
        Some(10_000),
        "default"
    );
    assert_eq!(config["log_format"].as_str(), Some("text"), "default");

    // The file can come from the environment too.
    let output = serialsvc(&["check-config"], &[("SERIALSVC_CONFIG", &file)]);
    assert_eq!(effective(&output)["shards"].as_integer(), Some(8));
}

#[test]
fn the_template_is_the_defaults() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/config-template.toml");
    let with_template = effective(&serialsvc(
        &["check-config", "--config", template.to_str().unwrap()],
        &[],
    ));
    let without = effective(&serialsvc(&["check-config"], &[]));
    assert_eq!(with_template, without);
}

#[test]
fn bad_configurations_exit_2_naming_the_key_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    // (file text, extra flags, environment, expected in the message)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        ("shard = 4\n", &[], &[], "unknown field `shard`"),
        ("shards = 0\n", &[], &[], "shards: 0 is outside 1..=256"),
        ("queue_depth = -1\n", &[], &[], "queue_depth"),
        (
            "",
            &[],
            &[("SERIALSVC_POOL_COUNT_MAX", "20000000")],
            "pool_count_max: 20000000 is outside 1..=10000000",
        ),
        (
            "",
            &["--responder-gln", "1234567890123"],
            &[],
            "responder_gln: ",
        ),
        (
            "grpc_listen = \"127.0.0.1:7000\"\nhttp_listen = \"127.0.0.1:7000\"\n",
            &[],
            &[],
            "http_listen: 127.0.0.1:7000 is already the grpc_listen address",
        ),
    ];
    for (text, flags, env, expected) in cases {
        let file = write(dir.path(), text);
        let mut args = vec!["serve", "--config", &file];
        args.extend_from_slice(flags);
        let output = serialsvc(&args, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{text:?} {flags:?}: {stderr}"
        );
        assert!(
            stderr.contains("invalid configuration") && stderr.contains(expected),
            "{text:?} {flags:?} {env:?}: expected {expected:?} in {stderr}"
        );
    }
    let missing = serialsvc(&["serve", "--config", "/nonexistent/serialsvc.toml"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/serialsvc.toml"));
}

#[test]
fn a_server_started_from_a_file_uses_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "shards = 3\npool_count_max = 1234\nlog_format = \"text\"\n",
    );
    let server = Server::start_with(&dir.path().join("data"), &["--config", &file]);
    assert_eq!(http_get(server.http, "/readyz").0, 200);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let limits = runtime.block_on(async {
        let channel = common::api::channel(&server).await;
        proto::serial::v1::pool_service_client::PoolServiceClient::new(channel)
            .get_limits(proto::serial::v1::GetLimitsRequest::default())
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(limits.max_serials_requestable, 1234);
}

#[test]
fn the_effective_configuration_is_logged_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "shards = 3\nqueue_depth = 99\n");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_serialsvc"))
        .args(["serve", "--config", &file, "--data-dir"])
        .arg(&data)
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("SERIALSVC_POOL_COUNT_MAX", "777")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut logged = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("starting with the effective configuration") {
            logged = Some(line.clone());
        }
        if line.contains(" serving ") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = logged.expect("no 'effective configuration' line before serving");
    for expected in [
        "shards = 3",
        "queue_depth = 99",
        "pool_count_max = 777",
        "grpc_listen = \"127.0.0.1:0\"",
        "config_file=",
    ] {
        assert!(line.contains(expected), "{expected} not in {line}");
    }
}
