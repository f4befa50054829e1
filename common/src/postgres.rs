//! PostgreSQL for the services, drills and tests: pools, scratch databases (one per drill run or
//! test), and a private, throwaway server started from the machine's own binaries when no
//! `DATABASE_URL` is given.
//!
//! The throwaway server lives in a temporary directory, listens on a free loopback port with
//! trust authentication, and is stopped (and its directory removed) when the
//! [`ThrowawayPostgres`] is dropped, or by a small watchdog process when its owner dies without
//! dropping it (`kill -9`, or a test binary whose statics are never dropped).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// What can go wrong while preparing a database.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// Neither `PG_BIN_DIR`, `PATH` nor `/usr/lib/postgresql/*/bin` has `initdb` and `pg_ctl`.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in PG_BIN_DIR or under \
         /usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql) or set \
         DATABASE_URL"
    )]
    BinariesNotFound,
    /// A helper command failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// File-system or process error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server refused a statement or a connection.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// Applying the schema's migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens a pool on `url` with at most `max_connections` connections.
///
/// sqlx tests each connection with a round trip before handing it out, which costs a busy
/// batch a little of its time, and stays: skipping it for connections used within the last
/// second made scenario 9 (`pg_terminate_backend` on every connection, as a failover would)
/// fail 23–26 calls and open order-svc's breaker instead of failing 0–1 (docs/decisions.md,
/// "A batch is one round trip").
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Returns `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let mut result = format!("{}/{}", &base[..path_start], database);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// Creates `database` on the server behind `admin_url` unless it exists; returns its URL.
pub async fn create_database(admin_url: &str, database: &str) -> Result<String, PostgresError> {
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await?;
    if !exists {
        // Identifiers cannot be bound as parameters; callers pass fixed or generated names,
        // and the quoting below keeps any name a single identifier.
        let quoted = database.replace('"', "\"\"");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut connection)
            .await?;
    }
    connection.close().await?;
    Ok(with_database(admin_url, database))
}

/// Prefix of the databases [`scratch_database`] makes; the rest of the name is a UUID v7, so it
/// carries its creation time. It reads `test` because tests made them first: keeping the
/// prefix keeps the sweep finding the ones already on long-lived servers.
pub const SCRATCH_DATABASE_PREFIX: &str = "lab_test_";

/// Scratch databases older than this are dropped by a later process on the same server.
pub const STALE_SCRATCH_DATABASE_AGE: Duration = Duration::from_secs(60 * 60);

/// A fresh, empty database for one run of something that needs its own schema and data: a
/// drill's or a scenario's cluster (`lab drill`), or one test. It lives on the server named by
/// `DATABASE_URL` or, when that is unset, on a throwaway server shared by the whole process.
///
/// Scratch databases are never dropped by their maker (a failed run's is worth a look), so on a
/// long-lived server they pile up: one session's runs filled a disk with 1 500 of them. The first
/// call of each process therefore drops the stale ones ([`drop_stale_scratch_databases`]).
pub async fn scratch_database() -> Result<String, PostgresError> {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let admin_url = scratch_server_url()?;
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst)
        && let Err(error) =
            drop_stale_scratch_databases(&admin_url, STALE_SCRATCH_DATABASE_AGE).await
    {
        tracing::warn!(%error, "dropping stale scratch databases failed");
    }
    let name = format!("{SCRATCH_DATABASE_PREFIX}{}", uuid::Uuid::now_v7().simple());
    create_database(&admin_url, &name).await
}

/// Drops the scratch databases on `admin_url`'s server created more than `older_than` ago that
/// nobody is connected to; returns how many went. Names that do not carry a time are left.
pub async fn drop_stale_scratch_databases(
    admin_url: &str,
    older_than: Duration,
) -> Result<u64, PostgresError> {
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database
         WHERE starts_with(datname, $1)
           AND datname NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)",
    )
    .bind(SCRATCH_DATABASE_PREFIX)
    .fetch_all(&mut connection)
    .await?;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let horizon_ms = now_ms.saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(0));
    let mut dropped = 0;
    for name in names {
        if !scratch_database_created_before(&name, horizon_ms) {
            continue;
        }
        let quoted = name.replace('"', "\"\"");
        // Someone may have connected since the listing: then the drop fails and it stays.
        let result = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{quoted}\""
        )))
        .execute(&mut connection)
        .await;
        if result.is_ok() {
            dropped += 1;
        }
    }
    connection.close().await?;
    Ok(dropped)
}

/// Whether a scratch database's name says it was created before `horizon_ms` (Unix milliseconds):
/// a UUID v7's first 48 bits are its creation time.
fn scratch_database_created_before(name: &str, horizon_ms: u64) -> bool {
    name.strip_prefix(SCRATCH_DATABASE_PREFIX)
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .and_then(|id| id.get_timestamp())
        .map(|timestamp| {
            let (seconds, nanos) = timestamp.to_unix();
            seconds.saturating_mul(1000) + u64::from(nanos / 1_000_000)
        })
        .is_some_and(|created_ms| created_ms < horizon_ms)
}

fn scratch_server_url() -> Result<String, PostgresError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(url);
    }
    static SERVER: OnceLock<Result<ThrowawayPostgres, String>> = OnceLock::new();
    // Starting blocks for a second or two, once per process; the watchdog stops the server
    // when the process exits, since statics are never dropped.
    match SERVER.get_or_init(|| ThrowawayPostgres::start().map_err(|error| error.to_string())) {
        Ok(server) => Ok(server.admin_url()),
        Err(message) => Err(PostgresError::Command {
            command: "start throwaway PostgreSQL".into(),
            output: message.clone(),
        }),
    }
}

/// A private PostgreSQL server in a temporary directory; stopped and removed on drop.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    directory: tempfile::TempDir,
    bin_dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

impl ThrowawayPostgres {
    /// Initialises and starts a server on a free loopback port. Blocking: call it before the
    /// runtime is busy, or from `spawn_blocking`.
    pub fn start() -> Result<Self, PostgresError> {
        let bin_dir = find_bin_dir().ok_or(PostgresError::BinariesNotFound)?;
        // initdb refuses to run as root, so root hands the server to the `postgres` user.
        let run_as_postgres = running_as_root();
        let directory = tempfile::Builder::new().prefix("lab-pg-").tempdir()?;
        if run_as_postgres {
            run(Command::new("chown").arg("postgres:").arg(directory.path()))?;
        }
        let data = directory.path().join("data");
        let initdb = bin_dir.join("initdb");
        run(as_server_user(run_as_postgres, &initdb)
            .arg("--pgdata")
            .arg(&data)
            .args(["--username=postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"]))?;

        let mut last_error = None;
        // Another process may take the probed port before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            match pg_ctl_start(&bin_dir, run_as_postgres, directory.path(), port) {
                Ok(()) => {
                    let server = Self {
                        directory,
                        bin_dir,
                        port,
                        run_as_postgres,
                    };
                    server.spawn_watchdog()?;
                    tracing::info!(port, "throwaway PostgreSQL started");
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(PostgresError::BinariesNotFound))
    }

    /// URL of the `postgres` maintenance database, as the superuser `postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    /// Stops the server when this process dies without dropping `self`.
    fn spawn_watchdog(&self) -> Result<(), PostgresError> {
        use std::os::unix::process::CommandExt;
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = if self.run_as_postgres {
            format!("runuser -u postgres -- '{}'", pg_ctl.display())
        } else {
            format!("'{}'", pg_ctl.display())
        };
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
             {stop} --pgdata '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            owner = std::process::id(),
            data = self.data_dir().display(),
            dir = self.directory.path().display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the owner must not kill the watchdog.
            .process_group(0)
            .spawn()?;
        Ok(())
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let result = run(
            as_server_user(self.run_as_postgres, &self.bin_dir.join("pg_ctl"))
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["stop", "-m", "fast", "--wait"]),
        );
        if let Err(error) = result {
            tracing::warn!(%error, "stopping throwaway PostgreSQL failed");
        }
    }
}

