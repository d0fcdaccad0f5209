//! The cache tier: each shard keeps its part of a byte budget by evicting
//! ([`crate::Config::max_memory`] split evenly, so no shard waits for another).
//!
//! # What counts
//! An item counts its key (twice: the item's and the store key the indexes hold), its
//! value's bytes, its labels (each also a label-index entry, and once the slots that
//! hold them) and [`ITEM_OVERHEAD`] for the item, its slot and its index entries
//! ([`cost`]). Connection buffers, the WAL's staging and snapshots are not items: the
//! server reports them apart (the allocator's count), so a burst of large requests
//! cannot evict the data set.
//!
//! # When
//! A write that would take its shard past the budget first stages the removal of
//! enough victims, in the same batch (so they are logged with it and recovery returns
//! the state after them): at most [`EVICTIONS_PER_WRITE_MAX`] per write, so eviction
//! work per batch is bounded; a write that cannot be made room for within that is
//! refused with `memory_limit`. Victims are items already installed (acknowledged)
//! that the batch does not touch; readers never wait for an eviction.
//!
//! # Policies
//! - `s3fifo` (recommended): S3-FIFO (Yang et al., SOSP 2023). New items enter a small
//!   FIFO (a tenth of the budget); one read while there moves an item to the main FIFO
//!   when it reaches the head, otherwise it is evicted and its key's hash remembered in
//!   a ghost FIFO, so a key that comes back soon goes straight to main. The main FIFO
//!   gives each item at its head another round per read (up to 3). Reads only set a
//!   counter in the item's slot: no lock, no list to move in.
//! - `lru`: approximate LRU as Redis does it: the least recently used (written or
//!   read) of [`LRU_SAMPLES`] items picked at random (exact LRU while a shard holds no
//!   more than that many). Recency is a per-shard counter every read of the shard
//!   advances (one shared atomic: `lru` costs reads more than `s3fifo`).
//! - `none`: no eviction (a full server refuses writes).

use crate::item::{Item, Slot};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How a full shard makes room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Refuse writes past the budget (`memory_limit`).
    #[default]
    None,
    /// Approximate LRU, sampled as Redis samples.
    Lru,
    /// S3-FIFO: the recommended policy.
    S3Fifo,
}

impl std::str::FromStr for Eviction {
    type Err = String;

    fn from_str(s: &str) -> Result<Eviction, String> {
        match s {
            "none" => Ok(Eviction::None),
            "lru" => Ok(Eviction::Lru),
            "s3fifo" => Ok(Eviction::S3Fifo),
            other => Err(format!(
                "eviction policy {other:?}: use s3fifo (recommended), lru or none"
            )),
        }
    }
}

impl std::fmt::Display for Eviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Eviction::None => "none",
            Eviction::Lru => "lru",
            Eviction::S3Fifo => "s3fifo",
        })
    }
}

/// Bytes an item counts beyond its key, value and labels: the item (its `Arc` and
/// fields, 96 bytes: `item::ItemData`), its slot (which keeps the store key once for
/// both indexes, `item::Indexed`), its hash-index and skiplist entries. Measured
/// (`benches/src/bin/item-bytes.rs`, 300,000 items of 100-byte values, keys of 6.6
/// bytes): 330 bytes allocated per item and 399 resident (the allocator's size
/// classes); with the value's own size class ([`value_cost`]) this counts 355 per item
/// there, so the resident set stays within 1.15 times the budget (1.12).
pub const ITEM_OVERHEAD: u64 = 230;
/// Bytes a label counts beyond its text (its label-index entry; measured 83).
pub const LABEL_OVERHEAD: u64 = 90;
/// Bytes an item with any label counts once for the slots that hold its labels (an
/// allocation of their own, `item::Labels`; an item without labels has none). Measured
/// on the same items with one label each: its first label, of about 3 bytes, adds 166
/// bytes to an item (these 80, the 83 of its index entry, its text).
pub const LABEL_SLOTS_OVERHEAD: u64 = crate::item::Labels::SLOTS_BYTES as u64;

/// Victims one write may stage before it is refused.
pub const EVICTIONS_PER_WRITE_MAX: usize = 64;

