//! Slow disk and stalls. A slow disk (every commit delayed by a fail point)
//! with a short writer queue and many clients: overload must be answered
//! quickly with RESOURCE_EXHAUSTED, every client must have its outcome within
//! its deadline, and memory and threads must stay bounded. A stalled server
//! (SIGSTOP, then SIGCONT): clients get deadline errors within their
//! deadlines and the service serves again at once after the stall. In both,
//! nothing acknowledged is lost and every indeterminate write resolves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos_tests::history::Outcome;
use chaos_tests::ops::DEADLINE_SLACK;
use chaos_tests::process::Launch;
use chaos_tests::supervisor::{Settings, Supervisor};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serialsvc-chaos"))
}

/// The slowest attempt, and the slowest RESOURCE_EXHAUSTED answer.
fn latencies(supervisor: &Supervisor) -> (Duration, Duration, u64) {
    supervisor.with_history(|history| {
        let mut slowest = Duration::ZERO;
        let mut slowest_overload = Duration::ZERO;
        let mut overloads = 0;
        for entry in &history.entries {
            let took = entry.completed - entry.invoked;
            slowest = slowest.max(took);
            if let Outcome::Failed(text) = &entry.outcome
                && text.starts_with("ResourceExhausted")
            {
                overloads += 1;
                slowest_overload = slowest_overload.max(took);
            }
        }
        (slowest, slowest_overload, overloads)
    })
}

#[test]
fn a_slow_disk_under_overload_answers_quickly_and_stays_bounded() {
    let seed = chaos_tests::seed_or(5050);
    let dir = tempfile::tempdir().expect("data dir");
    let mut launch = Launch::new(binary(), dir.path());
    launch.args = ["--shards", "1", "--queue-depth", "2"]
        .map(String::from)
        .to_vec();
    let mut settings = Settings::new("slow disk and overload", seed);
    settings.clients = 24;
    settings.deadline = Duration::from_secs(2);
    let deadline = settings.deadline;
    let mut supervisor = Supervisor::new(settings, launch);
    supervisor.start().expect("the first start");
    supervisor.start_clients();
    supervisor.run_for(Duration::from_secs(1));
    let server = supervisor.server().expect("running");
    let (rss_before, threads_before) = (
        server.resident_bytes().unwrap_or(0),
        server.threads().unwrap_or(0),
    );
    // Slow disk from now on: restart with every commit delayed.
    supervisor.kill9();
    supervisor.fault("kill -9");
    let delay = 20 + supervisor.schedule.below(60);
    supervisor.launch_mut().env = vec![(
        "FAILPOINTS".into(),
        format!("storage.commit.before_write=sleep({delay})"),
    )];
    supervisor.start().expect("start with a slow disk");
    supervisor.fault(&format!("slow disk ({delay} ms a commit)"));
    let duration = chaos_tests::duration_or(Duration::from_secs(6));
    let end = Instant::now() + duration;
    let (mut rss_max, mut threads_max) = (0, 0);
    while Instant::now() < end {
        supervisor.run_for(Duration::from_millis(200));
        let server = supervisor.server().expect("running");
        rss_max = rss_max.max(server.resident_bytes().unwrap_or(0));
        threads_max = threads_max.max(server.threads().unwrap_or(0));
    }
    let (slowest, slowest_overload, overloads) = latencies(&supervisor);
    eprintln!(
        "slow disk: {overloads} RESOURCE_EXHAUSTED (slowest {:.3} s), slowest attempt {:.3} s, \
         RSS {rss_before} -> max {rss_max} bytes, threads {threads_before} -> max {threads_max}",
        slowest_overload.as_secs_f64(),
        slowest.as_secs_f64()
    );
    let report = supervisor.finish();
    report.assert_clean();
    assert!(
        overloads > 0,
        "no overload happened: the test proved nothing"
    );
    assert!(
        slowest_overload < Duration::from_secs(1),
        "RESOURCE_EXHAUSTED took {slowest_overload:?}: overload must be answered quickly"
    );
    assert!(
        slowest <= deadline + DEADLINE_SLACK + Duration::from_secs(1),
        "an attempt took {slowest:?}, past its {deadline:?} deadline"
    );
    assert!(
        rss_max < rss_before + (256 << 20),
        "memory grew from {rss_before} to {rss_max} bytes under overload"
    );
    assert!(
        threads_max <= threads_before + 8,
        "threads grew from {threads_before} to {threads_max} under overload"
    );
}

