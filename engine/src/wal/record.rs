//! The WAL's on-disk format: a segment header, then records, each a fixed header and an
//! rkyv body. Defined once here; everything that writes or reads the log goes through
//! [`SegmentHeader`], [`encode_record_ref`] and [`decode_record`].
//!
//! A WAL segment is preallocated ([`super::log`]): zeros follow its last record up to
//! the end of the file. They read as a record header of all zeros, which is never a
//! valid record (its stored CRC32C, 0, is never the CRC32C of the bytes it covers); the
//! log calls them free space.
//!
//! # Segment header (40 bytes, little endian)
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `\x89AMPDWAL` (PNG-style: a high byte, then text) |
//! | 8 | 2 | format version ([`FORMAT_VERSION`]) |
//! | 10 | 2 | shard id |
//! | 12 | 4 | zero |
//! | 16 | 8 | segment id |
//! | 24 | 8 | sequence number of the segment's first record |
//! | 32 | 4 | CRC32C of bytes 0..32 |
//! | 36 | 4 | zero |
//!
//! # Record (32-byte header, then `body_len` bytes of body)
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | `body_len` |
//! | 4 | 4 | CRC32C of header bytes 8..32 and the whole body |
//! | 8 | 2 | shard id |
//! | 10 | 6 | zero |
//! | 16 | 8 | segment id |
//! | 24 | 8 | sequence number (per shard, contiguous across segments) |
//!
//! The body is an rkyv archive of an [`Entry`]: an **after-image** (the item as
//! written, with its metadata) or a tombstone, never a delta, so replaying a record
//! twice leaves the same state.
//!
//! A record is checked in order: length bound, CRC32C (which covers the header's
//! identity fields, so a valid record copied to the wrong place still fails the next
//! check), shard / segment / sequence, then rkyv validation. Too few bytes for a whole
//! record is `Ok(None)`: whether that is a torn tail or a truncation in the middle of
//! the log is for the segment reader to say, since only it knows what follows.

use ampd_wire::limits::{ITEM_SIZE_MAX, LABEL_COUNT};
use rkyv::rancor;
use rkyv::with::Map;
use std::mem::size_of;

/// Magic of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89AMPDWAL";
/// The version this build writes. Version 2 added [`Entry::Change`]; version 1
/// segments (which hold none) read as before. A reader refuses versions it does not
/// know.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest version this build reads.
pub const FORMAT_VERSION_MIN: u16 = 1;
/// The largest body a record may declare: one item at its size limit plus room for the
/// archive's own fields. A length above it is corruption, and nothing is allocated for
/// it.
pub const RECORD_BODY_LEN_MAX: usize = ITEM_SIZE_MAX + 4096;

// The segment header's fields, each offset computed from the one before it (the table
// is in the module header).
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + SEGMENT_MAGIC.len();
const HEADER_SHARD_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
const HEADER_PAD_OFFSET: usize = HEADER_SHARD_OFFSET + size_of::<u16>();
const HEADER_SEGMENT_OFFSET: usize = HEADER_PAD_OFFSET + size_of::<u32>();
const FIRST_SEQ_OFFSET: usize = HEADER_SEGMENT_OFFSET + size_of::<u64>();
/// The header's CRC32C covers every byte before it.
const HEADER_CRC_OFFSET: usize = FIRST_SEQ_OFFSET + size_of::<u64>();
const HEADER_TAIL_PAD_OFFSET: usize = HEADER_CRC_OFFSET + size_of::<u32>();
/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = HEADER_TAIL_PAD_OFFSET + size_of::<u32>();

// A record header's fields, the same way.
const RECORD_LEN_OFFSET: usize = 0;
const RECORD_CRC_OFFSET: usize = RECORD_LEN_OFFSET + size_of::<u32>();
/// The record's CRC32C covers the header from here on, and the body.
const RECORD_SHARD_OFFSET: usize = RECORD_CRC_OFFSET + size_of::<u32>();
const RECORD_PAD_OFFSET: usize = RECORD_SHARD_OFFSET + size_of::<u16>();
const RECORD_SEGMENT_OFFSET: usize = RECORD_PAD_OFFSET + 6;
const RECORD_SEQ_OFFSET: usize = RECORD_SEGMENT_OFFSET + size_of::<u64>();
/// Bytes of a record header; the body follows.
pub const RECORD_HEADER_LEN: usize = RECORD_SEQ_OFFSET + size_of::<u64>();
const RECORD_CRC_START: usize = RECORD_SHARD_OFFSET;

