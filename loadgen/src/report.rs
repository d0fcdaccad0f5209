//! What a phase measured and how it is shown: per-operation HDR histograms merged
//! across connections, then quantiles, rates and counts as a text table (stdout), as
//! one JSON object (`--json`), and as the one-line progress report (stderr).
//!
//! Latencies are recorded in nanoseconds (3 significant digits) and reported in
//! microseconds. In an open-loop run every latency runs from the request's *scheduled*
//! time (`schedule.rs`); in a closed-loop run (`--max`) from when it was sent, since
//! there is no schedule.

use crate::connection::new_histogram;
use crate::mix::{Mix, Op};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::time::Duration;

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

    fn merge(&mut self, other: &OpStats) {
        // Auto-resizing histograms add without range errors.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.errors += other.errors;
        self.unsent += other.unsent;
        self.lost += other.lost;
    }
}

/// What one connection (or, merged, a whole phase) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub per_op: [OpStats; Op::COUNT],
    /// How late requests left after their slot (ns), open loop only: the generator's
    /// own timeliness, to tell its lateness from the server's.
    pub send_lag: Histogram<u64>,
    /// Slots sent later than `MISS_SLACK`, plus slots never sent.
    pub missed: u64,
    /// Requests still unanswered `DRAIN_TIMEOUT` after the window closed.
    pub timeouts: u64,
    /// Preload units refused.
    pub preload_errors: u64,
    /// Why connections were lost.
    pub lost: Vec<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            per_op: std::array::from_fn(|_| OpStats::new()),
            send_lag: new_histogram(),
            missed: 0,
            timeouts: 0,
            preload_errors: 0,
            lost: Vec::new(),
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.per_op.iter_mut().zip(&other.per_op) {
            mine.merge(theirs);
        }
        let _ = self.send_lag.add(&other.send_lag);
        self.missed += other.missed;
        self.timeouts += other.timeouts;
        self.preload_errors += other.preload_errors;
        self.lost.extend(other.lost.iter().cloned());
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
    pub missed_slots: u64,
    pub unsent_slots: u64,
    pub timeouts: u64,
    pub lost_requests: u64,
    pub lost_connections: Vec<String>,
    pub all: Latency,
    pub per_op: Vec<OpSummary>,
    /// Open loop only: how late requests left after their slot.
    pub send_lag: Option<Latency>,
    pub cpu: CpuUse,
}

impl Summary {
    /// Summarises merged stats of a window of `duration`; `mix` picks which ops get a
    /// line (those with a positive weight).
    pub fn new(
        stats: &Stats,
        mix: &Mix,
        duration: Duration,
        offered_rate: Option<f64>,
        cpu: CpuUse,
    ) -> Summary {
        let secs = duration.as_secs_f64().max(1e-9);
        let mut all = new_histogram();
        for s in &stats.per_op {
            let _ = all.add(&s.latency);
        }
        let per_op: Vec<OpSummary> = mix
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
            missed_slots: stats.missed,
            unsent_slots: sum(|s| s.unsent),
            timeouts: stats.timeouts,
            lost_requests: sum(|s| s.lost),
            lost_connections: stats.lost.clone(),
            all: Latency::of(&all),
            per_op,
            send_lag: offered_rate.map(|_| Latency::of(&stats.send_lag)),
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
        let offered = match self.offered_rate {
            Some(r) => format!("offered {r:.1} ops/s, "),
            None => "closed loop, ".into(),
        };
        let _ = writeln!(
            out,
            "{offered}achieved {:.1} ops/s over {:.1} s: {} ops, {} errors, {} missed slots ({} unsent), {} timeouts",
            self.achieved_rate,
            self.duration.as_secs_f64(),
            self.ops,
            self.errors,
            self.missed_slots,
            self.unsent_slots,
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
        if let Some(lag) = &self.send_lag {
            let _ = writeln!(
                out,
                "send lag (generator's own lateness) µs: p50 {:.1}, p99 {:.1}, max {:.1}",
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
        m.insert(
            "duration_s".into(),
            json!(self.duration.as_secs_f64()),
        );
        m.insert("ops".into(), json!(self.ops));
        m.insert("errors".into(), json!(self.errors));
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
        if let Some(lag) = &self.send_lag {
            m.insert("send_lag_p99_us".into(), json!(round1(lag.p99)));
            m.insert("send_lag_max_us".into(), json!(round1(lag.max)));
        }
        let opt = |x: Option<f64>| x.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0));
        m.insert("server_cpu_s".into(), opt(self.cpu.server_s));
        m.insert(
            "ops_per_server_cpu_s".into(),
            self.ops_per_server_cpu_s().map_or(Value::Null, |v| json!(v.round())),
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

    #[test]
    fn summary_merges_connections_and_reports_quantiles() {
        let mix = Mix::parse("get=1,set=1").unwrap();
        let mut a = Stats::new();
        let mut b = Stats::new();
        for v in 1..=100u64 {
            a.per_op[Op::Get as usize].latency.record(v * 1000).unwrap();
            a.per_op[Op::Get as usize].ops += 1;
        }
        b.per_op[Op::Set as usize].latency.record(5_000_000).unwrap();
        b.per_op[Op::Set as usize].ops += 1;
        b.per_op[Op::Set as usize].errors += 1;
        b.missed = 3;
        b.per_op[Op::Set as usize].unsent = 2;
        a.merge(&b);
        let cpu = CpuUse {
            server_s: Some(0.5),
            loadgen_s: None,
        };
        let s = Summary::new(&a, &mix, Duration::from_secs(2), Some(60.0), cpu);
        assert_eq!(s.ops, 101);
        assert_eq!(s.errors, 1);
        assert_eq!(s.missed_slots, 3);
        assert_eq!(s.unsent_slots, 2);
        assert!((s.achieved_rate - 50.5).abs() < 1e-9);
        assert_eq!(s.per_op.len(), 2);
        assert!((s.per_op[0].latency.p50 - 50.0).abs() < 0.1, "{:?}", s.per_op[0]);
        assert!((s.all.max - 5000.0).abs() < 5.0);
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
        assert_eq!(j["per_op"]["set"]["errors"], 1);
        assert!(j["per_op"].get("add").is_none(), "ops outside the mix are left out");
        let text = s.text();
        assert!(text.contains("offered 60.0 ops/s"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("get ")), "{text}");
    }

    #[test]
    fn empty_and_closed_loop_summaries_are_well_formed() {
        let mix = Mix::parse("ping=1").unwrap();
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
