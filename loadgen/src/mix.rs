//! The operations a run sends and the weighted mix they are drawn from
//! (`--mix get=80,set=15,add=3,range=1,label=1,ping=0`), or the cache-aside workload
//! (`--cache-aside`) that takes the mix's place.
//!
//! What each operation is on the wire lives in the drivers (`ampd.rs`, `resp.rs`);
//! this module only names them, so histograms, reports and drivers agree on the list.

use crate::keys::Rng;
use std::fmt;

/// One kind of measured request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read one key.
    Get,
    /// Write one key (value and label1).
    Set,
    /// Add 1 to the key's counter.
    Add,
    /// The first 10 keys of the namespace from the key on (`ns:>=k{i}`, limit 10).
    Range,
    /// The first 10 keys of the namespace whose label1 is the key's label.
    Label,
    /// A round trip that touches no data.
    Ping,
}

impl Op {
    /// Every op, in report order; `op as usize` indexes per-op arrays.
    pub const ALL: [Op; 6] = [Op::Get, Op::Set, Op::Add, Op::Range, Op::Label, Op::Ping];
    pub const COUNT: usize = Op::ALL.len();

    pub const fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Add => "add",
            Op::Range => "range",
            Op::Label => "label",
            Op::Ping => "ping",
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the op reads a key's value or index (so needs `--preload` to find data).
    pub fn reads(self) -> bool {
        matches!(self, Op::Get | Op::Range | Op::Label)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Integer weights per op; each request draws an op with probability weight / total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; Op::COUNT],
    total: u64,
}

/// A weight above this is surely a typo (and keeps the total far from overflow).
pub const WEIGHT_MAX: u32 = 1_000_000;

/// The default mix: mostly reads, as the data API's users do.
pub const MIX_DEFAULT: &str = "get=80,set=15,add=3,range=1,label=1,ping=0";

impl Mix {
    /// Parses `op=weight,...`. Ops not named weigh 0; at least one weight must be
    /// positive; an unknown op, a repeated op or a bad number is an error naming it.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut weights = [0u32; Op::COUNT];
        let mut named = [false; Op::COUNT];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not op=weight"))?;
            let op = Op::from_name(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
                format!("unknown op {:?} (known: {})", name.trim(), known.join(", "))
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|e| format!("weight of {op} {:?}: {e}", weight.trim()))?;
            if weight > WEIGHT_MAX {
                return Err(format!("weight of {op} is {weight}, limit {WEIGHT_MAX}"));
            }
            if std::mem::replace(&mut named[op as usize], true) {
                return Err(format!("{op} is named twice"));
            }
            weights[op as usize] = weight;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err(format!("{text:?} gives no op a positive weight"));
        }
        Ok(Mix { weights, total })
    }

    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op as usize]
    }

    /// Ops with a positive weight, in report order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|&op| self.weight(op) > 0)
    }

    pub fn pick(&self, rng: &mut Rng) -> Op {
        let mut x = rng.below(self.total);
        for op in Op::ALL {
            let w = u64::from(self.weights[op as usize]);
            if x < w {
                return op;
            }
            x -= w;
        }
        unreachable!("a draw below the total weight falls on some op")
    }
}

/// What each operation of a run sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// One request, its op drawn from the mix.
    Mix(Mix),
    /// A get of the key and, when the reply says the key is missing, a set of it
    /// (`--cache-aside`): the operation is a hit or a miss by its get, and the set is
    /// a set like any other (sent after the get's reply, on the same connection).
    CacheAside,
}

impl Workload {
    /// The request an operation starts with.
    pub fn pick(&self, rng: &mut Rng) -> Op {
        match self {
            Workload::Mix(m) => m.pick(rng),
            Workload::CacheAside => Op::Get,
        }
    }

    /// Ops this workload sends, in report order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(move |&op| match self {
            Workload::Mix(m) => m.weight(op) > 0,
            Workload::CacheAside => matches!(op, Op::Get | Op::Set),
        })
    }

    pub fn is_cache_aside(&self) -> bool {
        matches!(self, Workload::CacheAside)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Mix(m) => write!(f, "mix {m}"),
            Workload::CacheAside => f.write_str("cache-aside (get, then set on a miss)"),
        }
    }
}

impl fmt::Display for Mix {
    /// The canonical form: every op with a positive weight, in report order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ops()
            .map(|op| format!("{op}={}", self.weight(op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_and_canonicalises() {
        let m = Mix::parse(MIX_DEFAULT).unwrap();
        assert_eq!(m.weight(Op::Get), 80);
        assert_eq!(m.weight(Op::Ping), 0);
        assert_eq!(m.to_string(), "get=80,set=15,add=3,range=1,label=1");
        let m = Mix::parse(" set = 1 , get=3,").unwrap();
        assert_eq!(m.to_string(), "get=3,set=1");
        assert_eq!(m.ops().collect::<Vec<_>>(), [Op::Get, Op::Set]);
    }

    #[test]
    fn refuses_bad_mixes_with_a_reason() {
        for (text, why) in [
            ("get=1,put=2", "unknown op \"put\""),
            ("get=1,get=2", "get is named twice"),
            ("get", "is not op=weight"),
            ("get=x", "weight of get"),
            ("get=-1", "weight of get"),
            ("get=0,set=0", "no op a positive weight"),
            ("", "no op a positive weight"),
            ("get=2000000", "limit 1000000"),
        ] {
            let err = Mix::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn cache_aside_starts_every_operation_with_a_get_and_reports_get_and_set() {
        let w = Workload::CacheAside;
        let mut rng = Rng::new(3, 0);
        assert!((0..1000).all(|_| w.pick(&mut rng) == Op::Get));
        assert_eq!(w.ops().collect::<Vec<_>>(), [Op::Get, Op::Set]);
        let m = Workload::Mix(Mix::parse("ping=1,add=2").unwrap());
        assert_eq!(m.ops().collect::<Vec<_>>(), [Op::Add, Op::Ping]);
        assert_eq!(m.to_string(), "mix add=2,ping=1");
        assert!(w.is_cache_aside() && !m.is_cache_aside());
    }

    #[test]
    fn picks_follow_the_weights() {
        let m = Mix::parse("get=6,set=3,ping=1").unwrap();
        let mut rng = Rng::new(3, 0);
        let mut counts = [0u32; Op::COUNT];
        for _ in 0..100_000 {
            counts[m.pick(&mut rng) as usize] += 1;
        }
        let share = |op: Op| counts[op as usize] as f64 / 100_000.0;
        assert!((share(Op::Get) - 0.6).abs() < 0.01);
        assert!((share(Op::Set) - 0.3).abs() < 0.01);
        assert!((share(Op::Ping) - 0.1).abs() < 0.01);
        assert_eq!(counts[Op::Add as usize], 0);
        assert_eq!(counts[Op::Range as usize], 0);
    }
}
