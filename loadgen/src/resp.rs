//! The Redis driver (`--redis`): RESP2 frames, and each operation as the Redis
//! commands that do the same work, so Redis and ampd run under the same pacing and
//! histograms (`connection.rs`).
//!
//! | op | ampd | Redis |
//! | --- | --- | --- |
//! | get | `get key` | `GET key` |
//! | set | `set key value label1` | `SET key value` (the key's index entries, below, never change: they are written at preload) |
//! | add | `add counter 1` | `INCRBY counter 1` |
//! | range | `get ns:>=k{i} limit 10` | `ZRANGEBYLEX z:ns [key + LIMIT 0 10` on the namespace's sorted set of keys |
//! | label | `get label label1 limit 10` | `ZRANGE l1:label 0 9` on the label's sorted set of keys |
//! | ping | `ping` | `PING` |
//! | preload, 25 keys | `set_batch` | `MSET` of the 25, then a `ZADD` to each key's namespace set and label set |
//!
//! ampd keeps its key order and label index itself; on Redis the sorted sets stand in
//! for them, kept at preload (all members have score 0, so they sort by key, as ampd's
//! pages do). Without `--preload` they are empty and range and label read nothing.
//! `SCAN MATCH prefix*` was the other candidate; it walks hash buckets, not key order,
//! so `COUNT 10` neither returns 10 keys nor does the work of a range read.
//!
//! Replies come in order, so they carry no id ([`Reply::id`] is `None`).
//!
//! # RESP2 replies
//! `+simple\r\n`, `-error\r\n`, `:integer\r\n`, `$len\r\n<len bytes>\r\n` (`$-1` nil),
//! `*count\r\n<count replies>` (`*-1` nil). [`decode`] reads one from a buffer without
//! copying: `Ok(None)` while it has not all arrived.

use crate::connection::{is_timeout, read_some};
use crate::connection::{Protocol, Reply, Request};
use crate::keys::{decimal, KeySpace};
use crate::mix::Op;
use crate::value::ValueSource;
use bytes::{Buf, BufMut, BytesMut};
use std::fmt::Write;
use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Keys per preload unit, as for ampd.
pub const PRELOAD_UNIT: u64 = ampd_wire::limits::BATCH_ITEMS_MAX as u64;

/// A bulk string longer than Redis's own limit (512 MiB) is a broken stream.
pub const BULK_LEN_MAX: i64 = 512 * 1024 * 1024;

/// Nesting of arrays in a reply; Redis's answers here nest one level.
pub const DEPTH_MAX: usize = 8;

/// A line (simple string, error, integer, header) longer than this is a broken stream.
pub const LINE_LEN_MAX: usize = 64 * 1024;

/// A decoded reply, borrowing from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    /// `None` is the nil bulk string.
    Bulk(Option<&'a [u8]>),
    /// `None` is the nil array.
    Array(Option<Vec<RespValue<'a>>>),
}

/// Decodes the reply at the front of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)`
/// if it has not all arrived, `Err` if the bytes are not RESP2.
pub fn decode(buf: &[u8]) -> Result<Option<(RespValue<'_>, usize)>, String> {
    decode_at(buf, 0, 0)
}

fn decode_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(RespValue<'_>, usize)>, String> {
    if depth > DEPTH_MAX {
        return Err(format!("a reply nested past {DEPTH_MAX} arrays"));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some((line, after)) = line(buf, at + 1)? else {
        return Ok(None);
    };
    let reply = match tag {
        b'+' => (RespValue::Simple(line), after),
        b'-' => (RespValue::Error(line), after),
        b':' => (RespValue::Integer(integer(line)?), after),
        b'$' => {
            let len = integer(line)?;
            if len == -1 {
                (RespValue::Bulk(None), after)
            } else if !(0..=BULK_LEN_MAX).contains(&len) {
                return Err(format!("bulk length {len}, allowed -1..={BULK_LEN_MAX}"));
            } else {
                let end = after + len as usize;
                let Some(tail) = buf.get(end..end + 2) else {
                    return Ok(None);
                };
                if tail != b"\r\n" {
                    return Err(format!("bulk string of {len} bytes not followed by CRLF"));
                }
                (RespValue::Bulk(Some(&buf[after..end])), end + 2)
            }
        }
        b'*' => {
            let count = integer(line)?;
            if count == -1 {
                (RespValue::Array(None), after)
            } else if count < 0 {
                return Err(format!("array length {count}"));
            } else {
                // Each element takes at least 3 bytes ("+\r\n"): the count read from the
                // peer never sizes an allocation past what has arrived.
                let mut items = Vec::with_capacity((count as usize).min((buf.len() - after) / 3));
                let mut pos = after;
                for _ in 0..count {
                    let Some((item, next)) = decode_at(buf, pos, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    pos = next;
                }
                (RespValue::Array(Some(items)), pos)
            }
        }
        other => {
            return Err(format!(
                "reply starts with byte {other:#04x}, not a RESP2 type"
            ))
        }
    };
    Ok(Some(reply))
}

/// The line starting at `from` (without its CRLF) and the position after the CRLF.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(n) if n > LINE_LEN_MAX => Err(format!("a line of {n} bytes, limit {LINE_LEN_MAX}")),
        Some(n) => Ok(Some((&rest[..n], from + n + 2))),
        None if rest.len() > LINE_LEN_MAX => Err(format!(
            "no CRLF in {} bytes, limit {LINE_LEN_MAX}",
            rest.len()
        )),
        None => Ok(None),
    }
}

fn integer(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(line)))
}

