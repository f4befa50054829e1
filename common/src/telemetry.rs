//! `tracing` set-up shared by every binary: `pretty` for people, `json` for log pipelines.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when the output is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, with the span fields (such as the request id) included.
    Json,
}

/// Installs the global subscriber; the filter comes from `RUST_LOG` (default `info`). Calling it
/// again (as tests do) keeps the first subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // An Err only means a subscriber is installed already, which is fine.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        // The span list carries the enclosing `rpc` span, and with it the request id, on every
        // line logged inside a call, however deeply nested.
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
