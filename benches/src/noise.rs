//! The machine's noise floor: how punctually an idle thread wakes, and how
//! much time is taken from a busy thread on each CPU (interrupts, kernel
//! threads, other processes, or, in a virtual machine, the host not running
//! the virtual CPU). The context of every latency figure: a server thread
//! whose CPU is taken for 5 ms stalls the calls it holds for 5 ms. Used by
//! the `noise` bench and, before and after its scenarios, by `peers`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The open loop's period at 10,000 calls a second.
const PERIOD: Duration = Duration::from_micros(100);

/// Upper bounds of the gap buckets (the last is open).
const BUCKETS: [(Duration, &str); 5] = [
    (Duration::from_micros(100), "20–100 µs"),
    (Duration::from_micros(500), "0.1–0.5 ms"),
    (Duration::from_millis(1), "0.5–1 ms"),
    (Duration::from_millis(5), "1–5 ms"),
    (Duration::MAX, "over 5 ms"),
];

/// Lateness of an idle thread woken by a timerfd every 100 µs.
#[derive(Debug, Clone)]
pub struct WakeLateness {
    pub wakeups: usize,
    /// p50, p99, p999 and max.
    pub percentiles: [Duration; 4],
}

/// Gaps over 20 µs seen by a busy thread pinned to one CPU.
#[derive(Debug, Clone)]
pub struct Gaps {
    pub cpu: usize,
    /// Counts per bucket of [`BUCKETS`].
    pub counts: [u64; 5],
    pub longest: Duration,
    /// Share of the time lost in gaps.
    pub lost: f64,
    /// Share of the time more than 1 ms into a gap: a request that reaches
    /// a thread on this CPU then waits over 1 ms before it can be served, so
    /// about this share of requests on this CPU, at any rate, waits over 1 ms
    /// (a p99 under 1 ms needs it well under 1 %).
    pub beyond_1ms: f64,
}

/// Round trips of a one-byte message between two threads, each blocked in a
/// pipe `read` until the other writes: two wake-ups each.
#[derive(Debug, Clone)]
pub struct PingPong {
    /// The CPUs the two threads are pinned to.
    pub cpus: (usize, usize),
    pub round_trips: usize,
    /// p50, p99, p999 and max.
    pub percentiles: [Duration; 4],
}

/// Every measurement; a part that could not be measured says why.
#[derive(Debug, Clone)]
pub struct Noise {
    pub seconds: f64,
    pub wake: Result<WakeLateness, String>,
    /// The cost of a wake-up across CPUs (threads on CPUs 0 and 1), then on
    /// one CPU (both on CPU 0), `seconds / 2` each. Every call between a
    /// load generator and a server, and between a server's threads, pays
    /// such wake-ups.
    pub ping_pong: [Result<PingPong, String>; 2],
    pub cpus: Vec<Result<Gaps, String>>,
    /// Share of the CPUs' time the kernel counted as stolen by the host
    /// (steal in `/proc/stat`) while the busy threads ran: the part of their
    /// gaps the host, not this machine, is to blame for. `None` where the
    /// kernel counts no steal ticks at all (not a virtual machine, or
    /// `/proc/stat` unreadable).
    pub stolen_while_busy: Option<f64>,
}

/// Measures for `duration` each: first the wake-up lateness, then the
/// wake-up round trips (across CPUs, then on one, half of `duration` each),
/// then one busy thread per CPU at once.
pub fn measure(duration: Duration) -> Noise {
    let wake = wake_lateness(duration).map_err(|e| e.to_string());
    let ping_pong =
        [(0, 1), (0, 0)].map(|cpus| ping_pong(cpus, duration / 2).map_err(|e| e.to_string()));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = crate::machine_ticks();
    let started = Instant::now();
    let spinners: Vec<_> = (0..cpus)
        .map(|cpu| std::thread::spawn(move || gaps(cpu, duration)))
        .collect();
    let cpus = spinners
        .into_iter()
        .map(|spinner| match spinner.join() {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the busy thread panicked".to_owned()),
        })
        .collect::<Vec<_>>();
    let stolen = crate::machine_ticks().stolen.saturating_sub(before.stolen) as f64
        / crate::clock_ticks_per_second();
    let available = started.elapsed().as_secs_f64() * cpus.len() as f64;
    Noise {
        seconds: duration.as_secs_f64(),
        wake,
        ping_pong,
        cpus,
        stolen_while_busy: (before.stolen > 0 && available > 0.0).then(|| stolen / available),
    }
}

