//! Issue 8 end to end with the real tools: the real `serialsvc` on loopback,
//! a real Prometheus scraping it, and promtool checking the exposition, the
//! alert rules and their unit tests. The dashboard's and the rules' metric
//! names are checked against a live exposition.
//!
//! Prometheus and promtool come from Debian's `prometheus` package, installed
//! by `scripts/ensure-prometheus` when missing (scripts/test runs it first).

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::api::*;
use common::{Server, http_get};
use proto::serial::v1 as pb;
use proto::serial::v1::status_service_client::StatusServiceClient;
use proto::serial::v1::verification_service_client::VerificationServiceClient;

const GTIN: &str = "09520123456788";
const LOCATION: &str = "0614141000012";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn ops(path: &str) -> PathBuf {
    repository().join("ops").join(path)
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Prometheus and promtool from Debian's packages when missing.
fn ensure_prometheus() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if on_path("promtool") && on_path("prometheus") {
            return;
        }
        let script = repository().join("scripts/ensure-prometheus");
        let output = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    });
    assert!(on_path("promtool") && on_path("prometheus"));
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    ensure_prometheus();
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repository())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    child.wait_with_output().expect("wait for promtool")
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Drives every kind of traffic the metrics describe: master data, a pool,
/// commissioning, a return, verifications (known, unknown, malformed), a
/// decommission, the HTTP probes and the GS1 responder.
async fn exercise(server: &Server, round: u32) {
    let channel = channel(server).await;
    add_product(&channel, GTIN, "eu-fmd", None, None).await;
    add_lot(&channel, GTIN, "L1", "301231").await.unwrap();
    let pool = request_pool(&channel, &format!("ops-pool-{round}"), GTIN, 40)
        .await
        .unwrap();
    let (to_commission, to_return) = pool.serials.split_at(30);
    let answer = commission(
        &channel,
        GTIN,
        &format!("ops-commission-{round}"),
        "L1",
        to_commission.to_vec(),
    )
    .await;
    assert_eq!(answer.counts.unwrap().applied, 30);
    return_serials(
        &channel,
        GTIN,
        &format!("ops-return-{round}"),
        to_return.to_vec(),
    )
    .await;

    let fields = |serial: &str| pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Fields(pb::PackFields {
            gtin: GTIN.into(),
            serial: serial.into(),
            lot: Some("L1".into()),
            expiry: Some("301231".into()),
        })),
    };
    let mut items: Vec<_> = to_commission[..10].iter().map(|s| fields(s)).collect();
    items.push(fields("NEVER-ISSUED-1"));
    items.push(fields("NEVER-ISSUED-2"));
    items.push(pb::PackIdentifier {
        identifier: Some(pb::pack_identifier::Identifier::Encoded(
            "(01)09520123456788".into(),
        )),
    });
    let results = VerificationServiceClient::new(channel.clone())
        .verify_batch(pb::VerifyBatchRequest {
            items,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 13);
    // A refused call, counted with its code.
    let refused = VerificationServiceClient::new(channel.clone())
        .verify_batch(pb::VerifyBatchRequest {
            items: vec![fields("A"); 4097],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let decommission = pb::DecommissionRequest {
        request_id: format!("ops-decommission-{round}"),
        reason: pb::DecommissionReason::Dispensed as i32,
        location: LOCATION.into(),
        actor: LOCATION.into(),
        items: to_commission[20..25].iter().map(|s| fields(s)).collect(),
        ..Default::default()
    };
    // Sent twice (a client retry): the second answer is the stored one and
    // the decommission metrics must not count it again.
    let mut answers = StatusServiceClient::new(channel.clone())
        .decommission(tokio_stream::iter([decommission.clone(), decommission]))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().expect("first answer");
    let replayed = answers.message().await.unwrap().expect("second answer");
    assert_eq!(first.counts.unwrap().applied, 5, "{first:?}");
    assert_eq!(first.results, replayed.results);

    assert_eq!(http_get(server.http, "/healthz").0, 200);
    assert_eq!(http_get(server.http, "/readyz").0, 200);
    let serial = &to_commission[0];
    let (status, headers, body) = common::http_get_with(
        server.http,
        &format!(
            "/01/{GTIN}/10/L1/21/{serial}?17=301231&linkType=verificationService&reqGLN={LOCATION}&corrUUID=ops-{round}"
        ),
        Some(&server.admin_token()),
    );
    assert_eq!(status, 200, "{headers}\n{body}");
}

/// Metric names in an exposition (histograms appear as their `_bucket`,
/// `_sum` and `_count` series).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Every `serialsvc_…` name in a query text.
fn named_metrics(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(start) = rest.find("serialsvc_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression of the dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(ops("grafana/serialsvc-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    fn walk(value: &serde_json::Value, queries: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => queries.push(expr.clone()),
                        ("query" | "definition", serde_json::Value::String(query)) => {
                            queries.push(query.clone());
                        }
                        _ => walk(value, queries),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, queries)),
            _ => {}
        }
    }
    walk(&dashboard, &mut queries);
    queries
}

