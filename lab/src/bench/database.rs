//! The PostgreSQL server a benchmark runs against: the one named by the caller (durable, as in
//! production) or a private throwaway one (`fsync=off`, for tests), its durability settings as
//! the server reports them, and fresh databases that are dropped after the run.

use std::sync::Mutex;

use anyhow::Context;
use lab_common::postgres::{ThrowawayPostgres, create_database};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The machine's own PostgreSQL, used when no URL is given.
pub(super) const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How durable the server's commits are, as it reports them (`SHOW`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Durability {
    /// The server's `version()`.
    pub version: String,
    /// `SHOW fsync`.
    pub fsync: String,
    /// `SHOW synchronous_commit`.
    pub synchronous_commit: String,
    /// True for the private throwaway server (`--throwaway`).
    pub throwaway: bool,
}

impl Durability {
    /// True when a commit waits for its WAL to reach the disk: `fsync` and
    /// `synchronous_commit` both on (any value but `off` waits for a local flush).
    pub(super) fn is_durable(&self) -> bool {
        self.fsync != "off" && self.synchronous_commit != "off"
    }

    /// One line saying it, e.g. `fsync=on synchronous_commit=on (durable)`; the not-durable
    /// form says NOT DURABLE.
    pub(super) fn describe(&self) -> String {
        let verdict = if self.is_durable() {
            "durable"
        } else {
            "NOT DURABLE"
        };
        let kind = if self.throwaway {
            ", throwaway server"
        } else {
            ""
        };
        format!(
            "fsync={} synchronous_commit={} ({verdict}{kind})",
            self.fsync, self.synchronous_commit
        )
    }
}

/// A PostgreSQL server with the databases this run created on it.
pub(super) struct Server {
    admin_url: String,
    throwaway: Option<ThrowawayPostgres>,
    created: Mutex<Vec<String>>,
    /// Its durability settings, read once at the start.
    pub durability: Durability,
}

impl Server {
    /// Opens `url` (a maintenance database such as `postgres`), or starts a throwaway server
    /// when `throwaway` is set, and reads its durability settings.
    pub(super) async fn open(url: Option<&str>, throwaway: bool) -> anyhow::Result<Self> {
        let (admin_url, server) = if throwaway {
            let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
                .await?
                .context("starting a throwaway PostgreSQL")?;
            (server.admin_url(), Some(server))
        } else {
            (url.unwrap_or(DEFAULT_SERVER).to_owned(), None)
        };
        let mut connection = admin_connection(&admin_url).await?;
        let show = |setting: &'static str| sqlx::query_scalar::<_, String>(setting);
        let durability = Durability {
            version: show("SELECT version()").fetch_one(&mut connection).await?,
            fsync: show("SHOW fsync").fetch_one(&mut connection).await?,
            synchronous_commit: show("SHOW synchronous_commit")
                .fetch_one(&mut connection)
                .await?,
            throwaway,
        };
        connection.close().await?;
        Ok(Self {
            admin_url,
            throwaway: server,
            created: Mutex::new(Vec::new()),
            durability,
        })
    }

    /// The server's URL without its password.
    pub(super) fn display_url(&self) -> String {
        redact(&self.admin_url)
    }

    /// Creates a fresh, empty database named after `label`; returns its URL.
    pub(super) async fn fresh_database(&self, label: &str) -> anyhow::Result<String> {
        let name = format!("lab_bench_{label}_{}", uuid::Uuid::now_v7().simple());
        let url = create_database(&self.admin_url, &name).await?;
        self.created_names().push(name);
        Ok(url)
    }

    /// Drops every database this run created (`WITH (FORCE)`: a service killed on an error
    /// path may still hold connections), then stops the throwaway server if there is one.
    pub(super) async fn close(self) -> anyhow::Result<()> {
        let names = std::mem::take(&mut *self.created_names());
        if !names.is_empty() {
            let mut connection = admin_connection(&self.admin_url).await?;
            for name in names {
                // Names are generated above (letters, digits, underscores); the quoting keeps
                // any name one identifier all the same.
                let quoted = name.replace('"', "\"\"");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await
                .with_context(|| format!("dropping database {name}"))?;
            }
            connection.close().await?;
        }
        if let Some(server) = self.throwaway {
            tokio::task::spawn_blocking(move || drop(server)).await?;
        }
        Ok(())
    }

    fn created_names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.created
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection to `url` that logs no statement: `DROP DATABASE … WITH (FORCE)` takes a
/// second on a durable server, which is expected, not a slow query worth a warning.
async fn admin_connection(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    let options: PgConnectOptions = url.parse()?;
    options
        .disable_statement_logging()
        .connect()
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

/// `url` with any password replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_the_password_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn off_anywhere_is_not_durable() {
        let mut settings = Durability {
            version: String::new(),
            fsync: "on".into(),
            synchronous_commit: "on".into(),
            throwaway: false,
        };
        assert!(settings.is_durable());
        settings.synchronous_commit = "local".into();
        assert!(settings.is_durable());
        settings.synchronous_commit = "off".into();
        assert!(!settings.is_durable());
        assert!(settings.describe().contains("NOT DURABLE"));
        settings.synchronous_commit = "on".into();
        settings.fsync = "off".into();
        assert!(!settings.is_durable());
    }
}