impl Noise {
    /// What to print, a line per measurement.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![match &self.wake {
            Ok(wake) => format!(
                "idle thread woken every 100 µs by a timerfd ({} wake-ups): lateness {}",
                wake.wakeups,
                percentiles_text(&wake.percentiles)
            ),
            Err(error) => format!("wake-up lateness: not measured: {error}"),
        }];
        for pair in &self.ping_pong {
            lines.push(match pair {
                Ok(pair) => format!(
                    "two threads on CPUs {} and {} waking each other through pipes ({} round trips): round trip {}",
                    pair.cpus.0,
                    pair.cpus.1,
                    pair.round_trips,
                    percentiles_text(&pair.percentiles)
                ),
                Err(error) => format!("wake-up round trip: not measured: {error}"),
            });
        }
        for (cpu, gaps) in self.cpus.iter().enumerate() {
            lines.push(match gaps {
                Ok(gaps) => format!(
                    "busy thread on CPU {cpu}: gaps {}; longest {:.1} ms; {:.1} % of the time taken; {:.2} % of the time more than 1 ms into a gap",
                    BUCKETS
                        .iter()
                        .zip(gaps.counts)
                        .map(|((_, name), count)| format!("{name} {count}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    gaps.longest.as_secs_f64() * 1e3,
                    gaps.lost * 100.0,
                    gaps.beyond_1ms * 100.0
                ),
                Err(error) => format!("busy thread on CPU {cpu}: not measured: {error}"),
            });
        }
        lines.push(match self.stolen_while_busy {
            Some(share) => format!(
                "stolen by the host meanwhile (steal in /proc/stat): {:.1} % of the CPUs' time",
                share * 100.0
            ),
            None => "stolen by the host: not counted by this kernel".to_owned(),
        });
        lines
    }

    /// The same, for a JSON results file.
    pub fn json(&self) -> Value {
        json!({
            "seconds_each": self.seconds,
            "wake_lateness_us": match &self.wake {
                Ok(wake) => percentiles_json(&wake.percentiles, [("wakeups", json!(wake.wakeups))]),
                Err(error) => json!({ "error": error }),
            },
            "wake_round_trip_us": self.ping_pong.iter().map(|pair| match pair {
                Ok(pair) => percentiles_json(
                    &pair.percentiles,
                    [("cpus", json!([pair.cpus.0, pair.cpus.1])), ("round_trips", json!(pair.round_trips))],
                ),
                Err(error) => json!({ "error": error }),
            }).collect::<Vec<_>>(),
            "busy_thread_gaps": self.cpus.iter().map(|gaps| match gaps {
                Ok(gaps) => json!({
                    "cpu": gaps.cpu,
                    "counts": BUCKETS.iter().zip(gaps.counts).map(|((_, name), count)| (name.to_string(), Value::from(count))).collect::<serde_json::Map<_, _>>(),
                    "longest_ms": gaps.longest.as_secs_f64() * 1e3,
                    "share_of_time_taken": gaps.lost,
                    "share_of_time_beyond_1ms_into_a_gap": gaps.beyond_1ms,
                }),
                Err(error) => json!({ "error": error }),
            }).collect::<Vec<_>>(),
            "share_of_time_stolen_while_busy": self.stolen_while_busy,
        })
    }
}

/// "p50 … µs, p99 … µs, p999 … µs, max … µs".
fn percentiles_text(percentiles: &[Duration; 4]) -> String {
    let [p50, p99, p999, max] = percentiles.map(|d| d.as_micros());
    format!("p50 {p50} µs, p99 {p99} µs, p999 {p999} µs, max {max} µs")
}

/// `fields`, then "p50", "p99", "p999" and "max" in whole microseconds.
fn percentiles_json<const N: usize>(
    percentiles: &[Duration; 4],
    fields: [(&str, Value); N],
) -> Value {
    let mut object: serde_json::Map<String, Value> = fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    for (name, value) in ["p50", "p99", "p999", "max"].into_iter().zip(percentiles) {
        object.insert(name.to_owned(), json!(value.as_micros() as u64));
    }
    Value::Object(object)
}