const _: () = assert!(SEGMENT_HEADER_LEN == 40, "the segment header is on disk");
const _: () = assert!(RECORD_HEADER_LEN == 32, "the record header is on disk");
const _: () = assert!(SEGMENT_HEADER_LEN.is_multiple_of(8) && RECORD_HEADER_LEN.is_multiple_of(8));
const _: () =
    assert!(RECORD_SEGMENT_OFFSET.is_multiple_of(8) && HEADER_SEGMENT_OFFSET.is_multiple_of(8));
const _: () = assert!(RECORD_BODY_LEN_MAX <= u32::MAX as usize);

/// An item as the log keeps it: everything needed to rebuild it exactly.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ItemImage {
    pub key: String,
    /// The value in the wire's value encoding.
    pub value: Vec<u8>,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub expires_s: Option<i64>,
    pub labels: [Option<String>; LABEL_COUNT],
}

/// What one record says happened to one key.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Entry {
    /// The key now holds this item.
    Put(ItemImage),
    /// The key holds nothing.
    Remove { key: String },
    /// A change with what it replaced (format version 2): written instead of `Put` and
    /// `Remove` while the database has durable subscriptions, whose events are derived
    /// from it again after a restart. Boxed, so the archived `Entry` keeps the size
    /// it had in version 1 and version 1 records read unchanged.
    Change(Box<Change>),
}

/// A change of one key with the item it replaced ([`Entry::Change`]).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Change {
    /// The item as written; `None`: the key holds nothing now.
    pub after: Option<ItemImage>,
    /// What the key held before, expired or not; `None` for a create.
    pub before: Option<ItemImage>,
    /// `before` had expired: the change also removed an expired item.
    pub before_expired: bool,
    /// A removal by the cache tier (eviction), not by a user.
    pub evicted: bool,
}

impl Entry {
    /// The key's item after the change (`None`: removed), and its key.
    pub fn key(&self) -> &str {
        match self {
            Entry::Put(image) => &image.key,
            Entry::Remove { key } => key,
            Entry::Change(c) => match (&c.after, &c.before) {
                (Some(image), _) | (None, Some(image)) => &image.key,
                // A change records at least one side (the writer never logs a
                // change of nothing).
                (None, None) => "",
            },
        }
    }
}

/// An [`ItemImage`] borrowed from the item it describes: it archives to the same bytes
/// ([`ArchivedItemImage`]), so the writer encodes a record straight from the stored
/// item, without copying its key, value and labels into an owned image first.
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedItemImage)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    <__S as rancor::Fallible>::Error: rancor::Source,
))]
pub struct ItemImageRef<'a> {
    #[rkyv(with = StrAsString, omit_bounds)]
    pub key: &'a str,
    #[rkyv(with = BytesAsVec, omit_bounds)]
    pub value: &'a [u8],
    pub created_ms: i64,
    pub modified_ms: i64,
    pub expires_s: Option<i64>,
    /// Each label slot, `None` where the item has no label: archived as the owned
    /// `[Option<String>; LABEL_COUNT]`, each `str` as the `String` it stands for (an
    /// item without labels is five `None`s). Borrowed slot by slot, so the stored item
    /// keeps its labels however it likes ([`crate::item::Labels`]) and an owned image
    /// lends its array the same way.
    #[rkyv(with = Map<Map<StrAsString>>, omit_bounds)]
    pub labels: [Option<&'a str>; LABEL_COUNT],
}

