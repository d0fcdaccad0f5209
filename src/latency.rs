//! Service time per operation, measured by the server: from the moment it starts
//! decoding the input that holds the request to the moment the answer is encoded (for
//! a write, that includes the hop to its shard and the WAL's fsync). Requests that
//! arrived together share the first moment, so a pipelined request's time includes
//! its wait behind the ones before it, and the clock is read once per request rather
//! than twice (two reads were 4.9% of the server's CPU at pipeline depth 16). `stats`
//! reports it, so a user can see where time goes without a profiler.
//!
//! Each executor records into its own histograms (behind a mutex that only a `stats`
//! request ever contends for); `stats` merges them.

use ampd_wire::frame::Opcode;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest service time recorded as itself; longer ones count as this.
const RECORDED_NS_MAX: u64 = 60_000_000_000;
/// Two significant figures: percentiles within 1%, 32 KiB per histogram.
const SIGNIFICANT_FIGURES: u8 = 2;

/// One executor's histograms, one per opcode (in `Opcode::ALL` order), in nanoseconds.
pub struct OpLatencies {
    by_op: Vec<Histogram<u64>>,
}

/// One executor's histograms, shared with `stats`.
pub type Shared = Arc<Mutex<OpLatencies>>;

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, RECORDED_NS_MAX, SIGNIFICANT_FIGURES)
        .unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

impl OpLatencies {
    pub fn shared() -> Shared {
        Arc::new(Mutex::new(OpLatencies {
            by_op: Opcode::ALL.iter().map(|_| histogram()).collect(),
        }))
    }

    pub fn record(&mut self, op: Opcode, elapsed: Duration) {
        if let Some(i) = Opcode::ALL.iter().position(|o| *o == op) {
            self.by_op[i].saturating_record(elapsed.as_nanos().min(RECORDED_NS_MAX as u128) as u64);
        }
    }
}

/// Records into `latencies`; a poisoned lock (a panic while recording) only loses the
/// sample.
pub fn record(latencies: &Shared, op: Opcode, elapsed: Duration) {
    if let Ok(mut l) = latencies.lock() {
        l.record(op, elapsed);
    }
}

/// Every executor's histograms merged: `{"get": {"count", "p50_us", "p90_us",
/// "p99_us", "p999_us", "max_us"}, ...}` for each operation seen.
pub fn summary(all: &[Shared]) -> Value {
    let mut merged: Vec<Histogram<u64>> = Opcode::ALL.iter().map(|_| histogram()).collect();
    for executor in all {
        if let Ok(l) = executor.lock() {
            for (m, h) in merged.iter_mut().zip(&l.by_op) {
                // Same bounds on both sides: adding cannot fail.
                let _ = m.add(h);
            }
        }
    }
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    let mut ops = Map::new();
    for (op, h) in Opcode::ALL.iter().zip(&merged) {
        if h.is_empty() {
            continue;
        }
        ops.insert(
            op.as_str().to_owned(),
            json!({
                "count": h.len(),
                "p50_us": us(h.value_at_quantile(0.5)),
                "p90_us": us(h.value_at_quantile(0.9)),
                "p99_us": us(h.value_at_quantile(0.99)),
                "p999_us": us(h.value_at_quantile(0.999)),
                "max_us": us(h.max()),
            }),
        );
    }
    Value::Object(ops)
}
