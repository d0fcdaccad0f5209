//! The data commands as humans and scripts type them, parsed with clap.
//!
//! These forms are the contract of the CLI: `ampd set|get|add|remove ...` sends them
//! to a server through the client, and the REPL runs them on an embedded engine. Each
//! becomes one protocol [`Request`]. A result prints as one line of JSON; a refusal
//! prints `CODE: message`.
//!
//! A JSON argument (`set`'s value, `--batch`) may be `-` (read standard input) or
//! `@PATH` (read the file), as curl and `redis-cli -x` take them: one argument is
//! capped by the OS at 128 KiB, and an item may hold 400 KiB.

use ampd_engine::{Error, ErrorCode, QueryOptions, SetOptions, Value};
use ampd_wire::frame::{Add, BatchItem, Get, Patterns, Remove, Request, Set, SetBatch};
use ampd_wire::limits::VALUE_DEPTH_MAX;
use clap::{Args, Parser};
use std::io::Read;

/// One data command.
#[derive(Debug, Parser)]
#[command(name = "ampd")]
pub enum Command {
    /// set KEY JSON [--ttl T] [--label1 V .. --label5 V] [--overwrite] [--meta]
    /// or set --batch JSON_ARRAY --overwrite [--meta]
    Set(SetArgs),
    /// get PATTERN [PATTERN...] [--limit N] [--reverse] [--start K] [--label labelN] [--meta]
    Get(GetArgs),
    /// add KEY [FIELD] N [--meta]
    Add(AddArgs),
    /// remove KEY [KEY...]
    Remove(RemoveArgs),
    /// stats: the server's counters and per-operation service times, as JSON
    Stats,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The key, then the value (JSON; text that is not JSON is taken as a string;
    /// `-` reads it from standard input, `@PATH` from a file).
    #[arg(num_args = 0..=2, allow_negative_numbers = true)]
    pub key_value: Vec<String>,
    /// A JSON array of {key, value, ttl?, label1..5?} for a batch set (or `-`, `@PATH`).
    #[arg(long, conflicts_with = "key_value")]
    pub batch: Option<String>,
    /// Seconds from now, an epoch second, an ISO-8601 date, or `null` (clear).
    #[arg(long, allow_hyphen_values = true)]
    pub ttl: Option<String>,
    /// Label values (`null` clears one).
    #[arg(long)]
    pub label1: Option<String>,
    #[arg(long)]
    pub label2: Option<String>,
    #[arg(long)]
    pub label3: Option<String>,
    #[arg(long)]
    pub label4: Option<String>,
    #[arg(long)]
    pub label5: Option<String>,
    /// Replace the item whole instead of merging (required with --batch).
    #[arg(long)]
    pub overwrite: bool,
    /// Answer with the item's metadata.
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// One pattern, or several exact keys for a batch get.
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Items per page, 1..=1000 (default 100).
    #[arg(long, allow_hyphen_values = true)]
    pub limit: Option<i64>,
    /// Descending order.
    #[arg(long)]
    pub reverse: bool,
    /// Resume after this key: the lastKey of the previous page.
    #[arg(long)]
    pub start: Option<String>,
    /// label1..label5: query that label's values instead of keys.
    #[arg(long)]
    pub label: Option<String>,
    /// Answer with the items' metadata.
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// KEY [FIELD] N
    #[arg(num_args = 2..=3, required = true, allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Answer with the item's metadata.
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// Where a JSON argument's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `-` reads standard input (the CLI).
    Stdin,
    /// Standard input carries the commands themselves (the REPL): `-` is refused.
    Commands,
}

/// The text of a JSON argument: `-` is standard input, `@PATH` a file, anything else
/// itself. Read text loses one line ending at its end, which `echo` and editors add.
fn arg_text(arg: String, input: Input) -> Result<String, Error> {
    let read_failed =
        |what: &str, e: std::io::Error| usage(format!("cannot read the value from {what}: {e}"));
    let mut text = if arg == "-" {
        if input == Input::Commands {
            return Err(usage(
                "`-` (standard input) is not available here: give the value, or @PATH",
            ));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| read_failed("standard input", e))?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| read_failed(path, e))?
    } else {
        return Ok(arg);
    };
    for ending in ["\r\n", "\n"] {
        if text.ends_with(ending) {
            text.truncate(text.len() - ending.len());
            break;
        }
    }
    Ok(text)
}