/// An [`Entry`] borrowed from the writer's staged changes; archives as [`ArchivedEntry`].
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedEntry)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    <__S as rancor::Fallible>::Error: rancor::Source,
))]
pub enum EntryRef<'a> {
    Put(ItemImageRef<'a>),
    Remove {
        #[rkyv(with = StrAsString, omit_bounds)]
        key: &'a str,
    },
    Change(#[rkyv(with = rkyv::with::AsBox, omit_bounds)] ChangeRef<'a>),
}

/// A [`Change`] borrowed from the writer's staged change; archives as
/// [`ArchivedChange`].
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedChange)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    <__S as rancor::Fallible>::Error: rancor::Source,
))]
pub struct ChangeRef<'a> {
    #[rkyv(omit_bounds)]
    pub after: Option<ItemImageRef<'a>>,
    #[rkyv(omit_bounds)]
    pub before: Option<ItemImageRef<'a>>,
    pub before_expired: bool,
    pub evicted: bool,
}

impl ItemImage {
    /// The image borrowed, for [`EntryRef`].
    pub fn as_ref(&self) -> ItemImageRef<'_> {
        ItemImageRef {
            key: &self.key,
            value: &self.value,
            created_ms: self.created_ms,
            modified_ms: self.modified_ms,
            expires_s: self.expires_s,
            labels: self.labels.each_ref().map(Option::as_deref),
        }
    }
}

impl<'a> From<&'a Entry> for EntryRef<'a> {
    fn from(entry: &'a Entry) -> EntryRef<'a> {
        match entry {
            Entry::Put(image) => EntryRef::Put(image.as_ref()),
            Entry::Remove { key } => EntryRef::Remove { key },
            Entry::Change(c) => EntryRef::Change(ChangeRef {
                after: c.after.as_ref().map(ItemImage::as_ref),
                before: c.before.as_ref().map(ItemImage::as_ref),
                before_expired: c.before_expired,
                evicted: c.evicted,
            }),
        }
    }
}

impl<'a> From<&EntryRef<'a>> for EntryRef<'a> {
    fn from(entry: &EntryRef<'a>) -> EntryRef<'a> {
        *entry
    }
}

/// Archives a borrowed `str` as the `String` it stands for.
struct StrAsString;

impl rkyv::with::ArchiveWith<&str> for StrAsString {
    type Archived = rkyv::string::ArchivedString;
    type Resolver = rkyv::string::StringResolver;
    fn resolve_with(field: &&str, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::string::ArchivedString::resolve_from_str(field, resolver, out);
    }
}

impl<S> rkyv::with::SerializeWith<&str, S> for StrAsString
where
    S: rancor::Fallible + rkyv::ser::Writer + ?Sized,
    S::Error: rancor::Source,
{
    fn serialize_with(field: &&str, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::string::ArchivedString::serialize_from_str(field, serializer)
    }
}

/// Archives a borrowed byte slice as the `Vec<u8>` it stands for.
struct BytesAsVec;

impl rkyv::with::ArchiveWith<&[u8]> for BytesAsVec {
    type Archived = rkyv::vec::ArchivedVec<u8>;
    type Resolver = rkyv::vec::VecResolver;
    fn resolve_with(field: &&[u8], resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<S> rkyv::with::SerializeWith<&[u8], S> for BytesAsVec
where
    S: rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(field: &&[u8], serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::serialize_from_slice(field, serializer)
    }
}

/// Where a record must be: its shard, its segment and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub shard: u16,
    pub segment: u64,
    pub seq: u64,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard: u16,
    pub segment: u64,
    /// The sequence number its first record has (the one after the previous
    /// segment's last), so a log whose early segments were dropped still checks.
    pub first_seq: u64,
}