/// Items the `lru` policy compares per eviction (Redis's `maxmemory-samples` default).
pub const LRU_SAMPLES: usize = 5;

/// What an item counts against its shard's budget.
pub fn cost(item: &Item) -> u64 {
    let key = item.key().len() as u64;
    let labels: u64 = (1..=ampd_wire::limits::LABEL_COUNT)
        .filter_map(|n| item.label(n))
        .map(|l| l.len() as u64 + LABEL_OVERHEAD)
        .sum();
    // Each label counts at least LABEL_OVERHEAD: none counted, no slots.
    let slots = if labels == 0 { 0 } else { LABEL_SLOTS_OVERHEAD };
    ITEM_OVERHEAD + 2 * key + value_cost(item.value_bytes().len()) + labels + slots
}

/// What a value of `len` encoded bytes takes. A value that fits in the item
/// (`item::INLINE_VALUE_MAX`) takes no allocation of its own; a longer one takes the
/// allocator's size class for it: mimalloc (the server's allocator) and jemalloc both
/// have four classes per doubling above 64 bytes, so a request is rounded up by as
/// much as a quarter. Counting the class keeps the budget honest for values of mixed
/// sizes: by the length alone, churn of 64 B to 64 KiB values held 10% more memory
/// than was counted (`cache-rss`).
pub fn value_cost(len: usize) -> u64 {
    let len = len as u64;
    if len <= crate::item::INLINE_VALUE_MAX as u64 {
        return len;
    }
    if len <= 64 {
        return len.next_multiple_of(16);
    }
    let step = 1 << (len.ilog2() - 2);
    len.next_multiple_of(step)
}

/// What an item of `key` holding `value` (no labels) counts: for tests and tools
/// that size a budget.
pub fn cost_of(key: &str, value: &ampd_wire::Value) -> u64 {
    ITEM_OVERHEAD + 2 * key.len() as u64 + value_cost(ampd_wire::value::encode(value).len())
}

/// One shard's eviction state (owned by its thread).
pub(crate) enum Evictor {
    Lru(Lru),
    S3Fifo(S3Fifo),
}

impl Evictor {
    /// The state for `policy` under `budget` bytes; `None` for no eviction.
    pub fn new(policy: Eviction, budget: u64) -> Option<Evictor> {
        match policy {
            Eviction::None => None,
            Eviction::Lru => Some(Evictor::Lru(Lru {
                pool: Vec::new(),
                samples: LRU_SAMPLES,
                rng: 0x9e37_79b9_7f4a_7c15,
            })),
            Eviction::S3Fifo => Some(Evictor::S3Fifo(S3Fifo {
                small: VecDeque::new(),
                main: VecDeque::new(),
                small_bytes: 0,
                small_target: budget / 10,
                ghost: VecDeque::new(),
                ghosts: HashMap::new(),
            })),
        }
    }

    /// A new key's slot, now installed.
    pub fn admit(&mut self, slot: &Arc<Slot>, cost: u64, key_hash: u64) {
        match self {
            Evictor::Lru(l) => l.pool.push(slot.clone()),
            Evictor::S3Fifo(s) => s.admit(slot, cost, key_hash),
        }
    }

    /// The next item to evict: a slot still in the shard for which `spare` is false
    /// (those are kept, and come up again later). `None` when there is none.
    pub fn victim(
        &mut self,
        spare: impl Fn(&Slot) -> bool,
        key_hash: impl Fn(&Slot) -> u64,
    ) -> Option<Arc<Slot>> {
        match self {
            Evictor::Lru(l) => l.victim(spare),
            Evictor::S3Fifo(s) => s.victim(spare, key_hash),
        }
    }
}

/// Approximate LRU: every slot in a pool, victims sampled from it.
pub(crate) struct Lru {
    pool: Vec<Arc<Slot>>,
    samples: usize,
    rng: u64,
}

