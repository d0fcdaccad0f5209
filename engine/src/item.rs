//! Items: a key, its encoded value and its metadata (SPEC.md "Values and items").

use ampd_wire::limits::{LABEL_COUNT, LABEL_NAMES};
use ampd_wire::value::{self, Value};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map};
use std::sync::Arc;

/// A stored item. Cheap to clone: the skiplists, the label indexes and every reader
/// share one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    inner: Arc<ItemData>,
}

/// The fields of an item, as the shard writes them. One lives in every item's `Arc`
/// (16 bytes of counts before it), so each word is paid once per item; what each field
/// costs is asserted below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemData {
    pub key: Box<str>,
    /// The value in the wire's value encoding.
    pub value: StoredValue,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub modified_ms: i64,
    pub expires_s: Expiry,
    pub labels: Labels,
}

// key 16 (a `Box<str>`: pointer and length, no capacity word), value 32 (a `Bytes`'
// room, see `StoredValue`), created_ms 8, modified_ms 8, expires_s 8 (`Expiry`: no tag
// word), labels 8 (one pointer, null for an item without labels). With the `Arc`'s two
// counts an item takes 96 bytes, one of mimalloc's size classes.
const _: () = assert!(std::mem::size_of::<ItemData>() == 16 + 32 + 8 + 8 + 8 + 8);

/// An item's expiry in seconds since the Unix epoch, or none, in one word: `i64::MIN`
/// stands for none (an `Option<i64>` takes two words). No write makes an expiry of
/// `i64::MIN` (a ttl is in the future); one read from elsewhere (a WAL image, a saved
/// dead letter) is kept as `i64::MIN + 1`, which every clock has passed just the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry(i64);

impl Expiry {
    pub const NONE: Expiry = Expiry(i64::MIN);

    /// Expires at `s` (epoch seconds), or never for `None`.
    pub fn at(s: Option<i64>) -> Expiry {
        s.map_or(Expiry::NONE, |s| Expiry(s.max(i64::MIN + 1)))
    }

    pub fn get(self) -> Option<i64> {
        (self != Expiry::NONE).then_some(self.0)
    }
}

/// An item's labels. Most items have none: those pay one null pointer, and a labelled
/// item keeps its five slots in an allocation of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Labels(Option<Box<[Option<Box<str>>; LABEL_COUNT]>>);

impl Labels {
    /// Bytes of the allocation a labelled item's slots take.
    pub const SLOTS_BYTES: usize = std::mem::size_of::<[Option<Box<str>>; LABEL_COUNT]>();

    pub fn new(labels: [Option<Box<str>>; LABEL_COUNT]) -> Labels {
        Labels(labels.iter().any(Option::is_some).then(|| Box::new(labels)))
    }

    /// Label `i` (0-based, as in `LABEL_NAMES`).
    pub fn get(&self, i: usize) -> Option<&str> {
        self.0.as_ref()?.get(i)?.as_deref()
    }

    /// The five slots in order (all `None` for an item without labels): the form the
    /// WAL archives ([`crate::wal::record::ItemImageRef`]).
    pub fn slots(&self) -> [Option<&str>; LABEL_COUNT] {
        std::array::from_fn(|i| self.get(i))
    }
}

impl From<[Option<String>; LABEL_COUNT]> for Labels {
    fn from(labels: [Option<String>; LABEL_COUNT]) -> Labels {
        Labels::new(labels.map(|l| l.map(String::into_boxed_str)))
    }
}

/// Values up to this many bytes live inside the item (see [`StoredValue`]).
pub(crate) const INLINE_VALUE_MAX: usize = 22;

/// An item's encoded value. Up to [`INLINE_VALUE_MAX`] bytes (counters, flags, short
/// strings) it lives in the item's own allocation: no allocation of its own to make or
/// free, no pointer for a read to follow. Longer values are shared `Bytes`. Either way
/// it takes the room of a `Bytes` (checked below), so inlining costs no item any memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredValue {
    Inline {
        len: u8,
        bytes: [u8; INLINE_VALUE_MAX],
    },
    Shared(Bytes),
}