/// The alert rules: (alert name, expression, runbook path), read from the
/// YAML's fixed layout (`- alert:`, `expr:` one line or a `|` block, `runbook:`).
fn alert_rules() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(ops("prometheus/alerts.yml")).unwrap();
    let mut rules: Vec<(String, String, String)> = Vec::new();
    let mut in_expr_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push((name.trim().to_owned(), String::new(), String::new()));
            in_expr_block = false;
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        if let Some(expr) = trimmed.strip_prefix("expr:") {
            in_expr_block = expr.trim() == "|";
            if !in_expr_block {
                rule.1 = expr.trim().to_owned();
            }
        } else if in_expr_block && line.starts_with("          ") {
            rule.1.push_str(trimmed);
            rule.1.push('\n');
        } else {
            in_expr_block = false;
            if let Some(runbook) = trimmed.strip_prefix("runbook:") {
                rule.2 = runbook.trim().to_owned();
            }
        }
    }
    rules
}

#[test]
fn the_dashboard_is_importable_and_covers_the_four_user_groups() {
    let text = std::fs::read_to_string(ops("grafana/serialsvc-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dashboard["uid"], "serialsvc-overview");
    assert!(
        dashboard["id"].is_null(),
        "an exported dashboard carries no id"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Packaging lines",
            "Verification routers",
            "Returns processors",
            "SREs"
        ]
    );
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id repeated"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {grid}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        boxes.push((title, [x, y, w, h]));
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title} has no query");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{title}"
                );
            }
        }
    }
}

#[test]
fn promtool_checks_the_rules_the_scrape_example_and_the_rule_tests() {
    let rules = ops("prometheus/alerts.yml");
    let output = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert_success("promtool check rules", &output);
    let config = ops("prometheus/prometheus.yml");
    let output = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert_success("promtool check config", &output);
    let tests = ops("prometheus/alerts.test.yml");
    let output = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert_success("promtool test rules", &output);
}