/// How late after each expiry of a 100 µs periodic timerfd a blocked
/// thread runs, for `duration`.
fn wake_lateness(duration: Duration) -> std::io::Result<WakeLateness> {
    let start = Instant::now();
    let timer = crate::periodic_timer(PERIOD, PERIOD, rustix::time::TimerfdFlags::empty())?;
    // Expiry k (from 1) is due no earlier than start + k × PERIOD.
    let mut expiries = 0u32;
    let mut late = Vec::with_capacity((duration.as_micros() / PERIOD.as_micros()) as usize);
    while start.elapsed() < duration {
        let mut count = [0u8; 8];
        rustix::io::read(&timer, &mut count)?;
        let now = Instant::now();
        let count = u32::try_from(u64::from_ne_bytes(count)).unwrap_or(u32::MAX);
        expiries = expiries.saturating_add(count);
        late.push(now.saturating_duration_since(start + PERIOD * expiries));
    }
    if late.is_empty() {
        return Err(std::io::Error::other("no wake-up"));
    }
    Ok(WakeLateness {
        wakeups: late.len(),
        percentiles: crate::verify::percentiles(&mut late),
    })
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

/// Round trips for `duration` between a thread on `cpus.0`, which writes a
/// byte into one pipe and blocks reading the other, and an echo thread on
/// `cpus.1`, blocked reading the first: the cost of waking a thread, twice.
fn ping_pong(cpus: (usize, usize), duration: Duration) -> std::io::Result<PingPong> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus.0.max(cpus.1) >= available {
        return Err(std::io::Error::other(format!(
            "needs CPUs {} and {}; this machine has {available}",
            cpus.0, cpus.1
        )));
    }
    let (ping_read, ping_write) = rustix::pipe::pipe()?;
    let (pong_read, pong_write) = rustix::pipe::pipe()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpus.1)?;
        let mut byte = [0u8; 1];
        // The measuring side ends the echo by closing its end (a read of 0).
        while rustix::io::read(&ping_read, &mut byte)? == 1 {
            rustix::io::write(&pong_write, &byte)?;
        }
        Ok(())
    });
    let measured = std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
        pin(cpus.0)?;
        let mut times = Vec::new();
        let start = Instant::now();
        let mut byte = [1u8; 1];
        while start.elapsed() < duration {
            let sent = Instant::now();
            rustix::io::write(&ping_write, &byte)?;
            if rustix::io::read(&pong_read, &mut byte)? != 1 {
                return Err(std::io::Error::other("the echo thread stopped"));
            }
            times.push(sent.elapsed());
        }
        drop(ping_write);
        Ok(times)
    })
    .join()
    .map_err(|_| std::io::Error::other("the measuring thread panicked"))?;
    let echoed = echo
        .join()
        .map_err(|_| std::io::Error::other("the echo thread panicked"))?;
    let mut times = measured?;
    echoed?;
    if times.is_empty() {
        return Err(std::io::Error::other("no round trip"));
    }
    Ok(PingPong {
        cpus,
        round_trips: times.len(),
        percentiles: crate::verify::percentiles(&mut times),
    })
}

/// Gaps in a busy loop pinned to `cpu`, for `duration`.
fn gaps(cpu: usize, duration: Duration) -> std::io::Result<Gaps> {
    pin(cpu)?;
    let mut counts = [0u64; 5];
    let (mut lost, mut longest, mut beyond) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let mut last = start;
    while last - start < duration {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap > Duration::from_micros(20) {
            lost += gap;
            beyond += gap.saturating_sub(Duration::from_millis(1));
            longest = longest.max(gap);
            if let Some(bucket) = BUCKETS.iter().position(|&(bound, _)| gap <= bound) {
                counts[bucket] += 1;
            }
        }
    }
    Ok(Gaps {
        cpu,
        counts,
        longest,
        lost: lost.as_secs_f64() / (last - start).as_secs_f64(),
        beyond_1ms: beyond.as_secs_f64() / (last - start).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short measurement gives a figure for every part, each sane.
    #[test]
    fn a_short_measurement_reports_every_part() {
        let noise = measure(Duration::from_millis(50));
        let wake = noise.wake.as_ref().expect("wake-up lateness");
        assert!(wake.wakeups > 0);
        assert!(wake.percentiles.windows(2).all(|w| w[0] <= w[1]));
        assert!(!noise.cpus.is_empty());
        for gaps in &noise.cpus {
            let gaps = gaps.as_ref().expect("gaps");
            assert!((0.0..=1.0).contains(&gaps.lost), "{gaps:?}");
            assert!((0.0..=gaps.lost).contains(&gaps.beyond_1ms), "{gaps:?}");
        }
        for pair in &noise.ping_pong {
            match pair {
                Ok(pair) => {
                    assert!(pair.round_trips > 0);
                    assert!(pair.percentiles.windows(2).all(|w| w[0] <= w[1]));
                    assert!(pair.percentiles[0] > Duration::ZERO, "{pair:?}");
                }
                // Only the pair across CPUs may be missing, on one CPU.
                Err(error) => assert!(noise.cpus.len() < 2, "{error}"),
            }
        }
        assert!(noise.ping_pong[1].is_ok(), "{:?}", noise.ping_pong[1]);
        assert_eq!(noise.lines().len(), 4 + noise.cpus.len());
        if let Some(share) = noise.stolen_while_busy {
            assert!((0.0..=1.0).contains(&share), "{share}");
        }
        let json = noise.json();
        assert_eq!(json["wake_round_trip_us"].as_array().map(Vec::len), Some(2));
        let on_one_cpu = &json["wake_round_trip_us"][1];
        assert_eq!(on_one_cpu["cpus"], json!([0, 0]));
        for field in ["round_trips", "p50", "p99", "p999", "max"] {
            assert!(on_one_cpu[field].is_u64(), "{field}: {on_one_cpu}");
        }
        for field in ["wakeups", "p50", "p99", "p999", "max"] {
            assert!(json["wake_lateness_us"][field].is_u64(), "{field}");
        }
        assert_eq!(
            json["busy_thread_gaps"].as_array().map(Vec::len),
            Some(noise.cpus.len())
        );
        assert_eq!(
            json["share_of_time_stolen_while_busy"].as_f64(),
            noise.stolen_while_busy
        );
    }
}
