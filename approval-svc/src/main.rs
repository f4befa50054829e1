//! The `approval-svc` binary: parse the configuration, serve until SIGINT/SIGTERM.

use approval_svc::{Application, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    lab_common::telemetry::init(config.log_format);
    let result = async {
        let application = Application::build(config).await?;
        application.run_until(lab_common::shutdown::signal()).await
    }
    .await;
    lab_common::service::exit_code("approval-svc", result)
}
