//! Process control for the release binaries: build once, start, wait for `listening on <addr>`,
//! `kill -9`, restart on the same address and database, SIGTERM; and terminating a database's
//! connections mid-load.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lab_drill::process::ProcessError> {
//! use lab_drill::process::{Binary, ServiceProcess};
//!
//! let database_url = "postgres://postgres@127.0.0.1:5432/shop";
//! let mut shop = ServiceProcess::start(Binary::OrderSvc, database_url, &[]).await?;
//! shop.kill().await?; // kill -9
//! shop.restart().await?; // same port, same database
//! shop.terminate(std::time::Duration::from_secs(10)).await?; // SIGTERM, exit 0 expected
//! # Ok(()) }
//! ```
//!
//! Binaries come from `$LAB_BIN_DIR` when set, or from the running program's directory when both
//! services are there (`lab drill`; nothing is built either way), otherwise from the workspace's
//! `target/release` (or `$CARGO_TARGET_DIR/release`) after one `cargo build --release -p <pkg>`
//! per binary and process, which is a no-op when they are fresh.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Lines of each process's output kept in memory ([`ServiceProcess::logs`]).
const KEPT_LOG_LINES: usize = 20_000;
/// How long a service may take from spawn to `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The service binaries of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `order-svc`, the shop.
    OrderSvc,
    /// `approval-svc`, the challenge approvals.
    ApprovalSvc,
}

impl Binary {
    /// The binary's (and its package's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderSvc => "order-svc",
            Self::ApprovalSvc => "approval-svc",
        }
    }
}

/// What can go wrong while building or running a service.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `cargo build --release` failed.
    #[error("building {binary} failed: {output}")]
    Build {
        /// The binary.
        binary: &'static str,
        /// Cargo's output.
        output: String,
    },
    /// Spawning, signalling or waiting failed.
    #[error("{binary}: {source}")]
    Io {
        /// The binary.
        binary: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The process exited or stayed silent before logging `listening on <addr>`.
    #[error("{binary} did not start: {reason}; last output:\n{output}")]
    NotStarted {
        /// The binary.
        binary: &'static str,
        /// Exit status or timeout.
        reason: String,
        /// Its last lines of output.
        output: String,
    },
    /// The process did not exit in time after SIGTERM.
    #[error("{binary} did not exit within {timeout:?} of SIGTERM")]
    NoExit {
        /// The binary.
        binary: &'static str,
        /// The time it was given.
        timeout: Duration,
    },
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the release binaries are: `$LAB_BIN_DIR`, else the running program's directory when
/// both services are there (an installed `lab`), else `$CARGO_TARGET_DIR/release`, else the
/// workspace's `target/release`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAB_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = beside_this_program() {
        return dir;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release")
}

/// The running program's directory when both service binaries are in it (`lab` next to
/// `order-svc` and `approval-svc`, as `cargo build --release` and an install leave them).
fn beside_this_program() -> Option<PathBuf> {
    let dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    [Binary::OrderSvc, Binary::ApprovalSvc]
        .iter()
        .all(|binary| dir.join(binary.name()).is_file())
        .then_some(dir)
}

/// The path of `binary`, built first (once per process, both services in one `cargo build`)
/// unless `$LAB_BIN_DIR` is set. Blocking: call it from `spawn_blocking` or before the runtime is
/// busy; [`ServiceProcess::start`] does.
///
/// One command for both binaries: built one package at a time, cargo resolves each package's
/// features apart and compiles the shared dependencies twice. `scripts/test` builds them once
/// (with `lab`) and sets `$LAB_BIN_DIR`, so a suite run never builds here.
pub fn ensure_built(binary: Binary) -> Result<PathBuf, ProcessError> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let path = bin_dir().join(binary.name());
    if std::env::var_os("LAB_BIN_DIR").is_some() || beside_this_program().is_some() {
        return Ok(path);
    }
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = std::process::Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--release", "--quiet"])
            .args([
                "-p",
                Binary::OrderSvc.name(),
                "-p",
                Binary::ApprovalSvc.name(),
            ])
            .args(["-p", "lab"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    });
    match built {
        Ok(()) => Ok(path),
        Err(output) => Err(ProcessError::Build {
            binary: binary.name(),
            output: output.clone(),
        }),
    }
}