const _: () = assert!(std::mem::size_of::<StoredValue>() == std::mem::size_of::<Bytes>());

impl From<Bytes> for StoredValue {
    fn from(b: Bytes) -> StoredValue {
        let mut bytes = [0; INLINE_VALUE_MAX];
        match bytes.get_mut(..b.len()) {
            Some(inline) => {
                inline.copy_from_slice(&b);
                StoredValue::Inline {
                    len: b.len() as u8,
                    bytes,
                }
            }
            None => StoredValue::Shared(b),
        }
    }
}

impl std::ops::Deref for StoredValue {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            StoredValue::Inline { len, bytes } => {
                bytes.get(..usize::from(*len)).unwrap_or_default()
            }
            StoredValue::Shared(b) => b,
        }
    }
}

impl StoredValue {
    /// The value as `Bytes` (a copy only when it is inline).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            StoredValue::Inline { .. } => Bytes::copy_from_slice(self),
            StoredValue::Shared(b) => b.clone(),
        }
    }
}

/// Where an item lives in a shard: the hash index, the skiplist and the label index
/// all point at one slot, so an update of an existing key swaps the slot's item and
/// touches no index at all.
///
/// With it, what eviction ([`crate::evict`]) reads: whether the slot is still in its
/// shard, and the reads of its item (a counter up to 3, and the time of the last).
#[derive(Debug)]
pub(crate) struct Slot {
    /// The store key ([`crate::key`]): kept here once, for every index ([`Indexed`]).
    pub key: Box<[u8]>,
    item: arc_swap::ArcSwap<ItemData>,
    reads: std::sync::atomic::AtomicU8,
    last_read: std::sync::atomic::AtomicU32,
    live: std::sync::atomic::AtomicBool,
}

