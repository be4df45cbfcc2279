//! The machine's noise floor, the context of every latency figure (issue 9).
//!
//!   cargo bench --profile release --workspace --bench noise
//!
//! Two measurements, one after the other, `NOISE_SECONDS` each (default 10),
//! with nothing of serialsvc running:
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

use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_micros(100);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = std::env::var("NOISE_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(10)
        .max(1);
    let duration = Duration::from_secs(seconds);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("noise floor of this machine: {cpus} CPUs, {seconds} s per measurement");
    match wake_lateness(duration) {
        Ok(mut late) => {
            late.sort_unstable();
            let at = |q: f64| late[((late.len() as f64 * q) as usize).min(late.len() - 1)];
            println!(
                "idle thread woken every 100 µs by a timerfd ({} wake-ups): lateness p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
                late.len(),
                at(0.5).as_micros(),
                at(0.99).as_micros(),
                at(0.999).as_micros(),
                late.last().copied().unwrap_or_default().as_micros()
            );
        }
        Err(error) => println!("wake-up lateness: not measured: {error}"),
    }
    let spinners: Vec<_> = (0..cpus)
        .map(|cpu| std::thread::spawn(move || gaps(cpu, duration)))
        .collect();
    for (cpu, spinner) in spinners.into_iter().enumerate() {
        match spinner.join() {
            Ok(Ok(gaps)) => println!("busy thread on CPU {cpu}: {gaps}"),
            Ok(Err(error)) => println!("busy thread on CPU {cpu}: not measured: {error}"),
            Err(_) => println!("busy thread on CPU {cpu}: panicked"),
        }
    }
}

/// How late after each expiry of a 100 µs periodic timerfd a blocked
/// thread runs, for `duration`.
fn wake_lateness(duration: Duration) -> std::io::Result<Vec<Duration>> {
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
    let period = Timespec::try_from(PERIOD).map_err(|_| std::io::Error::other("period"))?;
    let start = Instant::now();
    timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: period,
            it_value: period,
        },
    )?;
    // Expiry k (from 1) is due no earlier than start + k × PERIOD.
    let mut expiries = 0u32;
    let mut late = Vec::with_capacity((duration.as_micros() / PERIOD.as_micros()) as usize);
    while start.elapsed() < duration {
        let mut count = [0u8; 8];
        rustix::io::read(&timer, &mut count)?;
        let now = Instant::now();
        expiries =
            expiries.saturating_add(u64::from_ne_bytes(count).try_into().unwrap_or(u32::MAX));
        late.push(now.saturating_duration_since(start + PERIOD * expiries));
    }
    Ok(late)
}

/// Gaps in a busy loop pinned to `cpu`, as a one-line summary.
fn gaps(cpu: usize, duration: Duration) -> std::io::Result<String> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    // Upper bounds of the buckets, and the counts in them.
    let bounds = [
        Duration::from_micros(100),
        Duration::from_micros(500),
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::MAX,
    ];
    let mut counts = [0u64; 5];
    let (mut lost, mut longest) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let mut last = start;
    while last - start < duration {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap > Duration::from_micros(20) {
            lost += gap;
            longest = longest.max(gap);
            if let Some(bucket) = bounds.iter().position(|&bound| gap <= bound) {
                counts[bucket] += 1;
            }
        }
    }
    Ok(format!(
        "gaps 20–100 µs {}, 0.1–0.5 ms {}, 0.5–1 ms {}, 1–5 ms {}, over 5 ms {}; longest {:.1} ms; {:.1} % of the time taken",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        longest.as_secs_f64() * 1e3,
        lost.as_secs_f64() * 100.0 / (last - start).as_secs_f64()
    ))
}