/// Why bytes are not a valid header or record. Each names what it found, so the
/// caller can report file and offset with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    UnknownVersion(u16),
    BadLength {
        body_len: u64,
    },
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    Misplaced {
        expected: Position,
        found: Position,
    },
    BadBody(String),
    /// Fewer bytes than a segment header where one must be.
    ShortHeader {
        bytes: u64,
    },
    /// A record cut short: only `bytes` are left where a whole record must be.
    ShortRecord {
        bytes: u64,
    },
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::BadMagic => write!(f, "not an ampd WAL segment (bad magic)"),
            FormatError::UnknownVersion(v) => {
                write!(
                    f,
                    "WAL format version {v}, this build reads \
                     {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"
                )
            }
            FormatError::BadLength { body_len } => {
                write!(
                    f,
                    "record declares {body_len} bytes, limit {RECORD_BODY_LEN_MAX}"
                )
            }
            FormatError::BadChecksum { stored, computed } => {
                write!(f, "CRC32C {stored:#010x} stored, {computed:#010x} computed")
            }
            FormatError::Misplaced { expected, found } => write!(
                f,
                "shard {} segment {} sequence {} found where shard {} segment {} \
                 sequence {} belongs",
                found.shard,
                found.segment,
                found.seq,
                expected.shard,
                expected.segment,
                expected.seq
            ),
            FormatError::BadBody(why) => write!(f, "record body does not validate: {why}"),
            FormatError::ShortHeader { bytes } => write!(
                f,
                "{bytes} bytes where a {SEGMENT_HEADER_LEN}-byte segment header belongs"
            ),
            FormatError::ShortRecord { bytes } => {
                write!(f, "a record cut short: {bytes} bytes left")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// The `N` bytes at `at` (zeros past the end: callers check the length first).
fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    for (o, b) in out.iter_mut().zip(bytes.iter().skip(at)) {
        *o = *b;
    }
    out
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, at))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, at))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

/// Writes `bytes` at `at` of `out`, which holds them (a header of a fixed length).
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    let slot = out.get_mut(at..at + bytes.len());
    debug_assert!(slot.is_some(), "a header field past the header");
    if let Some(slot) = slot {
        slot.copy_from_slice(bytes);
    }
}

/// The CRC32C of `bytes[from..]` (0 when `from` is past the end).
fn crc_from(bytes: &[u8], from: usize) -> u32 {
    crc32c::crc32c(bytes.get(from..).unwrap_or_default())
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0; SEGMENT_HEADER_LEN];
        put(&mut out, MAGIC_OFFSET, &SEGMENT_MAGIC);
        put(&mut out, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
        put(&mut out, HEADER_SHARD_OFFSET, &self.shard.to_le_bytes());
        put(&mut out, HEADER_SEGMENT_OFFSET, &self.segment.to_le_bytes());
        put(&mut out, FIRST_SEQ_OFFSET, &self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
        put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
        out
    }

    /// Reads a segment header; `Ok(None)` when fewer than 40 bytes are there.
    pub fn decode(bytes: &[u8]) -> Result<Option<SegmentHeader>, FormatError> {
        let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
            return Ok(None);
        };
        if bytes_at::<8>(h, MAGIC_OFFSET) != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let stored = le_u32(h, HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(h.get(..HEADER_CRC_OFFSET).unwrap_or_default());
        if stored != computed {
            return Err(FormatError::BadChecksum { stored, computed });
        }
        let version = le_u16(h, VERSION_OFFSET);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnknownVersion(version));
        }
        Ok(Some(SegmentHeader {
            shard: le_u16(h, HEADER_SHARD_OFFSET),
            segment: le_u64(h, HEADER_SEGMENT_OFFSET),
            first_seq: le_u64(h, FIRST_SEQ_OFFSET),
        }))
    }
}

/// Appends one record for `entry` at `at` to `out` (an owned entry: tests, fuzzers and
/// tools; the writer encodes borrowed ones with [`encode_record_ref`]).
pub fn encode_record(entry: &Entry, at: Position, out: &mut Vec<u8>) {
    encode_record_ref(
        &EntryRef::from(entry),
        at,
        &mut rkyv::util::AlignedVec::new(),
        out,
    );
}

/// Appends one record for `entry` at `at` to `out`. `scratch` is where the body is
/// archived (rkyv needs an aligned buffer); it is handed back cleared, so a caller that
/// encodes many records allocates it once.
pub fn encode_record_ref(
    entry: &EntryRef<'_>,
    at: Position,
    scratch: &mut rkyv::util::AlignedVec,
    out: &mut Vec<u8>,
) {
    scratch.clear();
    // Archiving into an AlignedVec only fails on allocation failure, which aborts.
    #[expect(
        clippy::expect_used,
        reason = "archiving fails only when allocation does"
    )]
    let body = rkyv::api::high::to_bytes_in::<_, rancor::Error>(entry, std::mem::take(scratch))
        .expect("an entry always archives");
    assert!(
        body.len() <= RECORD_BODY_LEN_MAX,
        "entry of {} bytes passed the item size check",
        body.len()
    );
    encode_record_body(&body, at, out);
    *scratch = body;
    scratch.clear();
}