/// A JSON argument; text that does not parse as JSON is a string. Valid JSON nested
/// deeper than a stored value may be is refused, not taken as a string.
pub fn json_arg(text: &str) -> Result<Value, Error> {
    let too_deep = |depth: &str| {
        Error::new(
            ErrorCode::ValueTooLarge,
            format!("the value nests {depth} levels deep, limit {VALUE_DEPTH_MAX}"),
        )
    };
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let depth = ampd_wire::value::depth(&value);
            if depth > VALUE_DEPTH_MAX {
                return Err(too_deep(&depth.to_string()));
            }
            Ok(value)
        }
        // serde_json stops at 128 levels (past VALUE_DEPTH_MAX) with this message and
        // no category of its own: the text is JSON, only too deep.
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Err(too_deep("more than 127"))
        }
        Err(_) => Ok(Value::String(text.to_owned())),
    }
}

/// A ttl argument: a whole number of seconds, `null`, or a date string.
fn ttl_arg(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Null)) => v,
        _ => Value::String(text.to_owned()),
    }
}

fn usage(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidQuery, message)
}

impl Command {
    /// The protocol request this command stands for: the CLI, the REPL and the server
    /// then agree on what it means by construction. `input` says whether `-` may read
    /// standard input.
    pub fn into_request(self, input: Input) -> Result<Request, Error> {
        Ok(match self {
            Command::Set(a) => {
                if let Some(batch) = a.batch {
                    return Ok(Request::SetBatch(SetBatch {
                        items: parse_batch(&arg_text(batch, input)?)?,
                        overwrite: a.overwrite,
                        meta: a.meta,
                    }));
                }
                let [key, value] = <[String; 2]>::try_from(a.key_value)
                    .map_err(|_| usage("set needs KEY and JSON, or --batch"))?;
                // `--labelN null` clears the label (as `null` does in the API).
                let labels = [a.label1, a.label2, a.label3, a.label4, a.label5]
                    .map(|l| l.map(|l| (l != "null").then_some(l)));
                Request::Set(Set {
                    key,
                    value: json_arg(&arg_text(value, input)?)?.into(),
                    options: SetOptions {
                        meta: a.meta,
                        overwrite: a.overwrite,
                        ttl: a.ttl.as_deref().map(ttl_arg),
                        labels,
                    },
                })
            }
            Command::Get(mut a) => Request::Get(Get {
                pattern: if a.patterns.len() == 1 {
                    Patterns::One(a.patterns.remove(0))
                } else {
                    Patterns::Many(a.patterns)
                },
                options: QueryOptions {
                    meta: a.meta,
                    limit: a.limit,
                    reverse: a.reverse,
                    start: a.start,
                    label: a.label,
                },
            }),
            Command::Add(a) => {
                let (key, field, n) = match <[String; 2]>::try_from(a.args) {
                    Ok([key, n]) => (key, None, n),
                    Err(args) => match <[String; 3]>::try_from(args) {
                        Ok([key, field, n]) => (key, Some(field), n),
                        Err(_) => return Err(usage("add needs KEY [FIELD] N")),
                    },
                };
                let amount = serde_json::from_str(&n).map_err(|_| {
                    Error::new(ErrorCode::NotANumber, format!("{n:?} is not a number"))
                })?;
                Request::Add(Add {
                    key,
                    field,
                    amount,
                    meta: a.meta,
                })
            }
            Command::Stats => Request::Stats,
            Command::Remove(mut a) => Request::Remove(Remove {
                keys: if a.keys.len() == 1 {
                    Patterns::One(a.keys.remove(0))
                } else {
                    Patterns::Many(a.keys)
                },
            }),
        })
    }
}

fn parse_batch(text: &str) -> Result<Vec<BatchItem>, Error> {
    let Value::Array(entries) = json_arg(text)? else {
        return Err(usage("--batch takes a JSON array of {key, value, ...}"));
    };
    entries
        .into_iter()
        .map(|e| {
            let Value::Object(mut m) = e else {
                return Err(usage("each batch entry is an object {key, value, ...}"));
            };
            let key = match m.remove("key") {
                Some(Value::String(k)) => k,
                _ => return Err(usage("each batch entry needs a string \"key\"")),
            };
            let mut item = BatchItem {
                key,
                value: m.remove("value").unwrap_or(Value::Null),
                ttl: m.remove("ttl"),
                labels: Default::default(),
            };
            for (i, slot) in item.labels.iter_mut().enumerate() {
                *slot = match m.remove(&format!("label{}", i + 1)) {
                    Some(Value::String(l)) => Some(l),
                    None | Some(Value::Null) => None,
                    Some(other) => {
                        return Err(usage(format!("label{} is {other}, not a string", i + 1)))
                    }
                };
            }
            if let Some(field) = m.keys().next() {
                return Err(usage(format!(
                    "batch entry field {field:?} is not one of key, value, ttl, label1..label5"
                )));
            }
            Ok(item)
        })
        .collect()
}