/// A service running as a child process. Dropping it kills the process (`kill -9`).
#[derive(Debug)]
pub struct ServiceProcess {
    binary: Binary,
    path: PathBuf,
    database_url: String,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    child: Option<Child>,
    logs: Arc<Mutex<VecDeque<String>>>,
    metrics_addr: Arc<Mutex<Option<SocketAddr>>>,
    starts: u32,
}

impl ServiceProcess {
    /// Builds (if needed) and starts `binary` on a free loopback port against `database_url`,
    /// with extra environment variables (e.g. `ORDER_SVC_URL`, `COMPLETER_PERIOD`); returns once
    /// it logged `listening on <addr>`. Logs are JSON (`LOG_FORMAT=json`), kept in memory.
    pub async fn start(
        binary: Binary,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, ProcessError> {
        Self::start_on(
            binary,
            database_url,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            env,
        )
        .await
    }

    /// [`ServiceProcess::start`] on a chosen address.
    pub async fn start_on(
        binary: Binary,
        database_url: &str,
        listen: SocketAddr,
        env: &[(&str, &str)],
    ) -> Result<Self, ProcessError> {
        let path = tokio::task::spawn_blocking(move || ensure_built(binary))
            .await
            .map_err(|error| ProcessError::Io {
                binary: binary.name(),
                source: std::io::Error::other(error),
            })??;
        let mut process = Self {
            binary,
            path,
            database_url: database_url.to_owned(),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            addr: listen,
            child: None,
            logs: Arc::new(Mutex::new(VecDeque::new())),
            metrics_addr: Arc::new(Mutex::new(None)),
            starts: 0,
        };
        process.spawn().await?;
        Ok(process)
    }

    /// The gRPC address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its database.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Which binary this is.
    pub fn binary(&self) -> Binary {
        self.binary
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The `/metrics` address it logged (`metrics on http://<addr>/metrics`), when it serves
    /// metrics (set `METRICS_ADDR`, e.g. `127.0.0.1:0`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        *self
            .metrics_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Scrapes its `/metrics` page.
    pub async fn metrics(&self) -> std::io::Result<crate::metrics::Metrics> {
        let addr = self
            .metrics_addr()
            .ok_or_else(|| std::io::Error::other("the process serves no metrics"))?;
        crate::metrics::scrape(addr).await
    }

    /// How many times it was started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Sends SIGKILL and waits for the process to die: no draining, no clean-up, the process's
    /// connections simply vanish.
    pub async fn kill(&mut self) -> Result<ExitStatus, ProcessError> {
        let binary = self.binary.name();
        let mut child = self.child.take().ok_or_else(|| ProcessError::Io {
            binary,
            source: std::io::Error::other("not running"),
        })?;
        child
            .kill()
            .await
            .map_err(|source| ProcessError::Io { binary, source })?;
        child
            .wait()
            .await
            .map_err(|source| ProcessError::Io { binary, source })
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (the services drain, then exit 0).
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let binary = self.binary.name();
        let mut child = self.child.take().ok_or_else(|| ProcessError::Io {
            binary,
            source: std::io::Error::other("not running"),
        })?;
        if let Some(pid) = child.id() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .map_err(|source| ProcessError::Io { binary, source })?;
            if !status.success() {
                return Err(ProcessError::Io {
                    binary,
                    source: std::io::Error::other(format!("kill -TERM {pid}: {status}")),
                });
            }
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(waited) => waited.map_err(|source| ProcessError::Io { binary, source }),
            Err(_) => {
                let _ = child.kill().await;
                Err(ProcessError::NoExit { binary, timeout })
            }
        }
    }

    /// Starts the service again on the same address, `/metrics` address and database (after
    /// [`Self::kill`] or [`Self::terminate`]); kills it first if it still runs.
    pub async fn restart(&mut self) -> Result<(), ProcessError> {
        if self.child.is_some() {
            self.kill().await?;
        }
        self.spawn().await
    }

    /// The lines it printed so far (the last 20 000), oldest first.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The last `n` lines of output, joined.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }

    async fn spawn(&mut self) -> Result<(), ProcessError> {
        let binary = self.binary.name();
        let mut command = Command::new(&self.path);
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--database-url")
            .arg(&self.database_url)
            .env("LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // A restart serves /metrics where the first start did (like its gRPC address), so a
        // scraper that started with the drill keeps reading it.
        let previous_metrics = *self
            .metrics_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(addr) = previous_metrics {
            command.env("METRICS_ADDR", addr.to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|source| ProcessError::Io { binary, source })?;
        self.starts += 1;
        *self
            .metrics_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        let (listening_tx, listening) = oneshot::channel();
        let listening_tx = Arc::new(Mutex::new(Some(listening_tx)));
        let label = format!("{binary}#{}", self.starts);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(
                BufReader::new(stdout),
                label.clone(),
                self.logs.clone(),
                self.metrics_addr.clone(),
                listening_tx.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(
                BufReader::new(stderr),
                label,
                self.logs.clone(),
                self.metrics_addr.clone(),
                listening_tx,
            ));
        }
        let outcome = tokio::select! {
            addr = listening => addr.ok(),
            () = tokio::time::sleep(START_TIMEOUT) => None,
        };
        match outcome {
            Some(addr) => {
                self.addr = addr;
                self.child = Some(child);
                Ok(())
            }
            None => {
                let _ = child.kill().await;
                let status = child.wait().await.ok();
                // Let the collectors drain what is left.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(ProcessError::NotStarted {
                    binary,
                    reason: match status {
                        Some(status) => format!("exited early or timed out ({status})"),
                        None => "timed out".into(),
                    },
                    output: self.log_tail(30),
                })
            }
        }
    }
}

