//! The values that sets (and preloads) write.
//!
//! By default every set writes the same value: `--value-size` ASCII letters drawn from
//! the seed (not one repeated byte, so nothing on the way can compress it to nothing).
//! With `--value-size-range MIN-MAX` each set writes a prefix of one such text of MAX
//! letters, its length drawn log-uniform between MIN and MAX: every doubling of size
//! is as likely as the next (as many values of 64 to 128 bytes as of 32 to 64 KiB),
//! which is how a cache's mixed traffic churns its memory. Each connection draws the
//! lengths from a random stream of its own, so a seed gives the same sizes every run;
//! a value is a slice of the shared text, so drawing one allocates nothing.

use crate::keys::Rng;
use std::sync::Arc;

/// Mixed into the seed of a connection's length stream, so that its lengths do not
/// follow its key choices (drawn from the same seed and connection).
const LENGTH_SEED_SALT: u64 = 0x7A1E_5175_E5EE_D001;

/// The values of a run: one text, and the range of lengths drawn from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// MAX letters; a value is a prefix of it.
    text: Arc<str>,
    /// The shortest value; equal to the text's length when every value is the same.
    min: usize,
}

impl Values {
    /// Every value `size` letters from `seed`.
    pub fn fixed(size: usize, seed: u64) -> Values {
        Values::log_uniform(size, size, seed)
    }

    /// Lengths log-uniform over `min..=max` (`min` at least 1, or `min == max`).
    pub fn log_uniform(min: usize, max: usize, seed: u64) -> Values {
        assert!(
            min <= max && (min >= 1 || min == max),
            "value lengths {min}..={max}"
        );
        let mut rng = Rng::new(seed, u64::MAX);
        let text: String = (0..max)
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect();
        Values {
            text: text.into(),
            min,
        }
    }

    pub fn min(&self) -> usize {
        self.min
    }

    pub fn max(&self) -> usize {
        self.text.len()
    }

    /// Whether every value is the same.
    pub fn is_fixed(&self) -> bool {
        self.min == self.max()
    }

    /// Connection `connection`'s source of values.
    pub fn source(&self, seed: u64, connection: u64) -> ValueSource {
        ValueSource {
            text: self.text.clone(),
            min: self.min,
            rng: Rng::new(seed ^ LENGTH_SEED_SALT, connection),
        }
    }

    /// For the headline: `100-byte values`, `64..65536-byte values (log-uniform)`.
    pub fn describe(&self) -> String {
        if self.is_fixed() {
            format!("{}-byte values", self.max())
        } else {
            format!("{}..{}-byte values (log-uniform)", self.min, self.max())
        }
    }
}

/// One connection's values: the shared text and its own stream of lengths.
#[derive(Debug, Clone)]
pub struct ValueSource {
    text: Arc<str>,
    min: usize,
    rng: Rng,
}

impl ValueSource {
    /// Whether every value is the same (then a template may keep its value).
    pub fn is_fixed(&self) -> bool {
        self.min == self.text.len()
    }

    /// The next set's value.
    pub fn next_value(&mut self) -> &str {
        let max = self.text.len();
        let len = if self.is_fixed() {
            max
        } else {
            // min × ((max + 1) / min)^u for u uniform in [0, 1) is log-uniform over
            // [min, max + 1); its floor falls in min..=max (the clamp only guards the
            // rounding of powf).
            let span = (max + 1) as f64 / self.min as f64;
            let x = self.min as f64 * span.powf(self.rng.unit());
            (x as usize).clamp(self.min, max)
        };
        // ASCII: every index is a character boundary.
        &self.text[..len]
    }
}

#[cfg(test)]
impl ValueSource {
    /// Every value `text` (for the encoders' tests).
    pub fn constant(text: &str) -> ValueSource {
        ValueSource {
            text: text.into(),
            min: text.len(),
            rng: Rng::new(0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_size_is_every_value_and_the_text_of_the_seed() {
        let values = Values::fixed(100, 1);
        assert!(values.is_fixed());
        assert_eq!(values.describe(), "100-byte values");
        let mut source = values.source(1, 0);
        let first = source.next_value().to_owned();
        assert_eq!(first.len(), 100);
        assert!(first.bytes().all(|b| b.is_ascii_lowercase()));
        assert_eq!(source.next_value(), first);
        assert_eq!(
            Values::fixed(100, 1),
            values,
            "the same seed, the same text"
        );
        assert_ne!(Values::fixed(100, 2), values);
        assert_eq!(Values::fixed(0, 1).source(1, 0).next_value(), "");
    }

    #[test]
    fn ranged_lengths_stay_within_the_range_and_spread_log_uniformly() {
        let (min, max) = (64, 64 * 1024);
        let values = Values::log_uniform(min, max, 1);
        assert_eq!(values.describe(), "64..65536-byte values (log-uniform)");
        let mut source = values.source(1, 0);
        // Ten doublings from 64 B to 64 KiB: each gets about a tenth of the draws.
        let draws = 100_000;
        let mut per_doubling = [0u32; 10];
        let (mut shortest, mut longest) = (usize::MAX, 0);
        for _ in 0..draws {
            let len = source.next_value().len();
            assert!((min..=max).contains(&len), "{len}");
            shortest = shortest.min(len);
            longest = longest.max(len);
            let doubling = (len / min).ilog2().min(9) as usize;
            per_doubling[doubling] += 1;
        }
        for (i, n) in per_doubling.iter().enumerate() {
            assert!(
                (9_000..11_000).contains(n),
                "doubling {i}: {per_doubling:?}"
            );
        }
        assert!(
            shortest < min + 8 && longest > max - 64,
            "{shortest}..{longest}"
        );
    }

    #[test]
    fn each_connection_draws_its_own_lengths_the_same_every_run() {
        let values = Values::log_uniform(1, 1000, 3);
        let lengths = |connection| {
            let mut s = values.source(3, connection);
            (0..50).map(|_| s.next_value().len()).collect::<Vec<_>>()
        };
        assert_eq!(lengths(0), lengths(0));
        assert_ne!(lengths(0), lengths(1));
        // A range of one length is that length.
        let mut one = Values::log_uniform(7, 7, 3).source(3, 0);
        assert!((0..10).all(|_| one.next_value().len() == 7));
    }
}
