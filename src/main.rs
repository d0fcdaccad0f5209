//! `ampd`: the server (`ampd serve`), the CLI that talks to it (`ampd set|get|add|remove`),
//! the offline repair of a data folder (`ampd repair`) and a REPL on an embedded engine
//! (`ampd repl`).
//!
//! # Layout
//! - `server`: the listeners on the shards' executors, limits, deadlines, shutdown.
//! - `connection`: one client connection: its stream, and its session (frames to
//!   requests to answers).
//! - `command`: what each protocol request does to a database, and its encoding.
//! - `env`: environments and their tokens.
//! - `memory`: the counting allocator behind `--max-memory`.
//! - `latency`: service time per operation, for `stats`.
//! - `cli`: the CLI's command forms, each one protocol request.

// Nothing a peer or a user sends may panic the process: errors are returned.
#![deny(clippy::unwrap_used)]

mod cli;
mod command;
mod connection;
mod env;
mod events;
mod latency;
mod memory;
mod server;

// Writes allocate on one thread and free on another; mimalloc handles that without
// the arena lock that glibc's allocator takes (see ARCHITECTURE.md). Counted, for
// `--max-memory` and `stats`.
#[global_allocator]
static ALLOCATOR: memory::Counted = memory::Counted(mimalloc::MiMalloc);

use ampd_engine::{layout, Config, Db, Error, ErrorCode, FsyncPolicy, Value};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The Ampt data API as a thread-per-core key-value server.
#[derive(Debug, Parser)]
#[command(name = "ampd", version)]
struct Main {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connect: Connect,
}

/// Where the CLI connects (and, for `serve`, where it listens).
#[derive(Debug, Args)]
struct Connect {
    /// The server's address (`serve`: the address to listen on).
    #[arg(long, global = true, env = "AMPD_ADDR", default_value = ampd_wire::frame::ADDR_DEFAULT)]
    addr: String,
    /// The environment (`serve`: NAME[=TOKEN], repeatable; default `dev` without a
    /// token).
    #[arg(long, global = true, env = "AMPD_ENV")]
    env: Vec<String>,
    /// The environment's token.
    #[arg(long, global = true, env = "AMPD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// What `ampd` is asked to do: serve, one data command (the CLI), repair, or a REPL.
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the data API over the network.
    Serve(Serve),
    #[command(flatten)]
    Data(cli::Command),
    /// Cut each shard's WAL at its first bad record, so a data folder that refuses to
    /// open (corruption in the middle of a log) opens with everything before the damage.
    /// What followed the damage is lost. Run it on a stopped server's folder.
    Repair {
        #[arg(long, default_value = "ampd-data")]
        data_dir: PathBuf,
    },
    /// An interactive session on an embedded engine (no server) over the data folder
    /// of one environment (`--env`, default `dev`), the same folder `ampd serve` keeps
    /// it in: type `set`, `get`, `add`, `remove` as in the CLI, `help`, or `quit`. Run
    /// it on a stopped server's folder.
    Repl {
        #[command(flatten)]
        storage: Storage,
    },
    /// Subscribe: open (or join) the server's subscription NAME with one or more event
    /// filters (`created`, `updated:users:*`, `*:order_*`...) and print each event as a
    /// line of JSON, acknowledging it once printed. Keeps running: it reconnects (with
    /// backoff) when the server restarts or the connection drops, and resumes the
    /// subscription.
    On {
        name: String,
        #[arg(required = true)]
        filters: Vec<String>,
        /// Run this command (through `sh -c`) for each event instead of printing it,
        /// the event's JSON on its standard input; a non-zero exit is a failure, which
        /// the server retries with its backoff and in the end dead-letters.
        #[arg(long)]
        exec: Option<String>,
    },
    /// The server's event subscriptions.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

/// `ampd events ...`
#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// List subscription NAME's dead letters (one JSON array: event, last error,
    /// attempts), or with --replay deliver them again.
    DeadLetters {
        name: String,
        #[arg(long)]
        replay: bool,
    },
    /// Remove subscription NAME with its position and dead letters (prints true if it
    /// existed). A later `ampd on NAME` starts it afresh.
    Remove { name: String },
}

/// Where and how the data is kept.
#[derive(Debug, Args)]
struct Storage {
    /// Shards (executors, one per core); 0 = one per core. A data folder keeps its count.
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// The data folder (each environment in `env/NAME` below it).
    #[arg(long, default_value = "ampd-data")]
    data_dir: PathBuf,
    /// Keep nothing on disk (a cache: everything is gone at exit).
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// When a write is durable.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
}

