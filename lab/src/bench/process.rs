//! The real service binaries as child processes: spawned on a free loopback port with their
//! output in a log file (so reading it costs the load driver nothing), their peak resident
//! memory read from `/proc`, stopped with SIGTERM.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a service may take from spawn to `listening on <addr>` (it runs its migrations
/// first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the service binaries are.
#[derive(Debug, Clone)]
pub(super) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// `dir` when given, else the directory of the running `lab` binary (`target/release/lab`
    /// finds `target/release/order-svc`). Fails when a binary is missing, saying how to build it.
    pub(super) fn locate(dir: Option<&Path>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()
                .context("locating the lab binary")?
                .parent()
                .context("the lab binary has no directory")?
                .to_path_buf(),
        };
        let binaries = Self { dir };
        for name in ["order-svc", "approval-svc"] {
            let path = binaries.path(name);
            if !path.is_file() {
                bail!(
                    "{} not found; build it next to lab (`cargo build --release -p lab -p \
                     order-svc -p approval-svc`) or pass --bin-dir",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// The directory searched.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A service running as a child process; dropping it kills the process.
#[derive(Debug)]
pub(super) struct Service {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Service {
    /// Starts `name` (`order-svc` or `approval-svc`) on a free loopback port with `args`,
    /// its output appended to `log_dir/<label>.log`; returns once it logged `listening on`.
    pub(super) async fn start(
        binaries: &Binaries,
        name: &'static str,
        label: &str,
        log_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{label}.log"));
        let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binaries.path(name));
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true);
        // The caller's filter (the services' default `info` when unset), but never without the
        // `listening on` line this waits for.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        command.env(
            "RUST_LOG",
            format!("{filter},order_svc::startup=info,approval_svc::startup=info"),
        );
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", binaries.path(name).display()))?;
        let started = Instant::now();
        let addr = loop {
            if let Some(addr) = listening_addr_in(&log) {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited before listening ({status}); its log:\n{}",
                    tail(&log, 30)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill().await;
                bail!(
                    "{name} did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        Ok(Self { name, child, addr })
    }

    /// `http://<addr>`.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The binary's name.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Peak resident set size so far (`VmHWM`), in KiB; `None` once it exited or off Linux.
    pub(super) fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// SIGTERM, then waits for it to drain and exit (killed after a grace period).
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn listening_addr_in(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(lab_drill::process::listening_addr)
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