#[test]
fn every_alert_has_a_runbook_a_firing_test_and_a_quiet_test() {
    let rules = alert_rules();
    assert!(rules.len() >= 9, "{rules:?}");
    for expected in [
        "SerialsvcFailStopped",
        "SerialsvcHighErrorRate",
        "SerialsvcVerificationLatency",
        "SerialsvcSerialSpaceRunningOut",
        "SerialsvcGuessingRatioNearLimit",
        "SerialsvcDiskSpaceLow",
        "SerialsvcUnknownSerialSpike",
        "SerialsvcIndexRebuildSlow",
    ] {
        assert!(
            rules.iter().any(|(name, ..)| name == expected),
            "no alert {expected}"
        );
    }
    // (alertname, fires) of every alert_rule_test case.
    let tests = std::fs::read_to_string(ops("prometheus/alerts.test.yml")).unwrap();
    let mut cases = Vec::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after alertname");
            cases.push((name, expected.trim() != "[]"));
        }
    }
    for (name, _, runbook) in &rules {
        assert_eq!(runbook, &format!("ops/runbooks/{name}.md"), "{name}");
        let text = std::fs::read_to_string(repository().join(runbook))
            .unwrap_or_else(|e| panic!("{name}: runbook {runbook}: {e}"));
        assert!(text.starts_with(&format!("# {name}\n")), "{runbook} title");
        assert!(
            text.contains("## Check") && text.contains("## Act"),
            "{runbook} needs Check and Act sections"
        );
        assert!(
            cases.contains(&(name.clone(), true)),
            "{name} has no promtool test that fires it"
        );
        assert!(
            cases.contains(&(name.clone(), false)),
            "{name} has no promtool test that keeps it quiet"
        );
    }
    // Every runbook belongs to an alert.
    for entry in std::fs::read_dir(ops("runbooks")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let name = file.strip_suffix(".md").unwrap_or(&file);
        assert!(
            rules.iter().any(|(alert, ..)| alert == name),
            "runbook {file} has no alert"
        );
    }
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_has_every_metric_the_dashboard_and_alerts_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    exercise(&server, 1).await;
    // Let the poller publish storage, index and serial-space figures.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, exposition) = http_get(server.metrics, "/metrics");
    assert_eq!(status, 200);

    let output = promtool(&["check", "metrics"], Some(&exposition));
    assert_success("promtool check metrics", &output);

    let exposed = exposed_names(&exposition);
    let mut wanted = BTreeSet::new();
    for query in dashboard_queries() {
        wanted.extend(named_metrics(&query));
    }
    assert!(wanted.len() > 30, "dashboard names {wanted:?}");
    for (_, expr, _) in alert_rules() {
        wanted.extend(named_metrics(&expr));
    }
    let missing: Vec<_> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "named by the dashboard or the alerts but not exposed: {missing:?}"
    );

    // Values that the traffic above must have moved.
    let value = |series: &str| -> f64 {
        exposition
            .lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in the exposition:\n{exposition}"))
    };
    assert_eq!(
        value(r#"serialsvc_verifications_total{result="verified"}"#),
        11.0
    );
    assert_eq!(
        value(r#"serialsvc_verifications_total{result="unknown"}"#),
        2.0
    );
    assert_eq!(
        value(r#"serialsvc_verifications_total{result="malformed"}"#),
        1.0
    );
    assert_eq!(
        value(r#"serialsvc_decommissions_total{reason="dispensed"}"#),
        5.0
    );
    assert_eq!(
        value(r#"serialsvc_decommissions_total{reason="stolen"}"#),
        0.0
    );
    assert_eq!(value("serialsvc_serials_commissioned_total"), 30.0);
    assert_eq!(value("serialsvc_serials_returned_total"), 10.0);
    assert_eq!(value("serialsvc_serials_issued_total"), 40.0);
    assert_eq!(value(r#"serialsvc_pool_requests_total{limit="none"}"#), 1.0);
    assert_eq!(value("serialsvc_products"), 1.0);
    assert_eq!(value("serialsvc_ready"), 1.0);
    assert_eq!(value("serialsvc_storage_fail_stopped"), 0.0);
    assert_eq!(value("serialsvc_index_rebuilding"), 0.0);
    assert!(value("serialsvc_guessing_ratio_max") > 0.0);
    assert_eq!(value("serialsvc_guessing_ratio_limit"), 0.0001);
    assert!(value("serialsvc_storage_commits_total") >= 5.0);
    assert!(value("serialsvc_storage_wal_syncs_total") >= 1.0);
    assert!(value("serialsvc_rocksdb_memtable_bytes") > 0.0);
    assert!(value("serialsvc_data_dir_available_bytes") > 0.0);
    assert!(value("serialsvc_index_serials") >= 40.0);
    assert_eq!(
        value(
            r#"serialsvc_grpc_requests_total{method="VerificationService/VerifyBatch",code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            r#"serialsvc_grpc_requests_total{method="VerificationService/VerifyBatch",code="OK"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"serialsvc_grpc_requests_total{method="StatusService/Decommission",code="OK"}"#),
        1.0
    );
    assert_eq!(
        value(r#"serialsvc_grpc_request_duration_seconds_count{method="PoolService/RequestPool"}"#),
        1.0
    );
    assert_eq!(
        value(r#"serialsvc_http_requests_total{route="/01/{*rest}",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"serialsvc_write_items_sum{kind="commission"}"#),
        30.0
    );
    // Bucket boundaries are the explicit ones, 300 ms among them.
    assert!(
        exposition.contains(r#"serialsvc_grpc_request_duration_seconds_bucket{method="VerificationService/VerifyBatch",le="0.3"}"#),
        "{exposition}"
    );
    // No label carries a GTIN or a serial.
    assert!(!exposition.contains(GTIN) && !exposition.contains("NEVER-ISSUED"));
}

/// A free loopback port (bound then released; fine for a test).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Prometheus {
    child: Child,
    address: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on loopback scraping `target` every second, with the
    /// alert rules loaded and evaluated every second.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        ensure_prometheus();
        let rules = ops("prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: serialsvc\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let address = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, address };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(address).is_ok()
                && common::http_get(address, "/-/ready").0 == 200
            {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = common::http_get(self.address, path);
        assert_eq!(status, 200, "{path}: {body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(value["status"], "success", "{path}: {body}");
        value["data"].clone()
    }

    /// An instant query summed to one number; None while it has no result.
    fn scalar(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let data = self.get(&format!("/api/v1/query?query={encoded}"));
        let result = data["result"].as_array()?;
        let first = result.first()?;
        first["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value satisfying `accept`; returns it.
    fn wait_for(&self, query: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = self.scalar(query)
                && accept(value)
            {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{query} never reached the expected value (last {:?})",
                self.scalar(query)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_service_and_sees_it_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let prometheus = Prometheus::start(dir.path(), server.metrics);

    prometheus.wait_for(r#"up{job="serialsvc"}"#, |v| v == 1.0);
    prometheus.wait_for("serialsvc_ready", |v| v == 1.0);
    prometheus.wait_for("serialsvc_storage_fail_stopped", |v| v == 0.0);
    prometheus.wait_for("count(serialsvc_build_info)", |v| v == 1.0);
    prometheus.wait_for("serialsvc_rocksdb_live_data_bytes", |v| v >= 0.0);

    exercise(&server, 1).await;
    let requests = prometheus.wait_for("sum(serialsvc_grpc_requests_total)", |v| v >= 8.0);
    let verified = prometheus.wait_for(
        r#"sum(serialsvc_verifications_total{result="verified"})"#,
        |v| v >= 11.0,
    );
    let commits = prometheus.wait_for("serialsvc_storage_commits_total", |v| v >= 5.0);
    prometheus.wait_for("serialsvc_serials_issued_total", |v| v == 40.0);

    // A second round: the same series must move.
    exercise(&server, 2).await;
    prometheus.wait_for("sum(serialsvc_grpc_requests_total)", |v| v > requests);
    prometheus.wait_for(
        r#"sum(serialsvc_verifications_total{result="verified"})"#,
        |v| v >= verified + 11.0,
    );
    prometheus.wait_for("serialsvc_storage_commits_total", |v| v > commits);
    prometheus.wait_for("serialsvc_serials_issued_total", |v| v == 80.0);
    prometheus.wait_for(r#"sum(rate(serialsvc_grpc_requests_total[1m]))"#, |v| {
        v > 0.0
    });
    prometheus.wait_for(
        r#"histogram_quantile(0.95, sum by (le) (rate(serialsvc_grpc_request_duration_seconds_bucket{method="VerificationService/VerifyBatch"}[1m])))"#,
        |v| v > 0.0 && v <= 30.0,
    );

    // Every alert rule evaluates without error against the live series, and
    // none of the instant ones fires for a healthy service.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = prometheus.get("/api/v1/rules");
        let rules: Vec<serde_json::Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), alert_rules().len());
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if evaluated {
            for rule in &rules {
                assert_eq!(rule["health"], "ok", "{rule}");
                if rule["name"] == "SerialsvcFailStopped" || rule["name"] == "SerialsvcDown" {
                    assert_eq!(rule["state"], "inactive", "{rule}");
                }
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules never evaluated: {rules:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
