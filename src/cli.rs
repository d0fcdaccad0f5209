//! The data commands as humans and scripts type them, parsed with clap.
//!
//! These forms are the contract of the CLI (the server issue adds `--addr`, `--env`
//! and `--token` and runs them through the network client); the REPL uses them today
//! on the embedded engine. A result prints as one line of JSON; a refusal prints
//! `CODE: message`.

use ampd_engine::{BatchItem, Db, Error, ErrorCode, QueryOptions, SetOptions, Value};
use clap::{Args, Parser};
use serde_json::{json, Number};

/// One data command.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
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
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The key, then the value (JSON; text that is not JSON is taken as a string).
    #[arg(num_args = 0..=2)]
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
    #[arg(num_args = 2..=3, required = true, allow_hyphen_values = true)]
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

/// Runs one command on the engine and returns its result as the API shows it.
pub async fn run(db: &Db, command: Command) -> Result<Value, Error> {
    match command {
        Command::Set(a) => {
            if let Some(batch) = &a.batch {
                let items = parse_batch(batch)?;
                let items = db.set_batch(items, a.overwrite).await?;
                let items: Vec<Value> = items.iter().map(|i| i.to_entry_json(a.meta)).collect();
                return Ok(json!({ "items": items }));
            }
            let [key, value] = a.key_value.as_slice() else {
                return Err(usage("set needs KEY and JSON, or --batch"));
            };
            let mut options = SetOptions {
                meta: a.meta,
                overwrite: a.overwrite,
                ttl: a.ttl.as_deref().map(ttl_arg),
                ..Default::default()
            };
            for (slot, label) in options
                .labels
                .iter_mut()
                .zip([&a.label1, &a.label2, &a.label3, &a.label4, &a.label5])
            {
                *slot = label.clone().map(Some);
            }
            let item = db.set(key, json_arg(value), &options).await?;
            Ok(item.to_result_json(a.meta))
        }
        Command::Get(a) => {
            if a.patterns.len() > 1 {
                let items = db.get_many(&a.patterns)?;
                let items: Vec<Value> = items.iter().map(|i| i.to_entry_json(a.meta)).collect();
                return Ok(json!({ "items": items }));
            }
            let options = QueryOptions {
                meta: a.meta,
                limit: a.limit,
                reverse: a.reverse,
                start: a.start,
                label: a.label,
            };
            Ok(db.get(&a.patterns[0], &options)?.to_json(a.meta))
        }
        Command::Add(a) => {
            let (key, field, n) = match a.args.as_slice() {
                [key, n] => (key, None, n),
                [key, field, n] => (key, Some(field.as_str()), n),
                _ => return Err(usage("add needs KEY [FIELD] N")),
            };
            let amount: Number = serde_json::from_str(n)
                .map_err(|_| Error::new(ErrorCode::NotANumber, format!("{n:?} is not a number")))?;
            Ok(db.add(key, field, amount).await?.to_result_json(a.meta))
        }
        Command::Remove(a) => {
            if let [key] = a.keys.as_slice() {
                return Ok(json!(db.remove(key).await?));
            }
            Ok(json!(db.remove_many(&a.keys).await?))
        }
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
                ..Default::default()
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
            Ok(item)
        })
        .collect()
}
