//! The machine's noise floor, the context of every latency figure (issue 9).
//!
//!   cargo bench --profile release --workspace --bench noise
//!
//! Three measurements (`benches::noise`), one after the other, `NOISE_SECONDS`
//! each (default 10), with nothing of serialsvc running:
//!
//! 1. **Wake-up lateness of an idle thread**: one thread waits on a timerfd
//!    that expires every 100 µs (the open loop's clock at 10,000/s) and
//!    records how long after each expiry it runs. An open-loop request can
//!    be no more punctual than this.
//! 2. **Wake-up round trips**: two threads, each blocked reading a pipe
//!    until the other writes, send a byte back and forth; first on CPUs 0
//!    and 1, then both on CPU 0 (half the time each). A round trip is two
//!    wake-ups; a call from a load generator to a server and back pays at
//!    least as many. In a virtual machine a wake-up across CPUs can cost ten
//!    times one on the same CPU (the host must wake the halted virtual CPU).
//! 3. **Time taken from a busy thread**: one thread per CPU, pinned, reads
//!    the monotonic clock in a loop and records every gap over 20 µs: the
//!    moments the CPU ran something else (interrupts, kernel threads, other
//!    processes) or, in a virtual machine, when the host did not run the
//!    virtual CPU at all. A gap of several milliseconds stalls whatever
//!    request a server thread on that CPU was serving. Meanwhile it reads
//!    the kernel's steal counter (`/proc/stat`): the share of the CPUs' time
//!    the host is known to have taken.
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
