//! `ampd`: for now, a REPL on the embedded engine (the server arrives with the server
//! issue). Each line is one data command in the CLI's forms; each result prints as one
//! line of JSON, each refusal as `CODE: message`.

mod cli;

// Writes allocate on one thread and free on another; mimalloc handles that without
// the arena lock that glibc's allocator takes (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ampd_engine::{Config, Db};
use clap::Parser;
use std::io::{BufRead, Write};

/// The Ampt data API as a thread-per-core key-value server.
#[derive(Debug, Parser)]
#[command(name = "ampd", version)]
enum Main {
    /// An interactive session on an in-memory engine: type `set`, `get`, `add`,
    /// `remove` as in the CLI, `help`, or `quit`.
    Repl {
        /// Shards (executors); 0 = one per core.
        #[arg(long, default_value_t = 0)]
        shards: usize,
    },
}

fn main() -> std::process::ExitCode {
    let Main::Repl { shards } = Main::parse();
    let db = match Db::open(Config {
        shards,
        ..Config::default()
    }) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "ampd {} — in-memory engine with {} shards. Commands: set, get, add, remove, help, quit.",
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

const HELP: &str = "\
set KEY JSON [--ttl T] [--label1 V ... --label5 V] [--overwrite] [--meta]
set --batch JSON_ARRAY --overwrite [--meta]
get PATTERN [PATTERN...] [--limit N] [--reverse] [--start K] [--label labelN] [--meta]
add KEY [FIELD] N [--meta]
remove KEY [KEY...]
quit";
