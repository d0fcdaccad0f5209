//! The data commands as humans and scripts type them, parsed with clap.
//!
//! These forms are the contract of the CLI: `ampd set|get|add|remove ...` sends them
//! to a server through the client, and the REPL runs them on an embedded engine. Each
//! becomes one protocol [`Request`]. A result prints as one line of JSON; a refusal
//! prints `CODE: message`.

use ampd_engine::{Error, ErrorCode, Value};
use ampd_wire::frame::{Add, BatchItem, Get, Patterns, Remove, Request, Set, SetBatch};
use clap::{Args, Parser};

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
    /// The key, then the value (JSON; text that is not JSON is taken as a string).
    #[arg(num_args = 0..=2, allow_negative_numbers = true)]
    pub key_value: Vec<String>,
    /// A JSON array of {key, value, ttl?, label1..5?} for a batch set.
    #[arg(long, conflicts_with = "key_value")]
    pub batch: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub ttl: Option<String>,
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
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// One pattern, or several exact keys for a batch get.
    #[arg(required = true)]
    pub patterns: Vec<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub limit: Option<i64>,
    #[arg(long)]
    pub reverse: bool,
    #[arg(long)]
    pub start: Option<String>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// KEY [FIELD] N
    #[arg(num_args = 2..=3, required = true, allow_negative_numbers = true)]
    pub args: Vec<String>,
    #[arg(long)]
    pub meta: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// A JSON argument; text that does not parse as JSON is a string.
pub fn json_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
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
    /// then agree on what it means by construction.
    pub fn into_request(self) -> Result<Request, Error> {
        Ok(match self {
            Command::Set(a) => {
                if let Some(batch) = &a.batch {
                    return Ok(Request::SetBatch(SetBatch {
                        items: parse_batch(batch)?,
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
                    value: json_arg(&value),
                    ttl: a.ttl.as_deref().map(ttl_arg),
                    labels,
                    overwrite: a.overwrite,
                    meta: a.meta,
                })
            }
            Command::Get(mut a) => Request::Get(Get {
                pattern: if a.patterns.len() == 1 {
                    Patterns::One(a.patterns.remove(0))
                } else {
                    Patterns::Many(a.patterns)
                },
                limit: a.limit,
                reverse: a.reverse,
                start: a.start,
                label: a.label,
                meta: a.meta,
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
    let Value::Array(entries) = json_arg(text) else {
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