/// `--fsync`: when a write is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fsync {
    /// fdatasync before the answer.
    Always,
    /// fdatasync every 100 ms.
    Interval,
    /// When the OS writes back.
    Never,
}

impl Fsync {
    fn policy(self) -> FsyncPolicy {
        match self {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(100)),
            Fsync::Never => FsyncPolicy::Never,
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

#[derive(Debug, Args)]
struct Serve {
    #[command(flatten)]
    storage: Storage,
    /// Connections beyond this many are refused with `busy`.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// A memory budget (bytes, or with K/M/G/KiB/MiB/GiB). With `--eviction none`
    /// (the default): past this much allocated memory writes get `memory_limit`; reads
    /// and removes go on. With an eviction policy: the budget of the items (split
    /// evenly over the environments and their shards), kept by evicting.
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// What a full `--max-memory` does: `s3fifo` (recommended) or `lru` evict, the
    /// cache tier; `none` refuses writes.
    #[arg(long, default_value = "none")]
    eviction: ampd_engine::Eviction,
    /// A connection with nothing to do for this long is closed.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// The handshake, and each frame once its first byte has arrived, must complete
    /// within this.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    frame_timeout: Duration,
    /// Let each shard wait up to this long (e.g. 200us) for more network and disk
    /// completions before it wakes: less CPU per request under moderate load, for up
    /// to this much latency (io_uring's minimum wait, Linux 6.12 or later). Off unless
    /// given.
    #[arg(long, value_parser = humantime::parse_duration)]
    coalesce: Option<Duration>,
    /// An event handler (an `on` subscription's client) that fails is retried first
    /// after this long...
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    event_retry_first: Duration,
    /// ...the delay doubling up to this...
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    event_retry_max: Duration,
    /// ...for this long after its first failure, when the event moves to the
    /// subscription's dead letters.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    event_retry_for: Duration,
    /// A pushed event not acknowledged within this long is delivered again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    event_ack_timeout: Duration,
    /// WAL each shard keeps, beyond what recovery needs, for subscriptions that have
    /// not finished with it (bytes, or with K/M/G/KiB/MiB/GiB); one further behind
    /// is reported, and after a restart refused until it is unsubscribed.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    event_backlog_max: u64,
}

fn main() -> ExitCode {
    install_logging();
    let main = Main::parse();
    match main.command {
        Command::Serve(serve) => run_serve(serve, main.connect),
        Command::Data(command) => run_cli(command.into_request(cli::Input::Stdin), main.connect),
        Command::Events { command } => {
            let request = match command {
                EventsCommand::DeadLetters { name, replay } => {
                    ampd_wire::frame::Request::DeadLetters(ampd_wire::frame::DeadLetters {
                        name,
                        replay,
                    })
                }
                EventsCommand::Remove { name } => {
                    ampd_wire::frame::Request::Unsubscribe(ampd_wire::frame::Unsubscribe { name })
                }
            };
            run_cli(Ok(request), main.connect)
        }
        Command::Repair { data_dir } => repair(&data_dir),
        Command::Repl { storage } => repl(storage, main.connect),
        Command::On {
            name,
            filters,
            exec,
        } => run_on(&name, &filters, exec, main.connect),
    }
}

/// The engine logs through `tracing`; the binary writes its events to stderr, one
/// `ampd: message` line each (no time, level or target), as the server always has.
fn install_logging() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .event_format(LogLine)
        .finish();
    // Only fails when one is already installed, which is then used instead.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// `ampd: ` and the event's message and fields.
struct LogLine;

impl<S, N> FormatEvent<S, N> for LogLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str("ampd: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

impl Storage {
    fn config(&self) -> Config {
        Config {
            shards: self.shards,
            pin: true,
            data_dir: (!self.in_memory).then(|| self.data_dir.clone()),
            fsync: self.fsync.policy(),
            ..Config::default()
        }
    }
}

/// `ampd serve`: runs until SIGINT or SIGTERM, then finishes what is in flight, syncs
/// and exits.
fn run_serve(serve: Serve, connect: Connect) -> ExitCode {
    match serve_until_signalled(serve, connect) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ampd: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve_until_signalled(serve: Serve, connect: Connect) -> Result<(), String> {
    let addr: SocketAddr = connect
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {}: {e}", connect.addr))?
        .next()
        .ok_or_else(|| format!("--addr {} names no address", connect.addr))?;
    if connect.token.is_some() {
        return Err("serve takes tokens as --env NAME=TOKEN, not --token".into());
    }
    let names = if connect.env.is_empty() {
        vec![ampd_wire::frame::ENV_DEFAULT.to_owned()]
    } else {
        connect.env
    };
    let mut specs = Vec::new();
    for name in &names {
        let spec: env::EnvSpec = name.parse()?;
        if specs.iter().any(|s: &env::EnvSpec| s.name == spec.name) {
            return Err(format!("environment {} is given twice", spec.name));
        }
        if !addr.ip().is_loopback() && spec.token.is_none() {
            return Err(format!(
                "refusing to listen on {addr}: environment {} has no token (give --env {}=TOKEN; \
                 only a loopback address may serve an environment without one)",
                spec.name, spec.name
            ));
        }
        specs.push(spec);
    }
    let config = Config {
        coalesce: serve.coalesce,
        event_retry: ampd_engine::Retry {
            first: serve.event_retry_first,
            max: serve.event_retry_max,
            give_up_after: serve.event_retry_for,
        },
        event_backlog_max: serve.event_backlog_max,
        eviction: serve.eviction,
        max_memory: match serve.eviction {
            ampd_engine::Eviction::None => None,
            _ => Some(
                serve
                    .max_memory
                    .ok_or("--eviction needs --max-memory (the budget it keeps)")?
                    / specs.len().max(1) as u64,
            ),
        },
        ..serve.storage.config()
    };
    if config.max_memory.is_some() {
        memory::return_freed_pages_at_once();
    }
    let mut envs = Vec::new();
    for spec in specs {
        let env = env::Env::open(spec, config.clone(), serve.event_ack_timeout);
        envs.push(env.map_err(|e| e.to_string())?);
    }
    let limits = server::Limits {
        max_connections: serve.max_connections,
        // With eviction the engine keeps the budget; the allocator's count is reported.
        max_memory_bytes: serve
            .max_memory
            .filter(|_| serve.eviction == ampd_engine::Eviction::None),
        idle_timeout: serve.idle_timeout,
        frame_timeout: serve.frame_timeout,
    };
    let server = Arc::new(server::Server::new(env::Envs::new(envs), limits));
    let front = server
        .envs
        .iter()
        .next()
        .map(|e| e.db.clone())
        .ok_or("no environment")?;
    // Registered before the listeners start, so a signal that comes early is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot watch for signals: {e}"))?;
    let (stop, stopped) = futures::channel::oneshot::channel();
    let shutdown = futures::FutureExt::shared(stopped);
    let (bound, listeners) =
        server::start(server.clone(), &front, addr, shutdown).map_err(|e| e.to_string())?;
    eprintln!(
        "ampd {}: {} shards, fsync {}, data {}, environments {}",
        env!("CARGO_PKG_VERSION"),
        front.shard_count(),
        serve.storage.fsync,
        if serve.storage.in_memory {
            "in memory".to_owned()
        } else {
            serve.storage.data_dir.display().to_string()
        },
        server
            .envs
            .iter()
            .map(|e| if e.has_token() {
                format!("{} (token)", e.name)
            } else {
                e.name.clone()
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("ampd listening on {bound}");
    let _ = std::io::stdout().flush();

    let signal = signals.forever().next();
    eprintln!("ampd: signal {signal:?}: finishing what is in flight");
    let _ = stop.send(());
    for listener in listeners {
        let _ = futures::executor::block_on(listener);
    }
    // The last handles of each environment's database: dropping them syncs every
    // shard's log and joins its thread.
    drop(front);
    drop(server);
    eprintln!("ampd: stopped");
    Ok(())
}

/// `ampd set|get|add|remove`: one request to a server; the result as one line of JSON
/// on stdout, or `CODE: message` on stderr and exit code 1.
/// Sends one request (a CLI form, made into its request) and prints the result.
fn run_cli(request: Result<ampd_wire::frame::Request, Error>, connect: Connect) -> ExitCode {
    let result = (|| {
        let request = request?;
        if connect.env.len() > 1 {
            return Err(Error::new(ErrorCode::InvalidQuery, "give one --env"));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorCode::Internal, format!("cannot start a runtime: {e}")))?;
        runtime.block_on(async {
            let client = ampd_wire::client::Client::builder(&connect.addr)
                .env(connect.env.first().map(String::as_str))
                .token(connect.token.as_deref())
                .connect()
                .await?;
            client.request(request).await
        })
    })();
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `ampd on`: subscribes and handles events until killed, reconnecting whenever the
/// connection is lost. Exits (with the error) only on a refusal no retry can mend: a
/// malformed filter, a name taken with other filters, a wrong token.
fn run_on(name: &str, filters: &[String], exec: Option<String>, connect: Connect) -> ExitCode {
    const BACKOFF_FIRST: Duration = Duration::from_millis(100);
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let fatal = |e: &Error| {
        matches!(
            e.code(),
            ErrorCode::InvalidQuery | ErrorCode::Unauthorized | ErrorCode::UnknownEnvironment
        )
    };
    if let Err(e) = ampd_engine::Filters::parse(&filters) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("internal: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exec = exec.map(Arc::new);
    runtime.block_on(async {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let client = ampd_wire::client::Client::builder(&connect.addr)
                .env(connect.env.first().map(String::as_str))
                .token(connect.token.as_deref())
                .connect()
                .await;
            let ended = match client {
                Ok(client) => {
                    backoff = BACKOFF_FIRST;
                    let exec = exec.clone();
                    client
                        .on(name, &filters, move |event| {
                            handle_event(event, exec.clone())
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = ended {
                if fatal(&e) {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("ampd on: {e}; reconnecting in {backoff:?}");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

/// One event of `ampd on`: printed as a JSON line, or handed to `exec` on its stdin.
async fn handle_event(event: Value, exec: Option<Arc<String>>) -> Result<(), String> {
    let Some(command) = exec else {
        println!("{event}");
        return Ok(());
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command.as_str())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        // A command that does not read its input is not a failure.
        let _ = stdin.write_all(format!("{event}\n").as_bytes()).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} exited with {status}"))
    }
}

/// Parses `4096`, `64K`, `512MiB`, `2G`... into bytes (K = KiB = 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes like 512MiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `ampd repair`: prints each cut, or that there was nothing to repair. The server
/// keeps each environment in `env/NAME` below its data folder; each is repaired.
fn repair(data_dir: &std::path::Path) -> ExitCode {
    let dirs = match layout::env_dirs(data_dir) {
        Ok(dirs) => dirs,
        Err(e) => {
            eprintln!("{}: no environments to repair: {e}", data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for dir in dirs {
        match Db::repair(&dir) {
            Ok(cuts) if cuts.is_empty() => println!("{}: nothing to repair", dir.display()),
            Ok(cuts) => {
                for cut in cuts {
                    println!("{cut}");
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", dir.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `ampd repl`: commands on an embedded engine, one per line, over the environment's
/// data folder (the one `ampd serve` uses for it).
fn repl(storage: Storage, connect: Connect) -> ExitCode {
    let name = match connect.env.as_slice() {
        [] => ampd_wire::frame::ENV_DEFAULT,
        [name] => name.as_str(),
        _ => {
            eprintln!("give one --env");
            return ExitCode::FAILURE;
        }
    };
    let mut config = storage.config();
    config.data_dir = config.data_dir.map(|root| layout::env_dir(&root, name));
    let db_dir = config.data_dir.clone();
    let db = match Db::open(config) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let place = match &db_dir {
        Some(dir) => dir.display().to_string(),
        None => "in memory".to_owned(),
    };
    eprintln!(
        "ampd {} — embedded engine with {} shards, environment {name} ({place}). Commands: set, get, add, remove, stats, help, quit.",
        env!("CARGO_PKG_VERSION"),
        db.shard_count(),
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
                let _ = writeln!(out, "{}", repl_help());
                continue;
            }
            _ => {}
        }
        let Some(words) = shlex::split(line) else {
            eprintln!("invalid_query: unbalanced quotes");
            continue;
        };
        let request =
            match cli::Command::try_parse_from(std::iter::once("ampd".to_owned()).chain(words)) {
                Err(e) => {
                    eprintln!("{}", e.to_string().trim_end());
                    continue;
                }
                Ok(command) => command.into_request(cli::Input::Commands),
            };
        let result = request.and_then(|request| {
            if command::is_write(request.opcode()) {
                futures::executor::block_on(command::write(&db, request))
            } else {
                command::read(&db, request)
            }
        });
        match result {
            Ok(reply) => {
                let _ = writeln!(out, "{}", reply.to_json());
            }
            Err(e) => eprintln!("{e}"),
        }
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}

/// The REPL's `help`: the data commands as clap describes them (the CLI's own help),
/// so the two cannot drift apart.
fn repl_help() -> String {
    let help = cli::Command::command()
        .name("")
        .about("The data commands, as in the CLI (`COMMAND --help` shows one in full):")
        .override_usage("COMMAND [ARGS]")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .render_help()
        .to_string();
    format!("{}\n  quit    leave (also: exit)", help.trim_end())
}
