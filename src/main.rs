//! `ampd`: for now, a REPL on the embedded engine, durable in a data folder (the server
//! arrives with the server issue). Each line is one data command in the CLI's forms;
//! each result prints as one line of JSON, each refusal as `CODE: message`.

mod cli;

// Writes allocate on one thread and free on another; mimalloc handles that without
// the arena lock that glibc's allocator takes (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_engine::{Config, Db, FsyncPolicy};
use clap::Parser;
use std::io::{BufRead, Write};

/// The Ampt data API as a thread-per-core key-value server.
#[derive(Debug, Parser)]
#[command(name = "ampd", version)]
enum Main {
    /// An interactive session on an in-memory engine: type `set`, `get`, `add`,
    /// `remove` as in the CLI, `help`, or `quit`.
    Repl {
        /// Shards (executors); 0 = one per core. A data folder keeps its count.
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Where the write-ahead log lives.
        #[arg(long, default_value = "ampd-data")]
        data_dir: std::path::PathBuf,
        /// Keep nothing on disk (a cache: everything is gone at exit).
        #[arg(long, conflicts_with = "data_dir")]
        in_memory: bool,
        /// When a write is durable: `always` (fdatasync before the answer),
        /// `interval` (every 100 ms) or `never` (when the OS writes back).
        #[arg(long, default_value = "always", value_parser = ["always", "interval", "never"])]
        fsync: String,
    },
    /// Cuts each shard's WAL at its first bad record so a data folder that refuses to
    /// open (corruption in the middle of a log) opens with everything before the damage.
    /// What followed the damage is lost.
    Repair {
        #[arg(long, default_value = "ampd-data")]
        data_dir: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let (shards, data_dir, in_memory, fsync) = match Main::parse() {
        Main::Repl {
            shards,
            data_dir,
            in_memory,
            fsync,
        } => (shards, data_dir, in_memory, fsync),
        Main::Repair { data_dir } => return repair(&data_dir),
    };
    let fsync = match fsync.as_str() {
        "interval" => FsyncPolicy::Interval(std::time::Duration::from_millis(100)),
        "never" => FsyncPolicy::Never,
        _ => FsyncPolicy::Always,
    };
    let db = match Db::open(Config {
        shards,
        data_dir: (!in_memory).then_some(data_dir),
        fsync,
        ..Config::default()
    }) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "ampd {} — embedded engine with {} shards. Commands: set, get, add, remove, help, quit.",
        env!("CARGO_PKG_VERSION"),
        db.shard_count()
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        match line {
            "" => continue,
            "quit" | "exit" => break,
            "help" => {
                let _ = writeln!(out, "{}", HELP);
                continue;
            }
            _ => {}
        }
        let Some(words) = shlex::split(line) else {
            eprintln!("invalid_query: unbalanced quotes");
            continue;
        };
        match cli::Command::try_parse_from(words) {
            Err(e) => eprintln!("{}", e.to_string().trim_end()),
            Ok(command) => match futures::executor::block_on(cli::run(&db, command)) {
                Ok(result) => {
                    let _ = writeln!(out, "{result}");
                }
                Err(e) => eprintln!("{e}"),
            },
        }
        let _ = out.flush();
    }
    std::process::ExitCode::SUCCESS
}

/// `ampd repair`: prints each cut, or that there was nothing to repair.
fn repair(data_dir: &std::path::Path) -> std::process::ExitCode {
    match Db::repair(data_dir) {
        Ok(cuts) if cuts.is_empty() => {
            println!("{}: nothing to repair", data_dir.display());
            std::process::ExitCode::SUCCESS
        }
        Ok(cuts) => {
            for cut in cuts {
                println!("{cut}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

const HELP: &str = "\
set KEY JSON [--ttl T] [--label1 V ... --label5 V] [--overwrite] [--meta]
set --batch JSON_ARRAY --overwrite [--meta]
get PATTERN [PATTERN...] [--limit N] [--reverse] [--start K] [--label labelN] [--meta]
add KEY [FIELD] N [--meta]
remove KEY [KEY...]
quit";
