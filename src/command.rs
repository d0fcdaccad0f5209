//! What each request does to an environment's database, and how its result is encoded.
//!
//! Used by the server (results go into response frames) and by the REPL (results are
//! shown as JSON), so a request means the same thing in both. Results are written in
//! the wire's value encoding directly: a stored value is copied into the response as
//! the bytes the engine keeps, never decoded and re-encoded.

use ampd_engine::{Db, Error, ErrorCode, Got, Item, Value};
use ampd_wire::frame::{self, Opcode, Patterns, Request};
use ampd_wire::page;
use bytes::{BufMut, BytesMut};
use serde_json::json;

/// A request's result, ready to encode.
pub enum Reply {
    /// Nothing (`ping`): an empty payload.
    Empty,
    /// One item's result: the bare value as stored, or the item with metadata; `null`
    /// when there is no item.
    Item { item: Option<Item>, meta: bool },
    /// `{"items": [...], "lastKey"?: ...}`: a page or a batch.
    Items {
        items: Vec<Item>,
        last_key: Option<String>,
        meta: bool,
    },
    /// Anything else (booleans, arrays, the handshake, stats).
    Json(Value),
}

/// Writes that go to the owning shard (and wait for the WAL); everything else is
/// answered where it arrives.
pub fn is_write(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::Set | Opcode::SetBatch | Opcode::Add | Opcode::Remove
    )
}

/// The handshake's answer.
pub fn welcome() -> Reply {
    Reply::Json(json!({
        "version": frame::PROTOCOL_VERSION,
        "server": format!("ampd {}", env!("CARGO_PKG_VERSION")),
    }))
}

/// Answers a read (`get`, `ping`, `stats`) at once, on the calling thread. The
/// `stats` answer holds the database's counters; a server adds its own.
pub fn read(db: &Db, request: Request) -> Result<Reply, Error> {
    match request {
        Request::Ping => Ok(Reply::Empty),
        Request::Stats => Ok(Reply::Json(stats(db))),
        Request::Get(get) => {
            let options = get.options;
            let meta = options.meta;
            let pattern = match get.pattern {
                Patterns::One(pattern) => pattern,
                Patterns::Many(keys) => {
                    let paging = [
                        (options.limit.is_some(), "limit"),
                        (options.reverse, "reverse"),
                        (options.start.is_some(), "start"),
                        (options.label.is_some(), "label"),
                    ];
                    if let Some((_, option)) = paging.iter().find(|(given, _)| *given) {
                        return Err(Error::new(
                            ErrorCode::InvalidQuery,
                            format!(
                                "{option} applies to one pattern, not to a batch of {} exact keys",
                                keys.len()
                            ),
                        ));
                    }
                    return Ok(Reply::Items {
                        items: db.get_many(&keys)?,
                        last_key: None,
                        meta,
                    });
                }
            };
            Ok(match db.get(&pattern, &options)? {
                Got::Item(item) => Reply::Item { item, meta },
                Got::Page(page) => Reply::Items {
                    items: page.items,
                    last_key: page.last_key,
                    meta,
                },
            })
        }
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("{} is not a read", other.opcode()),
        )),
    }
}

/// Makes a write (`set`, batch `set`, `add`, `remove`) and answers when the engine
/// has (durably, per its fsync policy).
pub async fn write(db: &Db, request: Request) -> Result<Reply, Error> {
    match request {
        Request::Set(set) => {
            let item = db.set(set.key, set.value, &set.options).await?;
            Ok(Reply::Item {
                item: Some(item),
                meta: set.options.meta,
            })
        }
        Request::SetBatch(batch) => Ok(Reply::Items {
            items: db.set_batch(batch.items, batch.overwrite).await?,
            last_key: None,
            meta: batch.meta,
        }),
        Request::Add(add) => {
            let item = db.add(&add.key, add.field.as_deref(), add.amount).await?;
            Ok(Reply::Item {
                item: Some(item),
                meta: add.meta,
            })
        }
        Request::Remove(remove) => Ok(Reply::Json(match remove.keys {
            Patterns::One(key) => json!(db.remove(&key).await?),
            Patterns::Many(keys) => json!(db.remove_many(&keys).await?),
        })),
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("{} is not a write", other.opcode()),
        )),
    }
}

/// The database's counters, and the process's memory.
fn stats(db: &Db) -> Value {
    let (wal_records, wal_syncs) = db.wal_counters();
    let shards = db.cache_stats();
    let cache_json = |c: &ampd_engine::CacheStats| {
        json!({
            "budget": c.budget,
            "used": c.used,
            "hits": c.hits,
            "misses": c.misses,
            "evictions": c.evictions,
            "evicted_bytes": c.evicted_bytes,
        })
    };
    let total = shards
        .iter()
        .fold(ampd_engine::CacheStats::default(), |t, c| {
            ampd_engine::CacheStats {
                budget: match (t.budget, c.budget) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                },
                used: t.used + c.used,
                hits: t.hits + c.hits,
                misses: t.misses + c.misses,
                evictions: t.evictions + c.evictions,
                evicted_bytes: t.evicted_bytes + c.evicted_bytes,
            }
        });
    let mut cache = cache_json(&total);
    cache["shards"] = shards.iter().map(cache_json).collect();
    json!({
        "cache": cache,
        "items": db.stored_item_count(),
        "shards": db.shard_count(),
        "wal_records": wal_records,
        "wal_fsyncs": wal_syncs,
        "memory_allocated_bytes": crate::memory::allocated_bytes(),
        "memory_resident_bytes": crate::memory::resident_bytes(),
    })
}

impl Reply {
    /// Appends the result in the wire's value encoding (MessagePack).
    pub fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Reply::Empty => {}
            Reply::Item { item: None, .. } => write_value(out, &Value::Null),
            Reply::Item {
                item: Some(item),
                meta: false,
            } => out.put_slice(item.value_bytes()),
            Reply::Item {
                item: Some(item),
                meta: true,
            } => {
                // Writes into a BytesMut cannot fail.
                let _ = item.write_meta(&mut (&mut *out).writer());
            }
            Reply::Items {
                items,
                last_key,
                meta,
            } => {
                let mut w = (&mut *out).writer();
                page::encode(&mut w, items, last_key.as_deref(), |w, item| {
                    if *meta {
                        let _ = item.write_meta(w);
                    } else {
                        // Writes into a BytesMut cannot fail.
                        let _ = rmp::encode::write_map_len(w, 2);
                        let _ = rmp::encode::write_str(w, "key");
                        let _ = rmp::encode::write_str(w, item.key());
                        let _ = rmp::encode::write_str(w, "value");
                        w.get_mut().put_slice(item.value_bytes());
                    }
                });
            }
            Reply::Json(value) => write_value(out, value),
        }
    }

    /// The result as JSON (the REPL and the CLI show it so).
    pub fn to_json(&self) -> Value {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        if out.is_empty() {
            return Value::Null;
        }
        ampd_wire::value::decode(&out).unwrap_or(Value::Null)
    }
}

fn write_value(out: &mut BytesMut, value: &Value) {
    let mut bytes = Vec::new();
    ampd_wire::value::encode_into(value, &mut bytes);
    out.put_slice(&bytes);
}
