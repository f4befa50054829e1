//! `lab certs init DIR --hosts localhost,127.0.0.1`: a throwaway CA and the certificates to run
//! both services with TLS and mutual TLS.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lab_common::tls::DevCerts;

/// Certificate commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertsCommand {
    /// Write a new throwaway CA and certificates signed by it into DIR: `ca.pem`, `server.pem`,
    /// `server-key.pem` (valid for --hosts), `client.pem`, `client-key.pem` (approval-svc's
    /// identity to order-svc under mutual TLS). For development and tests only.
    Init(InitArgs),
}

/// `lab certs init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Directory to write into (created if needed; existing files of these names are replaced).
    pub dir: PathBuf,

    /// Names and IP addresses the server certificate is valid for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
}

/// Runs a certificate command.
pub(crate) fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Init(args) => init(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let hosts: Vec<String> = args
        .hosts
        .iter()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .collect();
    anyhow::ensure!(!hosts.is_empty(), "--hosts names no host");
    let certs = DevCerts::generate(&hosts)
        .with_context(|| format!("cannot make certificates for {hosts:?}"))?;
    certs
        .write(&args.dir)
        .with_context(|| format!("cannot write into {}", args.dir.display()))?;
    let dir = args.dir.display();
    println!(
        "wrote {dir}/{{ca,server,server-key,client,client-key}}.pem (server valid for {})",
        hosts.join(", ")
    );
    println!(
        "order-svc    --tls-cert {dir}/server.pem --tls-key {dir}/server-key.pem --tls-client-ca {dir}/ca.pem"
    );
    println!(
        "approval-svc --order-svc-url https://{}:50051 --order-svc-ca {dir}/ca.pem --order-svc-cert {dir}/client.pem --order-svc-key {dir}/client-key.pem",
        hosts[0]
    );
    Ok(ExitCode::SUCCESS)
}