impl Lru {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to pick samples.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn victim(&mut self, spare: impl Fn(&Slot) -> bool) -> Option<Arc<Slot>> {
        loop {
            if self.pool.is_empty() {
                return None;
            }
            let n = self.pool.len();
            let picks: Vec<usize> = if n <= self.samples {
                (0..n).collect()
            } else {
                (0..self.samples)
                    .map(|_| (self.next_random() % n as u64) as usize)
                    .collect()
            };
            // Slots that left the shard leave the pool when met.
            if let Some(&dead) = picks.iter().find(|&&i| !self.pool[i].is_live()) {
                self.pool.swap_remove(dead);
                continue;
            }
            let oldest = picks
                .into_iter()
                .filter(|&i| !spare(&self.pool[i]))
                .min_by_key(|&i| self.pool[i].last_read());
            return match oldest {
                Some(i) => Some(self.pool.swap_remove(i)),
                // Everything sampled is spared: none now (the caller refuses).
                None => None,
            };
        }
    }
}

/// S3-FIFO's queues: entries are slots with the cost they entered with.
pub(crate) struct S3Fifo {
    small: VecDeque<(Arc<Slot>, u64)>,
    main: VecDeque<(Arc<Slot>, u64)>,
    small_bytes: u64,
    small_target: u64,
    /// Hashes of keys evicted from the small queue, oldest first, with how many times
    /// each is there (a key can be evicted again before its hash leaves).
    ghost: VecDeque<u64>,
    ghosts: HashMap<u64, u32>,
}

impl S3Fifo {
    fn admit(&mut self, slot: &Arc<Slot>, cost: u64, key_hash: u64) {
        if self.ghosts.contains_key(&key_hash) {
            self.main.push_back((slot.clone(), cost));
        } else {
            self.small.push_back((slot.clone(), cost));
            self.small_bytes += cost;
        }
    }