/// Appends a record at `at` whose body is `body` (an archived [`Entry`], or any bytes:
/// tests and fuzzers frame bodies of their own to reach the body's validation).
pub fn encode_record_body(body: &[u8], at: Position, out: &mut Vec<u8>) {
    let start = out.len();
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut header = [0; RECORD_HEADER_LEN];
    put(&mut header, RECORD_LEN_OFFSET, &body_len.to_le_bytes());
    put(&mut header, RECORD_SHARD_OFFSET, &at.shard.to_le_bytes());
    put(
        &mut header,
        RECORD_SEGMENT_OFFSET,
        &at.segment.to_le_bytes(),
    );
    put(&mut header, RECORD_SEQ_OFFSET, &at.seq.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    let crc = crc_from(out, start + RECORD_CRC_START);
    if let Some(record) = out.get_mut(start..) {
        put(record, RECORD_CRC_OFFSET, &crc.to_le_bytes());
    }
}

/// A whole record, not yet checked beyond its length.
struct RawRecord<'a> {
    /// Where its header says it is.
    found: Position,
    /// The CRC32C its header carries.
    stored: u32,
    /// Header and body.
    bytes: &'a [u8],
}

impl RawRecord<'_> {
    fn computed_crc(&self) -> u32 {
        crc_from(self.bytes, RECORD_CRC_START)
    }
}

/// The record at the start of `bytes`, once its length is within bounds and all of it
/// is there; `Ok(None)` when it is not all there yet.
fn split_record(bytes: &[u8]) -> Result<Option<RawRecord<'_>>, FormatError> {
    let Some(h) = bytes.get(..RECORD_HEADER_LEN) else {
        return Ok(None);
    };
    let body_len = le_u32(h, RECORD_LEN_OFFSET) as usize;
    if body_len > RECORD_BODY_LEN_MAX {
        return Err(FormatError::BadLength {
            body_len: body_len as u64,
        });
    }
    let Some(record) = bytes.get(..RECORD_HEADER_LEN + body_len) else {
        return Ok(None);
    };
    let found = Position {
        shard: le_u16(h, RECORD_SHARD_OFFSET),
        segment: le_u64(h, RECORD_SEGMENT_OFFSET),
        seq: le_u64(h, RECORD_SEQ_OFFSET),
    };
    Ok(Some(RawRecord {
        found,
        stored: le_u32(h, RECORD_CRC_OFFSET),
        bytes: record,
    }))
}

/// Whether a whole record with a valid checksum, of this shard and segment, starts at
/// `bytes` (whatever its sequence number). The segment reader asks this of the bytes
/// after a bad record: if one is there, the bad record is corruption, not a torn tail.
pub fn looks_like_record(bytes: &[u8], shard: u16, segment: u64) -> bool {
    match split_record(bytes) {
        Ok(Some(r)) => {
            r.found.shard == shard && r.found.segment == segment && r.stored == r.computed_crc()
        }
        _ => false,
    }
}

