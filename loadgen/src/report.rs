//! What a phase measured and how it is shown: per-operation HDR histograms merged
//! across connections, then quantiles, rates and counts as a text table (stdout), as
//! one JSON object (`--json`), and as the one-line progress report (stderr).
//!
//! Latencies are recorded in nanoseconds (3 significant digits, up to
//! [`LATENCY_MAX`]; longer ones count as that) and reported in microseconds. In an open-loop run every latency runs from the request's *scheduled*
//! time (`schedule.rs`); in a closed-loop run (`--max`) from when it was sent, since
//! there is no schedule.

use crate::mix::{Op, Workload};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::time::Duration;

/// The longest latency a histogram holds; a longer one is recorded as this. An hour
/// is past any run's window, so only an unsent slot of an hour-long run could reach it.
pub const LATENCY_MAX: Duration = Duration::from_secs(3600);

/// A latency histogram in nanoseconds, 3 significant digits, sized for 1 ns ..=
/// [`LATENCY_MAX`] up front (~260 KiB): it never reallocates while a phase runs (see
/// `connection.rs` on why that matters).
pub fn new_histogram() -> Histogram<u64> {
    #[expect(
        clippy::expect_used,
        reason = "fails only for bounds that do not fit, and these constants do"
    )]
    Histogram::new_with_bounds(1, LATENCY_MAX.as_nanos() as u64, 3)
        .expect("1 ns ..= 1 h at 3 significant digits is a valid histogram")
}

/// Records a duration in nanoseconds, clamped to [`LATENCY_MAX`].
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().min(u128::from(u64::MAX)) as u64);
}

/// One operation's measurements.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latencies (ns) of answered requests and, at a lower bound, of unsent slots.
    pub latency: Histogram<u64>,
    /// Requests answered (refusals included).
    pub ops: u64,
    /// Refusals among them.
    pub errors: u64,
    /// Slots due in the window but never sent (open loop).
    pub unsent: u64,
    /// Requests in flight on a connection that was lost.
    pub lost: u64,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency: new_histogram(),
            ops: 0,
            errors: 0,
            unsent: 0,
            lost: 0,
        }
    }
}

/// What a phase measured, over all connections.
#[derive(Debug, Clone)]
pub struct Stats {
    pub per_op: [OpStats; Op::COUNT],
    /// Every op's latencies together.
    pub all: Histogram<u64>,
    /// How late requests left after their slot (ns), open loop only: the generator's
    /// own lateness, or a pipeline window full of requests the server has not answered.
    /// Small when the generator keeps up, so high latency with a small send lag is the
    /// server's.
    pub send_lag: Histogram<u64>,
    /// Slots due in the measured window (open loop): what was offered.
    pub slots: u64,
    /// Slots sent later than `MISS_SLACK`, plus slots never sent.
    pub missed: u64,
    /// Requests still unanswered `DRAIN_TIMEOUT` after the window closed.
    pub timeouts: u64,
    /// Preload units refused.
    pub preload_errors: u64,
    /// Cache-aside operations whose get found the key, and found it missing (measured
    /// ones; a refused get is neither).
    pub hits: u64,
    pub misses: u64,
    /// Those of them whose key was a scan key (`--scan-every`).
    pub scan_hits: u64,
    pub scan_misses: u64,
    /// Why connections were lost.
    pub lost: Vec<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            per_op: std::array::from_fn(|_| OpStats::new()),
            all: new_histogram(),
            send_lag: new_histogram(),
            slots: 0,
            missed: 0,
            timeouts: 0,
            preload_errors: 0,
            hits: 0,
            misses: 0,
            scan_hits: 0,
            scan_misses: 0,
            lost: Vec::new(),
        }
    }

    /// A reply to a measured request, `latency` after it was due.
    pub fn record_reply(&mut self, op: Op, latency: Duration, refused: bool) {
        let s = &mut self.per_op[op as usize];
        s.ops += 1;
        s.errors += u64::from(refused);
        record(&mut s.latency, latency);
        record(&mut self.all, latency);
    }

    /// A slot never sent, `waited` from its time to the end of the window: a missed
    /// slot, in the histograms at that lower bound.
    pub fn record_unsent(&mut self, op: Op, waited: Duration) {
        let s = &mut self.per_op[op as usize];
        s.unsent += 1;
        record(&mut s.latency, waited);
        record(&mut self.all, waited);
        self.missed += 1;
    }
}

/// Quantiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let q = |q: f64| us(h.value_at_quantile(q));
        Latency {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    fn json_into(&self, m: &mut Map<String, Value>) {
        for (name, v) in [
            ("p50_us", self.p50),
            ("p90_us", self.p90),
            ("p99_us", self.p99),
            ("p999_us", self.p999),
            ("p9999_us", self.p9999),
            ("max_us", self.max),
            ("mean_us", self.mean),
        ] {
            m.insert(name.into(), json!(round1(v)));
        }
    }
}

/// One decimal: nanoseconds are noise at this scale.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One op's line of the report.
#[derive(Debug, Clone)]
pub struct OpSummary {
    pub op: Op,
    pub ops: u64,
    pub errors: u64,
    pub unsent: u64,
    pub rate: f64,
    pub latency: Latency,
}

/// What the gets of a cache-aside run found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lookups {
    pub hits: u64,
    pub misses: u64,
    /// Those of them on scan keys (`--scan-every`; counted in `hits` and `misses` too).
    pub scan_hits: u64,
    pub scan_misses: u64,
}

impl Lookups {
    /// Hits over hits and misses; `None` before the first.
    pub fn hit_ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0).then(|| self.hits as f64 / n as f64)
    }
}

/// CPU seconds used during the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// The server's (`--server-pid`), user + system.
    pub server_s: Option<f64>,
    /// The load generator's own.
    pub loadgen_s: Option<f64>,
}

/// A phase's results, ready to print.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `None` in a closed loop (`--max`): nothing is offered beyond what is answered.
    pub offered_rate: Option<f64>,
    pub achieved_rate: f64,
    pub duration: Duration,
    pub ops: u64,
    pub errors: u64,
    /// Slots due in the window (open loop).
    pub offered_slots: Option<u64>,
    pub missed_slots: u64,
    pub unsent_slots: u64,
    pub timeouts: u64,
    pub lost_requests: u64,
    pub lost_connections: Vec<String>,
    pub all: Latency,
    pub per_op: Vec<OpSummary>,
    /// Open loop only: how late requests left after their slot.
    pub send_lag: Option<Latency>,
    /// Cache-aside only.
    pub lookups: Option<Lookups>,
    pub cpu: CpuUse,
}

impl Summary {
    /// Summarises merged stats of a window of `duration`; `workload` picks which ops
    /// get a line (those it sends) and whether hits and misses are reported.
    pub fn new(
        stats: &Stats,
        workload: &Workload,
        duration: Duration,
        offered_rate: Option<f64>,
        cpu: CpuUse,
    ) -> Summary {
        let secs = duration.as_secs_f64().max(1e-9);
        let per_op: Vec<OpSummary> = workload
            .ops()
            .map(|op| {
                let s = &stats.per_op[op as usize];
                OpSummary {
                    op,
                    ops: s.ops,
                    errors: s.errors,
                    unsent: s.unsent,
                    rate: s.ops as f64 / secs,
                    latency: Latency::of(&s.latency),
                }
            })
            .collect();
        let sum = |f: fn(&OpStats) -> u64| stats.per_op.iter().map(f).sum::<u64>();
        let ops = sum(|s| s.ops);
        Summary {
            offered_rate,
            achieved_rate: ops as f64 / secs,
            duration,
            ops,
            errors: sum(|s| s.errors),
            offered_slots: offered_rate.map(|_| stats.slots),
            missed_slots: stats.missed,
            unsent_slots: sum(|s| s.unsent),
            timeouts: stats.timeouts,
            lost_requests: sum(|s| s.lost),
            lost_connections: stats.lost.clone(),
            all: Latency::of(&stats.all),
            per_op,
            send_lag: offered_rate.map(|_| Latency::of(&stats.send_lag)),
            lookups: workload.is_cache_aside().then_some(Lookups {
                hits: stats.hits,
                misses: stats.misses,
                scan_hits: stats.scan_hits,
                scan_misses: stats.scan_misses,
            }),
            cpu,
        }
    }