    fn remember(&mut self, key_hash: u64) {
        self.ghost.push_back(key_hash);
        *self.ghosts.entry(key_hash).or_default() += 1;
        // The ghost remembers about as many keys as the cache holds (the paper sizes it
        // like main, which holds nine tenths of the budget).
        while self.ghost.len() > (self.small.len() + self.main.len()).max(1) {
            if let Some(old) = self.ghost.pop_front() {
                if let Some(n) = self.ghosts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.ghosts.remove(&old);
                    }
                }
            }
        }
    }

    fn victim(
        &mut self,
        spare: impl Fn(&Slot) -> bool,
        key_hash: impl Fn(&Slot) -> u64,
    ) -> Option<Arc<Slot>> {
        // Each entry is looked at a bounded number of times: a spared or re-read one
        // goes back, up to FREQ_MAX rounds in main, so this ends.
        let mut budget =
            2 * (self.small.len() + self.main.len()) * (usize::from(crate::item::READS_MAX) + 1);
        while budget > 0 {
            budget -= 1;
            let from_small = self.small_bytes >= self.small_target || self.main.is_empty();
            if from_small {
                let Some((slot, cost)) = self.small.pop_front() else {
                    if self.main.is_empty() {
                        return None;
                    }
                    // Small is empty: take from main below.
                    self.small_bytes = 0;
                    continue;
                };
                self.small_bytes = self.small_bytes.saturating_sub(cost);
                if !slot.is_live() {
                    continue;
                }
                if slot.reads() > 0 {
                    slot.set_reads(0);
                    self.main.push_back((slot, cost));
                    continue;
                }
                if spare(&slot) {
                    self.main.push_back((slot, cost));
                    continue;
                }
                self.remember(key_hash(&slot));
                return Some(slot);
            }
            let (slot, cost) = self.main.pop_front()?;
            if !slot.is_live() {
                continue;
            }
            let reads = slot.reads();
            if reads > 0 || spare(&slot) {
                slot.set_reads(reads.saturating_sub(1));
                self.main.push_back((slot, cost));
                continue;
            }
            return Some(slot);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Expiry, ItemData, Labels};

    fn slot(key: &str) -> Arc<Slot> {
        Arc::new(Slot::new(&item(key, 10), key.as_bytes().into()))
    }

    fn item(key: &str, value_len: usize) -> Item {
        Item::new(ItemData {
            key: key.into(),
            value: bytes::Bytes::from(vec![0xa0; value_len]).into(),
            created_ms: 0,
            modified_ms: 0,
            expires_s: Expiry::NONE,
            labels: Labels::default(),
        })
    }

    #[test]
    fn cost_counts_key_value_labels_and_overhead() {
        // A 100-byte value takes the 112-byte size class.
        assert_eq!(cost(&item("ns:k", 100)), ITEM_OVERHEAD + 8 + 112);
        let mut labelled = item("k", 10).data().clone();
        labelled.labels = Labels::new([None, None, Some("abc".into()), None, None]);
        assert_eq!(
            cost(&Item::new(labelled.clone())),
            ITEM_OVERHEAD + 2 + 10 + 3 + LABEL_OVERHEAD + LABEL_SLOTS_OVERHEAD
        );
        // The slots are counted once, whatever the labels.
        labelled.labels = Labels::new([Some("x".into()), None, Some("abc".into()), None, None]);
        assert_eq!(
            cost(&Item::new(labelled)),
            ITEM_OVERHEAD + 2 + 10 + (1 + LABEL_OVERHEAD) + (3 + LABEL_OVERHEAD) + 80
        );
    }

    #[test]
    fn policies_parse_and_print() {
        for p in [Eviction::None, Eviction::Lru, Eviction::S3Fifo] {
            assert_eq!(p.to_string().parse::<Eviction>(), Ok(p));
        }
        assert!("lfu".parse::<Eviction>().unwrap_err().contains("s3fifo"));
    }

    /// Values count their allocator's size class: four per doubling above 64 bytes.
    #[test]
    fn a_value_counts_its_size_class() {
        let counted: Vec<u64> = [0, 22, 23, 64, 65, 80, 81, 102, 128, 129, 40_000, 65_536]
            .map(value_cost)
            .to_vec();
        assert_eq!(
            counted,
            [0, 22, 32, 64, 80, 80, 96, 112, 128, 160, 40_960, 65_536]
        );
    }

    /// S3-FIFO keeps a key read while in the small queue and evicts the one-hit
    /// wonders first; a key evicted and admitted again soon goes to main.
    #[test]
    fn s3fifo_evicts_one_hit_wonders_first() {
        let mut e = Evictor::new(Eviction::S3Fifo, 1000).unwrap();
        let slots: Vec<Arc<Slot>> = (0..4).map(|i| slot(&format!("k{i}"))).collect();
        for (i, s) in slots.iter().enumerate() {
            e.admit(s, 100, i as u64);
        }
        slots[0].touch(None);
        let hash = |s: &Slot| slots.iter().position(|x| std::ptr::eq(&**x, s)).unwrap() as u64;
        let first = e.victim(|_| false, hash).unwrap();
        assert!(Arc::ptr_eq(&first, &slots[1]), "k0 was read: k1 goes first");
        let second = e.victim(|_| false, hash).unwrap();
        assert!(Arc::ptr_eq(&second, &slots[2]));
        // k1 comes back: its hash is in the ghost, so it enters main.
        let again = slot("k1");
        e.admit(&again, 100, 1);
        let Evictor::S3Fifo(s) = &e else {
            unreachable!()
        };
        assert!(s.main.iter().any(|(x, _)| Arc::ptr_eq(x, &again)));
    }

    /// With no more items than it samples, `lru` is exact.
    #[test]
    fn lru_is_exact_on_small_pools() {
        let mut e = Evictor::new(Eviction::Lru, 1000).unwrap();
        let slots: Vec<Arc<Slot>> = (0..4).map(|i| slot(&format!("k{i}"))).collect();
        for (i, s) in slots.iter().enumerate() {
            e.admit(s, 100, i as u64);
            s.stamp(10 + i as u32);
        }
        slots[0].touch(Some(20));
        let order: Vec<usize> = (0..4)
            .map(|_| {
                let v = e.victim(|_| false, |_| 0).unwrap();
                slots.iter().position(|s| Arc::ptr_eq(s, &v)).unwrap()
            })
            .collect();
        assert_eq!(order, vec![1, 2, 3, 0]);
        assert!(e.victim(|_| false, |_| 0).is_none());
    }
}