fn pg_ctl_start(
    bin_dir: &Path,
    run_as_postgres: bool,
    directory: &Path,
    port: u16,
) -> Result<(), PostgresError> {
    let options = format!(
        "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=500 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        socket_dir = directory.display(),
    );
    run(as_server_user(run_as_postgres, &bin_dir.join("pg_ctl"))
        .arg("--pgdata")
        .arg(directory.join("data"))
        .arg("--log")
        .arg(directory.join("postgres.log"))
        .args(["--wait", "--timeout=60", "-o", &options, "start"]))
    .map(drop)
}

fn as_server_user(run_as_postgres: bool, program: &Path) -> Command {
    if run_as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Result<std::process::Output, PostgresError> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(PostgresError::Command {
            command: format!("{command:?}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from) {
        return has_binaries(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_binaries(dir))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_binaries(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_database_name_carries_its_creation_time() {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let fresh = format!("{SCRATCH_DATABASE_PREFIX}{}", uuid::Uuid::now_v7().simple());
        assert!(!scratch_database_created_before(&fresh, now_ms - 60_000));
        assert!(scratch_database_created_before(&fresh, now_ms + 60_000));
        assert!(!scratch_database_created_before(
            "lab_test_not_a_uuid",
            u64::MAX
        ));
        assert!(!scratch_database_created_before("postgres", u64::MAX));
    }

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