/// Appends a command: an array of bulk strings.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    let mut digits = [0u8; 20];
    out.put_u8(b'*');
    out.put_slice(decimal(args.len() as u64, &mut digits).as_bytes());
    out.put_slice(b"\r\n");
    for arg in args {
        out.put_u8(b'$');
        out.put_slice(decimal(arg.len() as u64, &mut digits).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Connects, authenticates if a token is given (`AUTH token`), and checks with a `PING`
/// that a Redis server answers. Every read and write of it is bounded by `timeout`.
pub fn connect(addr: &str, token: Option<&str>, timeout: Duration) -> Result<TcpStream, String> {
    let mut stream = crate::connection::open(addr, timeout)?;
    let late = |e: &std::io::Error| {
        is_timeout(e).then(|| format!("no answer from {addr} within {timeout:?}"))
    };
    let mut out = BytesMut::new();
    let mut expected = 1;
    if let Some(t) = token {
        encode_command(&mut out, &[b"AUTH", t.as_bytes()]);
        expected += 1;
    }
    encode_command(&mut out, &[b"PING"]);
    stream
        .write_all(&out)
        .map_err(|e| late(&e).unwrap_or(format!("send to {addr}: {e}")))?;
    let mut buf = BytesMut::new();
    while expected > 0 {
        match decode(&buf)? {
            Some((reply, used)) => {
                if let RespValue::Error(e) = reply {
                    return Err(format!("refused: {}", String::from_utf8_lossy(e)));
                }
                buf.advance(used);
                expected -= 1;
            }
            None => {
                let n = read_some(&mut stream, &mut buf)
                    .map_err(|e| late(&e).unwrap_or(format!("read from {addr}: {e}")))?;
                if n == 0 {
                    return Err(format!("{addr} closed the connection"));
                }
            }
        }
    }
    Ok(stream)
}

/// One connection's scratch names and its values.
pub struct Redis {
    keys: Arc<KeySpace>,
    values: ValueSource,
    key: String,
    set: String,
    start: String,
}

impl Redis {
    pub fn new(keys: Arc<KeySpace>, values: ValueSource) -> Redis {
        Redis {
            keys,
            values,
            key: String::new(),
            set: String::new(),
            start: String::new(),
        }
    }
}

impl Protocol for Redis {
    fn encode(&mut self, request: Request, _id: u32, out: &mut BytesMut) -> Result<u32, String> {
        let keys = &*self.keys;
        match request {
            Request::Op { op, key } => {
                match op {
                    Op::Get => {
                        keys.key(key, &mut self.key);
                        encode_command(out, &[b"GET", self.key.as_bytes()]);
                    }
                    Op::Set => {
                        keys.key(key, &mut self.key);
                        let value = self.values.next_value().as_bytes();
                        encode_command(out, &[b"SET", self.key.as_bytes(), value]);
                    }
                    Op::Add => {
                        keys.counter(key, &mut self.key);
                        encode_command(out, &[b"INCRBY", self.key.as_bytes(), b"1"]);
                    }
                    Op::Range => {
                        keys.redis_range_set(key, &mut self.set);
                        keys.key(key, &mut self.key);
                        self.start.clear();
                        self.start.push('[');
                        self.start.push_str(&self.key);
                        encode_command(
                            out,
                            &[
                                b"ZRANGEBYLEX",
                                self.set.as_bytes(),
                                self.start.as_bytes(),
                                b"+",
                                b"LIMIT",
                                b"0",
                                b"10",
                            ],
                        );
                    }
                    Op::Label => {
                        keys.redis_label_set(key, &mut self.set);
                        encode_command(out, &[b"ZRANGE", self.set.as_bytes(), b"0", b"9"]);
                    }
                    Op::Ping => encode_command(out, &[b"PING"]),
                }
                Ok(1)
            }
            Request::Preload { first, end } => {
                // MSET k1 v1 k2 v2 ...: built by hand, its argument count varies.
                let n = end - first;
                let _ = write!(out, "*{}\r\n$4\r\nMSET\r\n", 1 + 2 * n);
                for i in first..end {
                    keys.key(i, &mut self.key);
                    let _ = write!(out, "${}\r\n{}\r\n", self.key.len(), self.key);
                    let value = self.values.next_value();
                    let _ = write!(out, "${}\r\n", value.len());
                    out.put_slice(value.as_bytes());
                    out.put_slice(b"\r\n");
                }
                for i in first..end {
                    keys.key(i, &mut self.key);
                    keys.redis_range_set(i, &mut self.set);
                    encode_command(
                        out,
                        &[b"ZADD", self.set.as_bytes(), b"0", self.key.as_bytes()],
                    );
                    keys.redis_label_set(i, &mut self.set);
                    encode_command(
                        out,
                        &[b"ZADD", self.set.as_bytes(), b"0", self.key.as_bytes()],
                    );
                }
                Ok(1 + 2 * n as u32)
            }
        }
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, String> {
        let Some((reply, used)) = decode(buf)? else {
            return Ok(None);
        };
        let error = match reply {
            RespValue::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        };
        // GET answers a missing key with the null bulk string.
        let missing = reply == RespValue::Bulk(None);
        buf.advance(used);
        Ok(Some(Reply {
            id: None,
            error,
            missing,
        }))
    }

    fn tagged(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Dist, ZIPF_THETA};

    #[test]
    fn decodes_every_reply_type() {
        let cases: Vec<(&[u8], RespValue)> = vec![
            (b"+OK\r\n", RespValue::Simple(b"OK")),
            (b"-ERR wrong type\r\n", RespValue::Error(b"ERR wrong type")),
            (b":-42\r\n", RespValue::Integer(-42)),
            (b"$5\r\nhello\r\n", RespValue::Bulk(Some(b"hello"))),
            (b"$0\r\n\r\n", RespValue::Bulk(Some(b""))),
            (b"$-1\r\n", RespValue::Bulk(None)),
            (b"*-1\r\n", RespValue::Array(None)),
            (b"*0\r\n", RespValue::Array(Some(vec![]))),
            (
                b"*3\r\n$1\r\na\r\n:1\r\n*1\r\n+x\r\n",
                RespValue::Array(Some(vec![
                    RespValue::Bulk(Some(b"a")),
                    RespValue::Integer(1),
                    RespValue::Array(Some(vec![RespValue::Simple(b"x")])),
                ])),
            ),
            // A bulk string may hold CRLF: its length, not a delimiter, ends it.
            (b"$4\r\na\r\nb\r\n", RespValue::Bulk(Some(b"a\r\nb"))),
        ];
        for (bytes, want) in cases {
            let (got, used) = decode(bytes).unwrap().unwrap();
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(used, bytes.len());
            // Every proper prefix needs more.
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..cut]).unwrap(),
                    None,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }

    #[test]
    fn leaves_what_follows_a_reply() {
        let (got, used) = decode(b"+OK\r\n:1\r\n").unwrap().unwrap();
        assert_eq!((got, used), (RespValue::Simple(b"OK"), 5));
    }

    #[test]
    fn refuses_what_is_not_resp2() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde\r\n",
            b"*-5\r\n",
            b"$99999999999\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(DEPTH_MAX + 2) + ":1\r\n";
        assert!(decode(deep.as_bytes()).is_err());
        let long = vec![b'+'; LINE_LEN_MAX + 10];
        assert!(decode(&long).is_err());
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[b"SET", b"k1", b""]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$0\r\n\r\n");
    }

    /// Splits `out` into commands, each as its arguments (a command is an array reply
    /// in RESP's grammar, so the decoder reads it).
    fn commands(out: &[u8]) -> Vec<Vec<String>> {
        let mut at = 0;
        let mut all = Vec::new();
        while at < out.len() {
            let (v, used) = decode(&out[at..]).unwrap().unwrap();
            let RespValue::Array(Some(items)) = v else {
                panic!("{v:?}")
            };
            all.push(
                items
                    .into_iter()
                    .map(|i| match i {
                        RespValue::Bulk(Some(b)) => String::from_utf8(b.to_vec()).unwrap(),
                        other => panic!("{other:?}"),
                    })
                    .collect(),
            );
            at += used;
        }
        all
    }

    #[test]
    fn ops_and_preload_become_the_documented_commands() {
        let mut r = Redis::new(
            Arc::new(KeySpace::new(100, 10, Dist::Uniform, ZIPF_THETA)),
            ValueSource::constant("vv"),
        );
        let mut out = BytesMut::new();
        for op in Op::ALL {
            assert_eq!(
                r.encode(Request::Op { op, key: 42 }, 0, &mut out).unwrap(),
                1
            );
        }
        let got = commands(&out);
        let want: Vec<Vec<&str>> = vec![
            vec!["GET", "ns2:k42"],
            vec!["SET", "ns2:k42", "vv"],
            vec!["INCRBY", "ns2:c42", "1"],
            vec!["ZRANGEBYLEX", "z:ns2", "[ns2:k42", "+", "LIMIT", "0", "10"],
            vec!["ZRANGE", "l1:ns2:g42", "0", "9"],
            vec!["PING"],
        ];
        assert_eq!(got, want);

        out.clear();
        let replies = r
            .encode(Request::Preload { first: 10, end: 12 }, 0, &mut out)
            .unwrap();
        assert_eq!(replies, 5);
        let got = commands(&out);
        let want: Vec<Vec<&str>> = vec![
            vec!["MSET", "ns0:k10", "vv", "ns1:k11", "vv"],
            vec!["ZADD", "z:ns0", "0", "ns0:k10"],
            vec!["ZADD", "l1:ns0:g10", "0", "ns0:k10"],
            vec!["ZADD", "z:ns1", "0", "ns1:k11"],
            vec!["ZADD", "l1:ns1:g11", "0", "ns1:k11"],
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn ranged_values_are_drawn_per_set_and_per_preloaded_key() {
        let values = crate::value::Values::log_uniform(1, 300, 2);
        let mut r = Redis::new(
            Arc::new(KeySpace::new(100, 10, Dist::Uniform, ZIPF_THETA)),
            values.source(2, 3),
        );
        let mut expected = values.source(2, 3);
        let mut out = BytesMut::new();
        for key in 0..20 {
            r.encode(Request::Op { op: Op::Set, key }, 0, &mut out)
                .unwrap();
        }
        r.encode(Request::Preload { first: 0, end: 3 }, 0, &mut out)
            .unwrap();
        let got = commands(&out);
        for set in &got[..20] {
            assert_eq!(set[2], expected.next_value());
        }
        let mset = &got[20];
        for i in 0..3 {
            assert_eq!(mset[2 + 2 * i], expected.next_value());
        }
    }

    #[test]
    fn replies_are_untagged_and_errors_named() {
        let mut r = Redis::new(
            Arc::new(KeySpace::new(10, 0, Dist::Uniform, ZIPF_THETA)),
            ValueSource::constant("v"),
        );
        let mut buf = BytesMut::from(&b"$2\r\nvv\r\n-WRONGTYPE no\r\n*2\r\n$1\r\na"[..]);
        assert_eq!(
            r.decode(&mut buf).unwrap(),
            Some(Reply {
                id: None,
                error: None,
                missing: false
            })
        );
        let e = r.decode(&mut buf).unwrap().unwrap();
        assert_eq!(e.error.as_deref(), Some("WRONGTYPE no"));
        assert_eq!(
            r.decode(&mut buf).unwrap(),
            None,
            "a partial array needs more"
        );
        buf.extend_from_slice(b"\r\n$1\r\nb\r\n");
        assert_eq!(
            r.decode(&mut buf).unwrap(),
            Some(Reply {
                id: None,
                error: None,
                missing: false
            })
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_get_answered_null_is_a_miss_and_a_value_a_hit() {
        use crate::connection::Lookup;
        let mut r = Redis::new(
            Arc::new(KeySpace::new(10, 0, Dist::Uniform, ZIPF_THETA)),
            ValueSource::constant("v"),
        );
        for (bytes, want) in [
            (&b"$-1\r\n"[..], Some(Lookup::Miss)),
            (b"$2\r\nvv\r\n", Some(Lookup::Hit)),
            // An empty string is a value.
            (b"$0\r\n\r\n", Some(Lookup::Hit)),
            // Only the null bulk string is GET's "missing"; other nulls are not.
            (b"*-1\r\n", Some(Lookup::Hit)),
            (b"+OK\r\n", Some(Lookup::Hit)),
            // A refusal is neither: it counts as an error.
            (b"-WRONGTYPE no\r\n", None),
        ] {
            let mut buf = BytesMut::from(bytes);
            let reply = r.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(
                Lookup::of(&reply),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
