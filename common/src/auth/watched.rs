//! A small file (a key set, a token) read at start and re-read when its content changes, so a
//! key or token rotates without a restart.
//!
//! A background task reads the file every [`POLL`] and compares bytes (not mtimes: a rename
//! that keeps the old mtime, or two writes within the filesystem's timestamp granularity, must
//! still be seen). A content that does not parse is logged and ignored: a half-written file
//! must not lock every caller out; the last good content stays in force. The task ends when the
//! last handle is dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often the file is re-read. Key rotation is a rare, human-paced event; a second is
/// immediate for it and negligible for the machine (one small read).
pub const POLL: Duration = Duration::from_secs(1);

/// Why a watched file could not be loaded at start.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct WatchError {
    /// The file.
    pub path: PathBuf,
    /// What was wrong.
    pub why: String,
}

/// The parsed content of a file, kept current (see the module docs).
pub struct Watched<T> {
    current: Arc<RwLock<Arc<T>>>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` now (an error here stops the start-up), then re-reads it every
    /// `poll` in a task of the current tokio runtime.
    pub async fn open(
        path: &Path,
        parse: fn(&[u8]) -> Result<T, String>,
        poll: Duration,
    ) -> Result<Self, WatchError> {
        let failed = |why: String| WatchError {
            path: path.to_owned(),
            why,
        };
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let value = parse(&bytes).map_err(failed)?;
        let current = Arc::new(RwLock::new(Arc::new(value)));
        tokio::spawn(watch(
            path.to_owned(),
            parse,
            poll,
            bytes,
            Arc::downgrade(&current),
        ));
        Ok(Self { current })
    }

    /// The content in force.
    pub fn current(&self) -> Arc<T> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc: the value is whole.
        match self.current.read() {
            Ok(value) => value.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

async fn watch<T>(
    path: PathBuf,
    parse: fn(&[u8]) -> Result<T, String>,
    poll: Duration,
    mut last: Vec<u8>,
    current: Weak<RwLock<Arc<T>>>,
) {
    loop {
        tokio::time::sleep(poll).await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot re-read; keeping the last content");
                continue;
            }
        };
        if bytes == last {
            continue;
        }
        match parse(&bytes) {
            Ok(value) => {
                let value = Arc::new(value);
                match current.write() {
                    Ok(mut slot) => *slot = value,
                    Err(poisoned) => *poisoned.into_inner() = value,
                }
                tracing::info!(path = %path.display(), "reloaded");
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "changed but unusable; keeping the last content");
            }
        }
        last = bytes;
    }
}
