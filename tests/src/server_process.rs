//! `ampd serve` as a child process, for the tests of the root package (only they know
//! the binary's path, `env!("CARGO_BIN_EXE_ampd")`, and pass it in).
//!
//! [`ServerProcess::start`] runs `BIN serve ARGS...` and reads the one line the server
//! prints on stdout, `ampd listening on ADDR`, within [`START_TIMEOUT`]; a server that
//! exits or stays silent instead is a panic that shows its stderr. Dropping it (or
//! [`ServerProcess::stop`]) sends SIGTERM — the operator's way to stop a server, which
//! syncs before it exits — and waits; a server still running after [`STOP_TIMEOUT`] is
//! killed with SIGKILL. The server's stderr is collected as it comes, and printed when
//! a test panics while the server is alive, so a failure shows the server's side too.
//!
//! [`build_beside`] builds binaries of other packages of the workspace (the load
//! generator, the bench binaries) next to `ampd`, for the tests that drive them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to print its address (generous: tests start many servers
/// at once on few cores).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The line's prefix before the bound address.
const LISTENING_PREFIX: &str = "ampd listening on ";

/// A running `ampd serve`.
pub struct ServerProcess {
    child: Child,
    addr: String,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Set once the process has been waited for.
    status: Option<ExitStatus>,
}

/// Why a server did not start: how it ended (`None`: it was killed for staying silent)
/// and what it said.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "it exited ({status})")?,
            None => write!(
                f,
                "it printed no address within {START_TIMEOUT:?} and was killed"
            )?,
        }
        write!(
            f,
            "\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

impl ServerProcess {
    /// Runs `bin serve ARGS...` and waits for its address; panics, showing the
    /// server's stderr, when it does not start.
    #[track_caller]
    pub fn start(bin: &str, args: &[&str]) -> ServerProcess {
        match ServerProcess::try_start(bin, args) {
            Ok(server) => server,
            Err(failure) => panic!("ampd serve {args:?} did not start: {failure}"),
        }
    }

    /// Runs `bin serve ARGS...` and waits for its address, or for it to end.
    pub fn try_start(bin: &str, args: &[&str]) -> Result<ServerProcess, StartFailure> {
        let mut child = Command::new(bin)
            .arg("serve")
            .args(args)
            // The CLI's variables are `serve`'s too: a test's server takes only its
            // arguments.
            .env_remove("AMPD_ADDR")
            .env_remove("AMPD_ENV")
            .env_remove("AMPD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let mut pipe = child.stderr.take().expect("piped stderr");
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut s) = stderr.lock() {
                        s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            })
        };
        // Every stdout line goes to the channel; the first should be the address.
        let (lines, first) = mpsc::channel();
        {
            let pipe = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = ServerProcess {
            child,
            addr: String::new(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stderr,
            stderr_reader: Some(stderr_reader),
            status: None,
        };
        match first.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.starts_with(LISTENING_PREFIX) => {
                server.addr = line[LISTENING_PREFIX.len()..].trim().to_owned();
                Ok(server)
            }
            Ok(line) => {
                let _ = server.kill();
                Err(server.failure(None, line))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stdout closed without a line: the server is ending by itself.
                let status = server.wait_for_exit(START_TIMEOUT);
                Err(server.failure(status, String::new()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = server.kill();
                Err(server.failure(None, String::new()))
            }
        }
    }

    /// The address the server listens on, `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {:?}", self.addr))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the server to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]); returns how it exited.
    pub fn stop(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal` (a name for `kill -s`: `TERM`, `INT`) and waits for the server to
    /// exit (SIGKILL after [`STOP_TIMEOUT`]); returns how it exited.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        self.terminate(signal)
    }

    fn terminate(&mut self, signal: &str) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let status = match sent {
            Ok(s) if s.success() => self.wait_for_exit(STOP_TIMEOUT),
            _ => None,
        };
        match status {
            Some(status) => status,
            None => {
                eprintln!(
                    "ampd serve {:?} (pid {}) still running {STOP_TIMEOUT:?} after SIG{signal}: killing it",
                    self.args,
                    self.child.id()
                );
                self.kill()
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(self.exited(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }

    /// SIGKILL, then the exit status.
    fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("the killed server is reaped");
        self.exited(status)
    }

    /// Records the exit and lets the stderr reader finish (the pipe is closed now).
    fn exited(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    fn failure(&self, status: Option<ExitStatus>, stdout: String) -> StartFailure {
        StartFailure {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of ampd serve {:?} at {} ---\n{}",
                self.args,
                self.addr,
                self.stderr()
            );
        }
        self.terminate("TERM");
    }
}

/// Runs one CLI command of binary `bin` against the server at `addr` (`AMPD_ADDR`; no
/// `AMPD_ENV` or `AMPD_TOKEN` from the test's own environment); panics, showing its
/// stderr, unless it succeeds. Its stdout, trimmed.
#[track_caller]
pub fn cli(bin: &str, addr: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("AMPD_ADDR", addr)
        .env_remove("AMPD_ENV")
        .env_remove("AMPD_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds binaries `bins` of workspace package `package` with the profile of the `ampd`
/// binary at `ampd` (release when it sits in a `release` folder), and returns their
/// folder, `ampd`'s. Cargo builds another package's binaries for `cargo build`, not for
/// this package's tests, so a test builds them (cargo lets go of the build directory
/// while tests run), always: one left by an earlier build may be older than its
/// sources, and cargo only checks when it is up to date. Call it once per test binary
/// (behind a `OnceLock`). Panics when the build fails or a binary is missing after it.
pub fn build_beside(ampd: &str, package: &str, bins: &[&str]) -> std::path::PathBuf {
    let ampd = std::path::Path::new(ampd);
    let dir = ampd.parent().expect("ampd lies in a folder").to_owned();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", package]);
    for bin in bins {
        build.args(["--bin", bin]);
    }
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {bins:?} failed: {status:?}");
    for bin in bins {
        assert!(
            dir.join(bin).exists(),
            "{} is missing",
            dir.join(bin).display()
        );
    }
    dir
}
