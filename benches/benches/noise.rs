//! The machine's noise floor, the context of every latency figure (issue 9).
//!
//!   cargo bench --profile release --workspace --bench noise
//!
//! Two measurements (`benches::noise`), one after the other, `NOISE_SECONDS`
//! each (default 10), with nothing of serialsvc running:
//!
//! 1. **Wake-up lateness of an idle thread**: one thread waits on a timerfd
//!    that expires every 100 µs (the open loop's clock at 10,000/s) and
//!    records how long after each expiry it runs. An open-loop request can
//!    be no more punctual than this.
//! 2. **Time taken from a busy thread**: one thread per CPU, pinned, reads
//!    the monotonic clock in a loop and records every gap over 20 µs: the
//!    moments the CPU ran something else (interrupts, kernel threads, other
//!    processes) or, in a virtual machine, when the host did not run the
//!    virtual CPU at all. A gap of several milliseconds stalls whatever
//!    request a server thread on that CPU was serving.
//!
//! The `peers` harness makes the same measurements before and after its
//! scenarios.

use std::time::Duration;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = benches::env_number("NOISE_SECONDS", 10).max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("noise floor of this machine: {cpus} CPUs, {seconds} s per measurement");
    for line in benches::noise::measure(Duration::from_secs(seconds)).lines() {
        println!("{line}");
    }
}
