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
}

/// Both measurements; a part that could not be measured says why.
#[derive(Debug, Clone)]
pub struct Noise {
    pub seconds: f64,
    pub wake: Result<WakeLateness, String>,
    pub cpus: Vec<Result<Gaps, String>>,
}

/// Measures for `duration` each: first the wake-up lateness, then one busy
/// thread per CPU at once.
pub fn measure(duration: Duration) -> Noise {
    let wake = wake_lateness(duration).map_err(|e| e.to_string());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners: Vec<_> = (0..cpus)
        .map(|cpu| std::thread::spawn(move || gaps(cpu, duration)))
        .collect();
    let cpus = spinners
        .into_iter()
        .map(|spinner| match spinner.join() {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the busy thread panicked".to_owned()),
        })
        .collect();
    Noise {
        seconds: duration.as_secs_f64(),
        wake,
        cpus,
    }
}

impl Noise {
    /// What to print, a line per measurement.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![match &self.wake {
            Ok(wake) => format!(
                "idle thread woken every 100 µs by a timerfd ({} wake-ups): lateness p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
                wake.wakeups,
                wake.percentiles[0].as_micros(),
                wake.percentiles[1].as_micros(),
                wake.percentiles[2].as_micros(),
                wake.percentiles[3].as_micros()
            ),
            Err(error) => format!("wake-up lateness: not measured: {error}"),
        }];
        for (cpu, gaps) in self.cpus.iter().enumerate() {
            lines.push(match gaps {
                Ok(gaps) => format!(
                    "busy thread on CPU {cpu}: gaps {}; longest {:.1} ms; {:.1} % of the time taken",
                    BUCKETS
                        .iter()
                        .zip(gaps.counts)
                        .map(|((_, name), count)| format!("{name} {count}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    gaps.longest.as_secs_f64() * 1e3,
                    gaps.lost * 100.0
                ),
                Err(error) => format!("busy thread on CPU {cpu}: not measured: {error}"),
            });
        }
        lines
    }

    /// The same, for a JSON results file.
    pub fn json(&self) -> Value {
        json!({
            "seconds_each": self.seconds,
            "wake_lateness_us": match &self.wake {
                Ok(wake) => json!({
                    "wakeups": wake.wakeups,
                    "p50": wake.percentiles[0].as_micros() as u64,
                    "p99": wake.percentiles[1].as_micros() as u64,
                    "p999": wake.percentiles[2].as_micros() as u64,
                    "max": wake.percentiles[3].as_micros() as u64,
                }),
                Err(error) => json!({ "error": error }),
            },
            "busy_thread_gaps": self.cpus.iter().map(|gaps| match gaps {
                Ok(gaps) => json!({
                    "cpu": gaps.cpu,
                    "counts": BUCKETS.iter().zip(gaps.counts).map(|((_, name), count)| (name.to_string(), Value::from(count))).collect::<serde_json::Map<_, _>>(),
                    "longest_ms": gaps.longest.as_secs_f64() * 1e3,
                    "share_of_time_taken": gaps.lost,
                }),
                Err(error) => json!({ "error": error }),
            }).collect::<Vec<_>>(),
        })
    }
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

/// Gaps in a busy loop pinned to `cpu`, for `duration`.
fn gaps(cpu: usize, duration: Duration) -> std::io::Result<Gaps> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
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
        }
        assert_eq!(noise.lines().len(), 1 + noise.cpus.len());
        assert_eq!(
            noise.json()["busy_thread_gaps"].as_array().map(Vec::len),
            Some(noise.cpus.len())
        );
    }
}
