//! The progress line of a running drill: a bar on a terminal, a plain line every 2 s otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A running progress line; [`Progress::finish`] ends it.
pub(super) struct Progress {
    status: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts drawing: `answered` of `calls`, and `status` (the fault in force).
    pub(super) fn start(
        name: &str,
        calls: u64,
        answered: Arc<AtomicU64>,
        status: Arc<Mutex<String>>,
    ) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(calls), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos:>6}/{len:6} {per_sec:>10} {elapsed:>4} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_owned());
            bar
        });
        let task = {
            let bar = bar.clone();
            let status = status.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let every = if bar.is_some() {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(2)
                };
                loop {
                    tokio::time::sleep(every).await;
                    let done = answered.load(Ordering::Relaxed);
                    let now = status
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .clone();
                    match &bar {
                        Some(bar) => {
                            bar.set_position(done);
                            bar.set_message(now);
                        }
                        None => eprintln!(
                            "drill {name}: {:>5.1}s {done}/{calls} answered {now}",
                            started.elapsed().as_secs_f64()
                        ),
                    }
                }
            })
        };
        Self { status, task, bar }
    }

    /// Replaces the status text.
    pub(super) fn set_status(&self, text: &str) {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = text.to_owned();
    }

    /// Stops drawing.
    pub(super) fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
