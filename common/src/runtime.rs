//! The tokio runtime every binary of the workspace (order-svc, approval-svc, lab) runs on: the
//! multi-threaded scheduler with its LIFO slot turned off.
//!
//! With the slot, a task that wakes another on the same worker runs it next. A connection's
//! task is woken by every response (and every outgoing call) that becomes ready, so a batch of
//! a hundred approvals woken together leaves through a hundred `writev` calls, each to one
//! loopback socket whose reader is woken in turn. Without it the connection task waits in the
//! queue behind the other woken tasks and writes what they made ready in one go: half the
//! `writev` calls per approval, and 19–26 % more approvals per second in the flood
//! (`docs/BENCHMARKS.md`, session 10; `docs/decisions.md`, "The runtime's LIFO slot").
//!
//! Turning the slot off is a tokio unstable API, compiled only with `--cfg tokio_unstable`,
//! which the workspace's `.cargo/config.toml` sets; a build without it keeps tokio's default.

use std::future::Future;
use std::process::ExitCode;

/// Setting it to `on` puts the LIFO slot back, to compare the two in one build.
pub const LIFO_SLOT_ENV: &str = "TOKIO_LIFO_SLOT";

/// Runs `main` on the workspace's runtime and returns its exit code; when the runtime cannot
/// start (no threads, no I/O driver), says so on stderr under `program`'s name and fails.
pub fn run(program: &str, main: impl Future<Output = ExitCode>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    if !lifo_slot_on() {
        builder.disable_lifo_slot();
    }
    match builder.build() {
        Ok(runtime) => runtime.block_on(main),
        Err(error) => {
            eprintln!("{program}: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether [`run`] keeps the LIFO slot in this process (and, through the inherited
/// environment, in the processes it starts): in a build without `--cfg tokio_unstable`, or
/// when [`LIFO_SLOT_ENV`] asks for it.
pub fn lifo_slot_on() -> bool {
    !cfg!(tokio_unstable) || lifo_slot_wanted(std::env::var(LIFO_SLOT_ENV).ok().as_deref())
}

/// Whether [`LIFO_SLOT_ENV`]'s value asks for the slot: `on`, `true` or `1`, in any case.
pub fn lifo_slot_wanted(value: Option<&str>) -> bool {
    value.is_some_and(|value| {
        ["on", "true", "1"]
            .iter()
            .any(|yes| value.trim().eq_ignore_ascii_case(yes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_stays_off_unless_asked_for() {
        assert!(!lifo_slot_wanted(None));
        for off in ["off", "0", "false", "", "yes please"] {
            assert!(!lifo_slot_wanted(Some(off)), "{off:?}");
        }
        for on in ["on", "ON", " true ", "1"] {
            assert!(lifo_slot_wanted(Some(on)), "{on:?}");
        }
    }

    #[test]
    fn runs_the_main_future_to_its_exit_code() {
        let code = run("test", async {
            tokio::task::spawn(async { 7 }).await.unwrap();
            ExitCode::from(3)
        });
        assert_eq!(code, ExitCode::from(3));
    }
}
