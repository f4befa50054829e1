//! `lab auth init DIR` (a new Ed25519 signing key and its JWKS) and `lab auth token` (a signed
//! bearer token), for `--auth-keys` and the clients of the services.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use lab_common::auth::issue::{TokenSpec, kid_of, new_key, sign};

/// `lab auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
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
pub struct TokenArgs {
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
pub fn run(command: AuthCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuthCommand::Init { dir } => {
            let kid = init(&dir)?;
            println!(
                "wrote {0}/private.pem and {0}/jwks.json (kid {kid})",
                dir.display()
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
            };
            println!("{}", token(&pem, &spec)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new key into `dir`; returns its kid. Refuses to replace an existing key: tokens
/// signed with it would stop verifying.
pub fn init(dir: &Path) -> anyhow::Result<String> {
    let private = dir.join("private.pem");
    anyhow::ensure!(
        !private.exists(),
        "{} exists; remove it first to replace the key",
        private.display()
    );
    let key = new_key()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&private, key.private_pem.as_bytes())?;
    std::fs::write(dir.join("jwks.json"), &key.jwks)?;
    Ok(key.kid)
}

/// A token signed with the key in `pem`, naming its kid.
pub fn token(pem: &[u8], spec: &TokenSpec) -> anyhow::Result<String> {
    let kid = kid_of(pem)?;
    Ok(sign(pem, Some(&kid), spec)?)
}

fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(pem)?;
    Ok(())
}
