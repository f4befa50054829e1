//! The `approval-svc` binary: parse the configuration, serve until SIGINT/SIGTERM.

use approval_svc::{Application, Config};
use clap::Parser;

/// jemalloc instead of glibc's malloc: a service allocates and frees many mid-sized buffers
/// per call on every worker thread (docs/decisions.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    lab_common::telemetry::init(config.log_format);
    lab_common::runtime::run("approval-svc", serve(config))
}

/// Builds the application and serves until a signal; the exit code says how it ended.
async fn serve(config: Config) -> std::process::ExitCode {
    let result = async {
        let application = Application::build(config).await?;
        application.run_until(lab_common::shutdown::signal()).await
    }
    .await;
    lab_common::service::exit_code("approval-svc", result)
}