/// Decodes the record at the start of `bytes`, which must be at `expected`.
/// `Ok(None)`: not enough bytes for a whole record. `Ok(Some((entry, len)))`: the
/// record and how many bytes it took.
pub fn decode_record(
    bytes: &[u8],
    expected: Position,
) -> Result<Option<(Entry, usize)>, FormatError> {
    let Some(record) = split_record(bytes)? else {
        return Ok(None);
    };
    let (stored, computed) = (record.stored, record.computed_crc());
    if stored != computed {
        return Err(FormatError::BadChecksum { stored, computed });
    }
    if record.found != expected {
        return Err(FormatError::Misplaced {
            expected,
            found: record.found,
        });
    }
    let record = record.bytes;
    // rkyv reads archives in place and needs them aligned: copy the body into an
    // aligned buffer, validate it once, then deserialize.
    let body = record.get(RECORD_HEADER_LEN..).unwrap_or_default();
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let archived = rkyv::access::<ArchivedEntry, rancor::Error>(&aligned)
        .map_err(|e| FormatError::BadBody(e.to_string()))?;
    let entry = rkyv::deserialize::<Entry, rancor::Error>(archived)
        .map_err(|e| FormatError::BadBody(e.to_string()))?;
    Ok(Some((entry, record.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AT: Position = Position {
        shard: 3,
        segment: 7,
        seq: 42,
    };

    fn put(key: &str, value_len: usize) -> Entry {
        Entry::Put(ItemImage {
            key: key.into(),
            value: vec![0xa5; value_len],
            created_ms: 1_700_000_000_000,
            modified_ms: 1_700_000_000_001,
            expires_s: Some(1_800_000_000),
            labels: [
                Some("ORDER-9321".into()),
                None,
                None,
                Some("g:x".into()),
                None,
            ],
        })
    }

    /// A `Put` of `put("ns:k", 3)` at [`AT`] and a `Remove` of `gone` after it, as
    /// format version 1 wrote them (captured from the build before version 2).
    const VERSION_1_RECORDS: &str = "88000000ba1a59b4030000000000000007000000000000002a00000000000000a5a5a54f524445522d3933323100000000000000000000006e733a6bffffffffe0ffffff030000000068e5cf8b0100000168e5cf8b010000010000000000000000d2496b00000000010000008a000000b7ffffff00000000000000000000000000000000000000000000000001000000673a78ffffffffff00000000000000000000000000000000780000000cf1252e030000000000000007000000000000002b0000000000000001000000676f6e65ffffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn version_1_records_read_and_write_unchanged() {
        let bytes: Vec<u8> = (0..VERSION_1_RECORDS.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&VERSION_1_RECORDS[i..i + 2], 16).unwrap())
            .collect();
        let put_v1 = put("ns:k", 3);
        let remove = Entry::Remove { key: "gone".into() };
        let (first, used) = decode_record(&bytes, AT).unwrap().unwrap();
        assert_eq!(first, put_v1);
        let next = Position { seq: 43, ..AT };
        let (second, rest) = decode_record(&bytes[used..], next).unwrap().unwrap();
        assert_eq!(second, remove);
        assert_eq!(used + rest, bytes.len());
        let mut again = record(&put_v1, AT);
        again.extend(record(&remove, next));
        assert_eq!(
            again, bytes,
            "Put and Remove records are encoded as in version 1"
        );
    }

    #[test]
    fn change_records_round_trip() {
        let image = |e: Entry| match e {
            Entry::Put(image) => image,
            _ => unreachable!(),
        };
        let cases = [
            Change {
                after: Some(image(put("ns:k", 3))),
                before: None,
                before_expired: false,
                evicted: false,
            },
            Change {
                after: Some(image(put("ns:k", 300))),
                before: Some(image(put("ns:k", 2))),
                before_expired: true,
                evicted: false,
            },
            Change {
                after: None,
                before: Some(image(put("k", 0))),
                before_expired: false,
                evicted: true,
            },
        ];
        for change in cases {
            let entry = Entry::Change(Box::new(change));
            let bytes = record(&entry, AT);
            let (back, used) = decode_record(&bytes, AT).unwrap().unwrap();
            assert_eq!((back, used), (entry, bytes.len()));
        }
    }

    fn record(entry: &Entry, at: Position) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(entry, at, &mut out);
        out
    }

    #[test]
    fn segment_header_round_trip_and_checks() {
        let h = SegmentHeader {
            shard: 2,
            segment: 9,
            first_seq: 1234,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(Some(h)));
        for len in 0..SEGMENT_HEADER_LEN {
            assert_eq!(SegmentHeader::decode(&bytes[..len]), Ok(None));
        }
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(FormatError::BadMagic));
        for byte in 8..36 {
            let mut bad = bytes;
            bad[byte] ^= 0x10;
            assert!(
                matches!(
                    SegmentHeader::decode(&bad),
                    Err(FormatError::BadChecksum { .. })
                ),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn records_round_trip_in_sequence() {
        let entries = [
            put("ns:a", 0),
            Entry::Remove { key: "ns:a".into() },
            put("b", 5000),
        ];
        let mut log = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            encode_record(
                e,
                Position {
                    seq: AT.seq + i as u64,
                    ..AT
                },
                &mut log,
            );
        }
        let mut at = 0;
        for (i, e) in entries.iter().enumerate() {
            let want = Position {
                seq: AT.seq + i as u64,
                ..AT
            };
            let (got, len) = decode_record(&log[at..], want).unwrap().unwrap();
            assert_eq!(&got, e);
            at += len;
        }
        assert_eq!(at, log.len());
        assert_eq!(decode_record(&log[at..], AT), Ok(None));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for value_len in [0, 1, 100, 4095, 4096, 4097] {
            let bytes = record(&put("k", value_len), AT);
            for len in 0..bytes.len() {
                assert_eq!(
                    decode_record(&bytes[..len], AT),
                    Ok(None),
                    "{value_len}/{len}"
                );
            }
        }
    }

    #[test]
    fn the_largest_item_fits_a_record() {
        let big = put(&"k".repeat(256), ITEM_SIZE_MAX - 256);
        let bytes = record(&big, AT);
        assert!(bytes.len() - RECORD_HEADER_LEN <= RECORD_BODY_LEN_MAX);
        assert_eq!(decode_record(&bytes, AT).unwrap().unwrap().0, big);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = record(&put("ns:key", 20), AT);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode_record(&bad, AT) {
                Err(_) => {}
                // A flip in the length can make the record look longer than the bytes.
                Ok(None) if bit < 32 => {}
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_valid_record_in_the_wrong_place_is_refused() {
        let bytes = record(&put("k", 3), AT);
        for wrong in [
            Position { shard: 4, ..AT },
            Position { segment: 8, ..AT },
            Position { seq: 41, ..AT },
        ] {
            assert_eq!(
                decode_record(&bytes, wrong),
                Err(FormatError::Misplaced {
                    expected: wrong,
                    found: AT
                })
            );
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading() {
        let mut bytes = record(&put("k", 3), AT);
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_record(&bytes, AT),
            Err(FormatError::BadLength {
                body_len: u64::from(u32::MAX)
            })
        );
    }

    const TEXT: &str = "[a-z:é]{0,12}";

    /// Any item the log could hold, every field varied: as often without labels (as
    /// most items are) as with any mix of them.
    fn images() -> impl Strategy<Value = ItemImage> {
        let labels = prop_oneof![
            Just(Default::default()),
            prop::array::uniform5(prop::option::of(TEXT)),
        ];
        (
            TEXT,
            prop::collection::vec(any::<u8>(), 0..48),
            any::<i64>(),
            any::<i64>(),
            prop::option::of(any::<i64>()),
            labels,
        )
            .prop_map(|(key, value, created_ms, modified_ms, expires_s, labels)| {
                ItemImage {
                    key,
                    value,
                    created_ms,
                    modified_ms,
                    expires_s,
                    labels,
                }
            })
    }

    /// Any entry the log could hold: puts of [`images`], and removes.
    fn entries() -> impl Strategy<Value = Entry> {
        prop_oneof![
            images().prop_map(Entry::Put),
            TEXT.prop_map(|key| Entry::Remove { key })
        ]
    }

    /// The archived body of `entry`, damaged: bytes flipped, then cut at `cut` (a
    /// fraction of its length), then `tail` appended.
    fn damaged_body(
        entry: &Entry,
        flips: &[(prop::sample::Index, u8)],
        cut: Option<prop::sample::Index>,
        tail: &[u8],
    ) -> Vec<u8> {
        let mut body = rkyv::to_bytes::<rancor::Error>(entry).unwrap().to_vec();
        for (at, mask) in flips {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] ^= mask;
            }
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        body.extend_from_slice(tail);
        body
    }

    /// A body under a valid header with its CRC recomputed gets past every check
    /// before rkyv's: whatever the body, the record decodes to an entry that takes all
    /// of it, or is refused as a bad body; never a panic, never another refusal.
    fn body_is_validated(body: &[u8]) -> Result<(), TestCaseError> {
        let mut record = Vec::new();
        encode_record_body(body, AT, &mut record);
        match decode_record(&record, AT) {
            Ok(Some((entry, len))) => {
                prop_assert_eq!(len, record.len());
                // What validated is an entry the log can write again.
                let mut again = Vec::new();
                encode_record(&entry, AT, &mut again);
                prop_assert_eq!(decode_record(&again, AT), Ok(Some((entry, again.len()))));
            }
            Err(FormatError::BadBody(_)) => {}
            other => prop_assert!(false, "{} body bytes: {:?}", body.len(), other),
        }
        Ok(())
    }

    #[test]
    fn bad_bodies_under_good_headers_are_refused_by_validation() {
        let entry = put("ns:key", 20);
        let body = rkyv::to_bytes::<rancor::Error>(&entry).unwrap().to_vec();
        for bad in [
            vec![],
            vec![0xff; body.len()],
            body[..body.len() - 1].to_vec(),
            [&body[..], &[0; 8]].concat(),
        ] {
            let mut record = Vec::new();
            encode_record_body(&bad, AT, &mut record);
            assert!(
                matches!(decode_record(&record, AT), Err(FormatError::BadBody(_))),
                "{} bytes: {:?}",
                bad.len(),
                decode_record(&record, AT)
            );
        }
    }

    proptest! {
        #[test]
        fn damaged_bodies_reach_validation_and_never_panic(
            entry in entries(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=u8::MAX), 0..6),
            cut in prop::option::of(any::<prop::sample::Index>()),
            tail in prop::collection::vec(any::<u8>(), 0..24),
        ) {
            body_is_validated(&damaged_body(&entry, &flips, cut, &tail))?;
        }

        #[test]
        fn random_bodies_reach_validation_and_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            body_is_validated(&body)?;
        }

        /// The borrowed form the writer archives is byte for byte the owned `Entry`'s
        /// own archive (rkyv's derive on the owned type, not our encoder), so what the
        /// writer writes is what recovery reads.
        #[test]
        fn a_borrowed_entry_archives_as_the_owned_one(entry in entries(), scratch_len in 0usize..64) {
            let owned = rkyv::to_bytes::<rancor::Error>(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut scratch = rkyv::util::AlignedVec::new();
            scratch.extend_from_slice(&vec![7; scratch_len]);
            let mut framed = Vec::new();
            encode_record_ref(&EntryRef::from(&entry), AT, &mut scratch, &mut framed);
            prop_assert_eq!(framed.get(RECORD_HEADER_LEN..), Some(&owned[..]));
            prop_assert!(scratch.is_empty());
            prop_assert_eq!(decode_record(&framed, AT), Ok(Some((entry, framed.len()))));
        }

        /// An item as the shard keeps it (`crate::item::Item`: its labels behind one
        /// pointer, null without labels, its expiry in one word) archives as the image
        /// it was made from, so a stored item is logged and snapshotted as before.
        #[test]
        fn a_stored_item_archives_as_its_image(image in images()) {
            // The one expiry a stored item cannot hold (`item::Expiry`, tested there).
            prop_assume!(image.expires_s != Some(i64::MIN));
            let entry = Entry::Put(image.clone());
            let owned = rkyv::to_bytes::<rancor::Error>(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let item = crate::item::Item::from_image(image);
            let mut framed = Vec::new();
            encode_record_ref(&EntryRef::Put(item.image()), AT, &mut rkyv::util::AlignedVec::new(), &mut framed);
            prop_assert_eq!(framed.get(RECORD_HEADER_LEN..), Some(&owned[..]));
            prop_assert_eq!(decode_record(&framed, AT), Ok(Some((entry, framed.len()))));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&bytes, AT);
            let _ = SegmentHeader::decode(&bytes);
        }

        #[test]
        fn zero_ff_and_random_tails_are_not_records(fill in prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()], len in 0usize..128) {
            let tail = vec![fill; len];
            prop_assert!(!matches!(decode_record(&tail, AT), Ok(Some(_))));
        }
    }
}