    pub fn ops_per_server_cpu_s(&self) -> Option<f64> {
        self.cpu
            .server_s
            .filter(|&s| s > 0.0)
            .map(|s| self.ops as f64 / s)
    }

    /// The text report: a headline, then one row per op (and "all"), in µs.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let offered = match (self.offered_rate, self.offered_slots) {
            (Some(r), Some(n)) => format!("offered {r:.1} ops/s ({n} slots), "),
            (Some(r), None) => format!("offered {r:.1} ops/s, "),
            (None, _) => "closed loop, ".into(),
        };
        let missed = if self.offered_rate.is_some() {
            format!(
                ", {} missed slots ({} unsent)",
                self.missed_slots, self.unsent_slots
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{offered}achieved {:.1} ops/s over {:.3} s: {} ops, {} errors{missed}, {} timeouts",
            self.achieved_rate,
            self.duration.as_secs_f64(),
            self.ops,
            self.errors,
            self.timeouts,
        );
        let from = if self.offered_rate.is_some() {
            "from each request's scheduled send time"
        } else {
            "from each request's send"
        };
        let _ = writeln!(out, "latency in µs, {from}:");
        let _ = writeln!(
            out,
            "{:<6} {:>10} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "ops", "ops/s", "errors", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let row = |out: &mut String, name: &str, ops: u64, rate: f64, errors: u64, l: &Latency| {
            let _ = writeln!(
                out,
                "{name:<6} {ops:>10} {rate:>11.1} {errors:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
            );
        };
        row(
            &mut out,
            "all",
            self.ops,
            self.achieved_rate,
            self.errors,
            &self.all,
        );
        for s in &self.per_op {
            row(&mut out, s.op.name(), s.ops, s.rate, s.errors, &s.latency);
        }
        if let Some(l) = &self.lookups {
            let ratio = l
                .hit_ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.4}"));
            let scans = l.scan_hits + l.scan_misses;
            let scan = if scans > 0 {
                format!(
                    "; {scans} of the operations were on scan keys ({} missed)",
                    l.scan_misses
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "cache-aside: {} operations, {} hits, {} misses (each followed by a set), hit ratio {ratio}{scan}",
                l.hits + l.misses,
                l.hits,
                l.misses
            );
        }
        if let Some(lag) = &self.send_lag {
            let _ = writeln!(
                out,
                "send lag (slot time to send: the generator's lateness, or a full window) µs: p50 {:.1}, p99 {:.1}, max {:.1}",
                lag.p50, lag.p99, lag.max
            );
        }
        match (self.cpu.server_s, self.ops_per_server_cpu_s()) {
            (Some(s), Some(per)) => {
                let _ = writeln!(
                    out,
                    "server cpu {s:.2} s: {per:.0} ops per server cpu-second"
                );
            }
            (Some(s), None) => {
                let _ = writeln!(out, "server cpu {s:.2} s");
            }
            _ => {}
        }
        if let Some(s) = self.cpu.loadgen_s {
            let _ = writeln!(out, "loadgen cpu {s:.2} s");
        }
        if self.lost_requests > 0 || !self.lost_connections.is_empty() {
            let _ = writeln!(
                out,
                "{} connections lost ({} requests in flight): {}",
                self.lost_connections.len(),
                self.lost_requests,
                self.lost_connections.join("; ")
            );
        }
        out
    }

    /// The JSON object: the fields of the text report, per op under `per_op`.
    pub fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "offered_rate".into(),
            self.offered_rate.map_or(Value::Null, |r| json!(round1(r))),
        );
        m.insert("achieved_rate".into(), json!(round1(self.achieved_rate)));
        m.insert("duration_s".into(), json!(self.duration.as_secs_f64()));
        m.insert("ops".into(), json!(self.ops));
        m.insert("errors".into(), json!(self.errors));
        m.insert(
            "offered_slots".into(),
            self.offered_slots.map_or(Value::Null, |n| json!(n)),
        );
        m.insert("missed_slots".into(), json!(self.missed_slots));
        m.insert("unsent_slots".into(), json!(self.unsent_slots));
        m.insert("timeouts".into(), json!(self.timeouts));
        m.insert("lost_requests".into(), json!(self.lost_requests));
        m.insert(
            "lost_connections".into(),
            json!(self.lost_connections.len()),
        );
        self.all.json_into(&mut m);
        let mut per_op = Map::new();
        for s in &self.per_op {
            let mut o = Map::new();
            o.insert("ops".into(), json!(s.ops));
            o.insert("errors".into(), json!(s.errors));
            o.insert("unsent_slots".into(), json!(s.unsent));
            o.insert("achieved_rate".into(), json!(round1(s.rate)));
            s.latency.json_into(&mut o);
            per_op.insert(s.op.name().into(), Value::Object(o));
        }
        m.insert("per_op".into(), Value::Object(per_op));
        if let Some(l) = &self.lookups {
            m.insert("hits".into(), json!(l.hits));
            m.insert("misses".into(), json!(l.misses));
            m.insert(
                "hit_ratio".into(),
                l.hit_ratio().map_or(Value::Null, |r| json!(r)),
            );
            m.insert("scan_gets".into(), json!(l.scan_hits + l.scan_misses));
            m.insert("scan_misses".into(), json!(l.scan_misses));
        }
        if let Some(lag) = &self.send_lag {
            m.insert("send_lag_p99_us".into(), json!(round1(lag.p99)));
            m.insert("send_lag_max_us".into(), json!(round1(lag.max)));
        }
        let opt = |x: Option<f64>| x.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0));
        m.insert("server_cpu_s".into(), opt(self.cpu.server_s));
        m.insert(
            "ops_per_server_cpu_s".into(),
            self.ops_per_server_cpu_s()
                .map_or(Value::Null, |v| json!(v.round())),
        );
        m.insert("loadgen_cpu_s".into(), opt(self.cpu.loadgen_s));
        m
    }
}

