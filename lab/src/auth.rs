//! `lab auth init DIR` (a new Ed25519 signing key and its JWKS) and `lab auth token` (a signed
//! bearer token), for `--auth-keys` and the clients of the services.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use lab_common::auth::issue::{Signer, TokenSpec, write_key};

/// `lab auth` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// A new signing key: DIR/private.pem (PKCS#8) and DIR/jwks.json (its public key, with a
    /// kid), for --auth-keys.
    Init {
        /// Where to write the files (created if missing; existing keys are not overwritten).
        dir: PathBuf,
    },
    /// Print a signed bearer token.
    Token(TokenArgs),
}

/// Options of `lab auth token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The signing key (`lab auth init`'s private.pem).
    #[arg(long)]
    key: PathBuf,
    /// The principal (`sub`); a `user` is its user id.
    #[arg(long)]
    sub: String,
    /// Roles, comma-separated: user, approver, operator, shop-admin, shop-client.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Lifetime.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// `iss` (match the services' --auth-issuer).
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` (match the services' --auth-audience).
    #[arg(long)]
    audience: Option<String>,
}

/// Runs a `lab auth` subcommand.
pub(crate) fn run(command: AuthCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuthCommand::Init { dir } => {
            let (key, _) = write_key(&dir)?;
            println!(
                "wrote {0}/private.pem and {0}/jwks.json (kid {1})",
                dir.display(),
                key.kid
            );
            println!("serve with: --auth-keys {}/jwks.json", dir.display());
        }
        AuthCommand::Token(args) => {
            let pem = std::fs::read(&args.key)
                .with_context(|| format!("reading {}", args.key.display()))?;
            let spec = TokenSpec {
                subject: args.sub,
                roles: args.roles,
                ttl: args.ttl,
                issuer: args.issuer,
                audience: args.audience,
                issued_at: None,
            };
            println!("{}", Signer::from_pem(&pem)?.token(&spec)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