impl Slot {
    pub fn new(item: &Item, key: Box<[u8]>) -> Slot {
        Slot {
            key,
            item: arc_swap::ArcSwap::new(item.inner.clone()),
            reads: Default::default(),
            last_read: Default::default(),
            live: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The item in the slot now.
    pub fn item(&self) -> Item {
        Item {
            inner: self.item.load_full(),
        }
    }

    pub fn store(&self, item: &Item) {
        self.item.store(item.inner.clone());
    }

    /// The slot left its shard (its key was removed).
    pub fn mark_gone(&self) {
        self.live.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn reads(&self) -> u8 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_reads(&self, reads: u8) {
        self.reads
            .store(reads, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn last_read(&self) -> u32 {
        self.last_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A read of the slot's item, for eviction: the read counter (up to
    /// [`READS_MAX`]) and, for `lru`, when (`tick`, `None` for the other policies).
    /// Plain loads and stores: a read that races another may be lost, which eviction
    /// tolerates, and no read pays for a read-modify-write on the slot.
    pub fn touch(&self, tick: Option<u32>) {
        use std::sync::atomic::Ordering::Relaxed;
        let reads = self.reads.load(Relaxed);
        if reads < READS_MAX {
            self.reads.store(reads + 1, Relaxed);
        }
        if let Some(tick) = tick {
            self.stamp(tick);
        }
    }

    /// Records a use of the slot's item at `tick` (for `lru`).
    pub fn stamp(&self, tick: u32) {
        self.last_read
            .store(tick, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A slot as an entry of the shard's indexes: hashed, compared and ordered by its
/// store key, and found by one (`Borrow<[u8]>`), so an index entry is one pointer
/// and the key is kept once, in the slot, however many indexes hold it.
#[derive(Debug, Clone)]
pub(crate) struct Indexed(pub Arc<Slot>);

impl std::borrow::Borrow<[u8]> for Indexed {
    fn borrow(&self) -> &[u8] {
        &self.0.key
    }
}

impl PartialEq for Indexed {
    fn eq(&self, other: &Indexed) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Indexed {}

impl PartialOrd for Indexed {
    fn partial_cmp(&self, other: &Indexed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Indexed {
    fn cmp(&self, other: &Indexed) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl std::hash::Hash for Indexed {
    /// As the key's bytes hash, so a lookup by `&[u8]` finds the entry.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        <[u8] as std::hash::Hash>::hash(&self.0.key, state);
    }
}

/// The highest read count a slot keeps (S3-FIFO's two bits).
pub(crate) const READS_MAX: u8 = 3;

impl Item {
    pub(crate) fn new(data: ItemData) -> Item {
        Item {
            inner: Arc::new(data),
        }
    }

    pub(crate) fn data(&self) -> &ItemData {
        &self.inner
    }

    /// The item as the WAL keeps it, borrowed: the writer and the snapshot archive it
    /// without copying.
    pub(crate) fn image(&self) -> crate::wal::record::ItemImageRef<'_> {
        let d = &*self.inner;
        crate::wal::record::ItemImageRef {
            key: &d.key,
            value: &d.value,
            created_ms: d.created_ms,
            modified_ms: d.modified_ms,
            expires_s: d.expires_s.get(),
            labels: d.labels.slots(),
        }
    }

    /// The item a WAL record holds.
    pub(crate) fn from_image(image: crate::wal::record::ItemImage) -> Item {
        Item::new(ItemData {
            key: image.key.into_boxed_str(),
            value: Bytes::from(image.value).into(),
            created_ms: image.created_ms,
            modified_ms: image.modified_ms,
            expires_s: Expiry::at(image.expires_s),
            labels: image.labels.into(),
        })
    }

    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The value, decoded.
    pub fn value(&self) -> Value {
        // The engine stores only values it encoded itself.
        value::decode(&self.inner.value).unwrap_or(Value::Null)
    }

    /// The value in the wire encoding (MessagePack), as stored.
    pub fn value_bytes(&self) -> &[u8] {
        &self.inner.value
    }

    pub fn created_ms(&self) -> i64 {
        self.inner.created_ms
    }

    pub fn modified_ms(&self) -> i64 {
        self.inner.modified_ms
    }

    /// Expiry in epoch seconds, when the item has a ttl.
    pub fn ttl(&self) -> Option<i64> {
        self.inner.expires_s.get()
    }

    /// Label `n` (1..=5).
    pub fn label(&self, n: usize) -> Option<&str> {
        self.inner.labels.get(n.wrapping_sub(1))
    }

    pub(crate) fn is_expired(&self, now_s: i64) -> bool {
        self.ttl().is_some_and(|e| e <= now_s)
    }

    /// Bytes this item counts against a page (key and encoded value).
    pub(crate) fn page_bytes(&self) -> usize {
        self.inner.key.len() + self.inner.value.len()
    }

    /// The item as SPEC.md shows it with `meta`: `key`, `value`, `created`, `modified`,
    /// `ttl` and `label1`..`label5` when set.
    pub fn to_meta_json(&self) -> Value {
        let d = &*self.inner;
        let mut m = Map::new();
        m.insert("key".into(), json!(d.key));
        m.insert("value".into(), self.value());
        m.insert("created".into(), json!(rfc3339_ms(d.created_ms)));
        m.insert("modified".into(), json!(rfc3339_ms(d.modified_ms)));
        if let Some(t) = d.expires_s.get() {
            m.insert("ttl".into(), json!(t));
        }
        for (name, l) in LABEL_NAMES.iter().zip(d.labels.slots()) {
            if let Some(l) = l {
                m.insert((*name).into(), json!(l));
            }
        }
        Value::Object(m)
    }

    /// [`Item::to_meta_json`] written straight in the wire's value encoding
    /// (MessagePack), the value copied as stored: the same bytes as encoding that
    /// JSON, without building it.
    pub fn write_meta<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        let d = &*self.inner;
        let labels = d.labels.slots().iter().flatten().count();
        let len = 4 + usize::from(d.expires_s.get().is_some()) + labels;
        rmp::encode::write_map_len(w, len as u32)?;
        rmp::encode::write_str(w, "key")?;
        rmp::encode::write_str(w, &d.key)?;
        rmp::encode::write_str(w, "value")?;
        w.write_all(&d.value)?;
        let mut stamp = [0u8; RFC3339_MS_LEN_MAX];
        rmp::encode::write_str(w, "created")?;
        rmp::encode::write_str(w, rfc3339_ms_into(d.created_ms, &mut stamp))?;
        rmp::encode::write_str(w, "modified")?;
        rmp::encode::write_str(w, rfc3339_ms_into(d.modified_ms, &mut stamp))?;
        if let Some(t) = d.expires_s.get() {
            rmp::encode::write_str(w, "ttl")?;
            rmp::encode::write_sint(w, t)?;
        }
        for (name, l) in LABEL_NAMES.iter().zip(d.labels.slots()) {
            if let Some(l) = l {
                rmp::encode::write_str(w, name)?;
                rmp::encode::write_str(w, l)?;
            }
        }
        Ok(())
    }

    /// The item [`Item::to_meta_json`] shows (a saved dead letter's); `None` if the
    /// JSON is not one.
    pub(crate) fn from_meta_json(v: &Value) -> Option<Item> {
        let time = |field: &str| -> Option<i64> {
            let text = v.get(field)?.as_str()?;
            Some(DateTime::parse_from_rfc3339(text).ok()?.timestamp_millis())
        };
        let labels = LABEL_NAMES.map(|name| v.get(name).and_then(Value::as_str).map(Box::from));
        Some(Item::new(ItemData {
            key: v.get("key")?.as_str()?.into(),
            value: value::encode(v.get("value")?).into(),
            created_ms: time("created")?,
            modified_ms: time("modified")?,
            expires_s: Expiry::at(v.get("ttl").and_then(Value::as_i64)),
            labels: Labels::new(labels),
        }))
    }

    /// The item inside an `items` array: `{key, value}`, or the meta object.
    pub fn to_entry_json(&self, meta: bool) -> Value {
        if meta {
            self.to_meta_json()
        } else {
            json!({"key": self.inner.key, "value": self.value()})
        }
    }

    /// A single-item result: the bare value, or the meta object.
    pub fn to_result_json(&self, meta: bool) -> Value {
        if meta {
            self.to_meta_json()
        } else {
            self.value()
        }
    }
}

/// RFC 3339 in UTC with millisecond precision: `2026-11-26T14:20:39.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Room for [`rfc3339_ms`] of any time chrono represents.
const RFC3339_MS_LEN_MAX: usize = 40;

/// [`rfc3339_ms`] written into `buf`, without allocating: the digits placed by hand
/// for years 0 to 9999 (chrono's formatter cost more than the rest of an event's
/// encoding), chrono's own text otherwise.
fn rfc3339_ms_into(ms: i64, buf: &mut [u8; RFC3339_MS_LEN_MAX]) -> &str {
    use chrono::{Datelike, Timelike};
    let time = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let year = time.year();
    if !(0..=9999).contains(&year) {
        let text = rfc3339_ms(ms);
        let len = text.len().min(RFC3339_MS_LEN_MAX);
        buf[..len].copy_from_slice(&text.as_bytes()[..len]);
        return std::str::from_utf8(&buf[..len]).unwrap_or_default();
    }
    let mut put = |at: usize, n: u32, digits: usize| {
        let mut n = n;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, time.month(), 2);
    put(8, time.day(), 2);
    put(11, time.hour(), 2);
    put(14, time.minute(), 2);
    put(17, time.second(), 2);
    put(20, time.timestamp_subsec_millis(), 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = c;
    }
    std::str::from_utf8(&buf[..24]).unwrap_or_default()
}

/// The wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_live_inline_and_read_back_exactly() {
        for len in 0..=INLINE_VALUE_MAX + 2 {
            let given = Bytes::from((0..len as u8).collect::<Vec<u8>>());
            let stored = StoredValue::from(given.clone());
            assert_eq!(
                matches!(stored, StoredValue::Inline { .. }),
                len <= INLINE_VALUE_MAX,
                "{len} bytes"
            );
            assert_eq!(&*stored, &given[..]);
            assert_eq!(stored.to_bytes(), given);
        }
    }

    #[test]
    fn an_item_without_labels_pays_one_null_pointer() {
        assert_eq!(std::mem::size_of::<Labels>(), 8);
        let none = Labels::new(Default::default());
        assert_eq!(none, Labels::default());
        assert!(none.0.is_none(), "no allocation for five empty slots");
        assert_eq!(none.slots(), [None; LABEL_COUNT]);
        let some = Labels::from([None, None, None, Some("x:y".to_owned()), None]);
        assert_eq!(some.slots(), [None, None, None, Some("x:y"), None]);
        assert_eq!(
            (some.get(3), some.get(4), some.get(5)),
            (Some("x:y"), None, None)
        );
    }

    #[test]
    fn expiry_keeps_every_second_but_the_one_standing_for_none() {
        assert_eq!(Expiry::at(None), Expiry::NONE);
        assert_eq!(Expiry::NONE.get(), None);
        for s in [i64::MIN + 1, -1, 0, 1, 1_800_000_000, i64::MAX] {
            assert_eq!(Expiry::at(Some(s)).get(), Some(s), "{s}");
        }
        // Read a second later: still an expiry, long passed at any clock.
        assert_eq!(Expiry::at(Some(i64::MIN)).get(), Some(i64::MIN + 1));
    }

    #[test]
    fn meta_msgpack_is_the_meta_json_encoded() {
        let items = [
            Item::new(ItemData {
                key: "ns:k".into(),
                value: value::encode(&json!({"a": [1, 2.5, "x"]})).into(),
                created_ms: 1_700_000_000_123,
                modified_ms: 1_700_000_000_456,
                expires_s: Expiry::at(Some(1_800_000_000)),
                labels: Labels::new([
                    Some("a".into()),
                    None,
                    Some("c".into()),
                    None,
                    Some("e".into()),
                ]),
            }),
            Item::new(ItemData {
                key: "k".into(),
                value: value::encode(&json!(null)).into(),
                created_ms: -5,
                modified_ms: 0,
                expires_s: Expiry::NONE,
                labels: Labels::default(),
            }),
        ];
        for item in items {
            let mut direct = Vec::new();
            item.write_meta(&mut direct).unwrap();
            assert_eq!(direct, value::encode(&item.to_meta_json()), "{item:?}");
            assert_eq!(Item::from_meta_json(&item.to_meta_json()), Some(item));
        }
    }

    #[test]
    fn hand_placed_timestamps_are_chronos() {
        let mut buf = [0u8; RFC3339_MS_LEN_MAX];
        let mut ms: i64 = -62_167_219_200_000 - 1000; // a second before year 0
        let samples = [
            -1,
            0,
            1,
            999,
            1000,
            59_999,
            951_782_400_000,
            1_700_000_000_123,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MIN,
            i64::MAX,
        ];
        for sample in samples {
            assert_eq!(
                rfc3339_ms_into(sample, &mut buf),
                rfc3339_ms(sample),
                "{sample}"
            );
        }
        // A walk across the years, with odd steps to land on every kind of field.
        while ms < 253_402_300_800_000 + 1000 {
            assert_eq!(rfc3339_ms_into(ms, &mut buf), rfc3339_ms(ms), "{ms}");
            ms += 86_399_997 * 37 + 1;
        }
    }

    #[test]
    fn meta_json_shape() {
        let item = Item::new(ItemData {
            key: "ns:k".into(),
            value: value::encode(&json!({"a": 1})).into(),
            created_ms: 1_700_000_000_123,
            modified_ms: 1_700_000_000_456,
            expires_s: Expiry::at(Some(1_800_000_000)),
            labels: Labels::new([None, Some("x:y".into()), None, None, None]),
        });
        assert_eq!(
            item.to_meta_json(),
            json!({
                "key": "ns:k", "value": {"a": 1},
                "created": "2023-11-14T22:13:20.123Z",
                "modified": "2023-11-14T22:13:20.456Z",
                "ttl": 1_800_000_000, "label2": "x:y"
            })
        );
        assert_eq!(item.label(2), Some("x:y"));
        assert_eq!(item.label(0), None);
        assert_eq!(item.label(6), None);
        assert!(item.is_expired(1_800_000_000));
        assert!(!item.is_expired(1_799_999_999));
    }
}