#[test]
fn a_stalled_server_gives_deadline_errors_and_serves_again_after_the_stall() {
    let seed = chaos_tests::seed_or(5051);
    let dir = tempfile::tempdir().expect("data dir");
    let mut settings = Settings::new("stalls (SIGSTOP/SIGCONT)", seed);
    settings.deadline = Duration::from_secs(1);
    let deadline = settings.deadline;
    let mut supervisor = Supervisor::new(settings, Launch::new(binary(), dir.path()));
    supervisor.start().expect("the first start");
    supervisor.start_clients();
    let duration = chaos_tests::duration_or(Duration::from_secs(8));
    let end = Instant::now() + duration;
    let mut slowest_resume = Duration::ZERO;
    while Instant::now() < end {
        let run = supervisor.schedule.millis(300, 1200);
        supervisor.run_for(run);
        let stall = supervisor.schedule.millis(500, 2500);
        let server = supervisor.server().expect("running");
        server.pause().expect("SIGSTOP");
        supervisor.fault("stall (SIGSTOP)");
        supervisor.run_for(stall);
        let server = supervisor.server().expect("running");
        server.resume().expect("SIGCONT");
        let resumed = Instant::now();
        let ok_before = supervisor.ok_count();
        while supervisor.ok_count() == ok_before && resumed.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        slowest_resume = slowest_resume.max(resumed.elapsed());
    }
    let (slowest, _, _) = latencies(&supervisor);
    eprintln!(
        "stalls: slowest attempt {:.3} s, slowest first OK after SIGCONT {:.3} s",
        slowest.as_secs_f64(),
        slowest_resume.as_secs_f64()
    );
    let report = supervisor.finish();
    report.assert_clean();
    assert!(
        report
            .errors
            .keys()
            .any(|code| code == "DeadlineExceeded" || code == "Cancelled"),
        "no client met a deadline during the stalls: the test proved nothing ({:?})",
        report.errors
    );
    assert!(
        slowest <= deadline + DEADLINE_SLACK + Duration::from_secs(1),
        "an attempt took {slowest:?}, past its {deadline:?} deadline"
    );
    assert!(
        slowest_resume < Duration::from_secs(3),
        "first OK answer {slowest_resume:?} after SIGCONT"
    );
}

/// A handler slower than the server's request timeout (every commit delayed
/// 2.5 s by a fail point, a 1 s timeout): the call is answered CANCELLED in
/// about a second, not held; the work it started goes on, so the retry with
/// the same request id answers with what was committed.
#[test]
fn a_request_outliving_the_server_timeout_is_cancelled_and_its_retry_answers() {
    use chaos_tests::process::ServerProcess;
    use proto::serial::v1 as pb;
    use proto::serial::v1::master_data_service_client::MasterDataServiceClient;

    let dir = tempfile::tempdir().expect("data dir");
    let mut launch = Launch::new(binary(), dir.path());
    launch.args = ["--request-timeout-seconds", "1"]
        .map(String::from)
        .to_vec();
    launch.env = vec![(
        "FAILPOINTS".into(),
        "storage.commit.before_write=sleep(2500)".into(),
    )];
    let server = ServerProcess::start(&launch).expect("start");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let endpoint = server.endpoint();
    let data_dir = dir.path().to_path_buf();
    runtime.block_on(async move {
        let channel = chaos_tests::auth::authenticated(
            tonic::transport::Endpoint::from_shared(endpoint)
                .expect("endpoint")
                .connect()
                .await
                .expect("connect"),
            &data_dir,
        );
        let mut client = MasterDataServiceClient::new(channel);
        let request = pb::AddProductRequest {
            request_id: "slow-product".into(),
            gtin: "09520123456788".into(),
            name: "Slow".into(),
            company_prefix_length: 7,
            market_profile: "eu-fmd".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let first = client.add_product(request.clone()).await;
        let took = started.elapsed();
        let status = first.expect_err("the handler outlives the 1 s timeout");
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
        assert!(
            took < Duration::from_millis(2_200),
            "answered after {took:?}, not at the 1 s timeout"
        );
        // The commit goes on; the retry (itself slow only if it commits)
        // answers from the stored registration once it is durable.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let retried = client
            .add_product(request)
            .await
            .expect("the retry answers from the stored registration");
        assert_eq!(
            retried.into_inner().product.expect("product").gtin,
            "09520123456788"
        );
    });
    drop(server);
}