type ListeningSender = Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>;

async fn collect(
    reader: impl tokio::io::AsyncBufRead + Unpin,
    label: String,
    logs: Arc<Mutex<VecDeque<String>>>,
    metrics_addr: Arc<Mutex<Option<SocketAddr>>>,
    listening: ListeningSender,
) {
    let echo = std::env::var_os("LAB_ECHO_LOGS").is_some();
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("[{label}] {line}");
        }
        if let Some(addr) = metrics_line_addr(&line) {
            *metrics_addr
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(addr);
        }
        if let Some(addr) = listening_addr(&line) {
            let sender = listening
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(sender) = sender {
                let _ = sender.send(addr);
            }
        }
        let mut logs = logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if logs.len() == KEPT_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(line);
    }
    // The process closed its output (it exited): a start still waiting fails at once.
    listening
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
}

/// The address in a `listening on <addr>` line, in either log format.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.parse().ok()
}

/// The address in a `metrics on http://<addr>/metrics` line.
fn metrics_line_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("metrics on http://")?;
    rest.split('/').next()?.parse().ok()
}

/// Terminates every connection to the database of `database_url` (`pg_terminate_backend`), as
/// a PostgreSQL restart or a failover would; returns how many were terminated. Connects to that
/// database itself, and spares its own connection.
pub async fn terminate_connections(database_url: &str) -> Result<u64, sqlx::Error> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(database_url).await?;
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
         FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut connection)
    .await?;
    connection.close().await?;
    Ok(u64::try_from(terminated).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_both_log_formats() {
        let pretty = "2026-11-24T02:00:00Z  INFO order_svc::startup: listening on 127.0.0.1:4321";
        let json = r#"{"timestamp":"…","level":"INFO","fields":{"message":"listening on 127.0.0.1:4321"},"target":"order_svc::startup"}"#;
        let expected: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(listening_addr(pretty), Some(expected));
        assert_eq!(listening_addr(json), Some(expected));
        assert_eq!(
            listening_addr("proxy listening on [::1]:80 now"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_addr("nothing here"), None);
    }
}