/// The progress line (stderr, once a second).
pub fn progress_line(
    label: &str,
    elapsed: Duration,
    replies_last_second: u64,
    errors: u64,
    p99_ns: Option<u64>,
) -> String {
    let p99 = match p99_ns {
        Some(ns) => format!("{:.1} µs", us(ns)),
        None => "-".into(),
    };
    format!(
        "[{label} {:>5.1}s] {replies_last_second} ops in the last second, {errors} errors, p99 so far {p99}",
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Mix;

    #[test]
    fn summary_reports_quantiles_counts_and_rates() {
        let mix = Workload::Mix(Mix::parse("get=1,set=1").unwrap());
        let mut a = Stats::new();
        for v in 1..=100u64 {
            a.record_reply(Op::Get, Duration::from_micros(v), false);
        }
        a.record_reply(Op::Set, Duration::from_millis(5), true);
        a.missed = 1;
        a.record_unsent(Op::Set, Duration::from_millis(1));
        a.record_unsent(Op::Set, Duration::from_millis(1));
        // Past the histogram's range: clamped, not lost.
        a.record_unsent(Op::Get, LATENCY_MAX * 2);
        let cpu = CpuUse {
            server_s: Some(0.5),
            loadgen_s: None,
        };
        let s = Summary::new(&a, &mix, Duration::from_secs(2), Some(60.0), cpu);
        assert_eq!(s.ops, 101);
        assert_eq!(s.errors, 1);
        assert_eq!(s.missed_slots, 4);
        assert_eq!(s.unsent_slots, 3);
        assert!((s.achieved_rate - 50.5).abs() < 1e-9);
        assert_eq!(s.per_op.len(), 2);
        assert!(
            (s.per_op[0].latency.p50 - 51.0).abs() < 0.1,
            "{:?}",
            s.per_op[0]
        );
        let hour_us = LATENCY_MAX.as_secs_f64() * 1e6;
        assert!(
            (s.all.max - hour_us).abs() / hour_us < 0.001,
            "{}",
            s.all.max
        );
        assert!((s.per_op[1].latency.max - 5000.0).abs() < 5.0);
        assert_eq!(s.ops_per_server_cpu_s(), Some(202.0));

        let j = Value::Object(s.json());
        for key in [
            "achieved_rate",
            "offered_rate",
            "ops",
            "errors",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "p9999_us",
            "max_us",
            "missed_slots",
            "server_cpu_s",
            "ops_per_server_cpu_s",
        ] {
            assert!(j.get(key).is_some(), "{key} missing from {j}");
        }
        assert_eq!(j["per_op"]["get"]["ops"], 100);
        assert_eq!(j["per_op"]["get"]["unsent_slots"], 1);
        assert_eq!(j["per_op"]["set"]["errors"], 1);
        assert!(
            j["per_op"].get("add").is_none(),
            "ops outside the mix are left out"
        );
        let text = s.text();
        assert!(text.contains("offered 60.0 ops/s"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("get ")), "{text}");
        assert!(j.get("hits").is_none(), "no hits outside cache-aside: {j}");
        assert!(!text.contains("hit ratio"), "{text}");
    }

    #[test]
    fn cache_aside_summaries_report_hits_misses_and_the_ratio() {
        let mut a = Stats::new();
        for _ in 0..3 {
            a.record_reply(Op::Get, Duration::from_micros(10), false);
        }
        a.record_reply(Op::Set, Duration::from_micros(20), false);
        (a.hits, a.misses) = (2, 1);
        // The miss was a scan key's (`--scan-every`).
        (a.scan_hits, a.scan_misses) = (0, 1);
        let s = Summary::new(
            &a,
            &Workload::CacheAside,
            Duration::from_secs(1),
            None,
            CpuUse::default(),
        );
        assert_eq!(
            s.lookups,
            Some(Lookups {
                hits: 2,
                misses: 1,
                scan_hits: 0,
                scan_misses: 1
            })
        );
        assert_eq!(s.ops, 4, "ops counts requests: the gets and the set");
        let ops: Vec<Op> = s.per_op.iter().map(|o| o.op).collect();
        assert_eq!(ops, [Op::Get, Op::Set]);
        let j = Value::Object(s.json());
        assert_eq!((&j["hits"], &j["misses"]), (&json!(2), &json!(1)));
        assert!((j["hit_ratio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((&j["scan_gets"], &j["scan_misses"]), (&json!(1), &json!(1)));
        assert!(s.text().contains(
            "3 operations, 2 hits, 1 misses (each followed by a set), hit ratio 0.6667; \
             1 of the operations were on scan keys (1 missed)\n"
        ));
        let none = Summary::new(
            &Stats::new(),
            &Workload::CacheAside,
            Duration::from_secs(1),
            None,
            CpuUse::default(),
        );
        let j = Value::Object(none.json());
        assert_eq!(j["hit_ratio"], Value::Null);
        assert_eq!((&j["scan_gets"], &j["scan_misses"]), (&json!(0), &json!(0)));
        assert!(
            !none.text().contains("scan"),
            "no scan, no word of it: {}",
            none.text()
        );
    }

    #[test]
    fn empty_and_closed_loop_summaries_are_well_formed() {
        let mix = Workload::Mix(Mix::parse("ping=1").unwrap());
        let s = Summary::new(
            &Stats::new(),
            &mix,
            Duration::from_secs(1),
            None,
            CpuUse::default(),
        );
        assert_eq!(s.all, Latency::default());
        let j = Value::Object(s.json());
        assert_eq!(j["offered_rate"], Value::Null);
        assert_eq!(j["server_cpu_s"], Value::Null);
        assert!(j.get("send_lag_p99_us").is_none());
        assert!(s.text().contains("closed loop"));
    }
}
