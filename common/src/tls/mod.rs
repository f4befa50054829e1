//! TLS for the services' gRPC servers and for approval-svc's calls to order-svc.
//!
//! The server terminates TLS itself (tokio-rustls) rather than through tonic's
//! `ServerTlsConfig`, whose certificate is fixed when the server starts: here the certificate
//! and key are re-read when their files change ([`reload`]), so a renewed certificate is served
//! without a restart. Accepted connections reach tonic through [`Incoming`].

mod certs;
mod incoming;
mod pem;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

pub use certs::{DevCerts, PemPair};
pub use incoming::{Conn, Incoming};

use reload::ReloadingCert;

/// Why a TLS setting was refused. Every message names the flag or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A flag was given without the one it needs.
    #[error("{flag} needs {requires}")]
    Needs {
        /// The flag given.
        flag: &'static str,
        /// The flag missing.
        requires: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    Read {
        /// What the file should hold, e.g. `the certificate (--tls-cert)`.
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("{what} {path:?} is not usable: {why}")]
    Pem {
        /// What the file should hold.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        why: String,
    },
    /// The files are each valid but do not make a TLS configuration (e.g. a key that is not the
    /// certificate's).
    #[error("{what}: {why}")]
    Config {
        /// The setting at fault.
        what: String,
        /// rustls's reason.
        why: String,
    },
}

/// The TLS flags of a gRPC server (both services).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain the gRPC server presents (serves TLS; needs --tls-key). Re-read
    /// when it changes: a renewed certificate is served to new connections without a restart.
    #[arg(long = "tls-cert", env = "TLS_CERT")]
    pub cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); re-read with it.
    #[arg(long = "tls-key", env = "TLS_KEY")]
    pub key: Option<PathBuf>,

    /// PEM CA certificate(s): every client must present a certificate signed by one (mutual
    /// TLS; needs --tls-cert). Read at start-up.
    #[arg(long = "tls-client-ca", env = "TLS_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server's TLS, read and checked now; `None` when no flag is set (plaintext).
    pub fn load(&self) -> Result<Option<ServerTls>, TlsError> {
        match (&self.cert, &self.key) {
            (None, None) => match self.client_ca {
                Some(_) => Err(TlsError::Needs {
                    flag: "--tls-client-ca",
                    requires: "--tls-cert and --tls-key",
                }),
                None => Ok(None),
            },
            (Some(_), None) => Err(TlsError::Needs {
                flag: "--tls-cert",
                requires: "--tls-key",
            }),
            (None, Some(_)) => Err(TlsError::Needs {
                flag: "--tls-key",
                requires: "--tls-cert",
            }),
            (Some(cert), Some(key)) => {
                ServerTls::new(cert, key, self.client_ca.as_deref()).map(Some)
            }
        }
    }
}

/// A server's TLS: the acceptor over a certificate that follows its files, and whether client
/// certificates are required.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS.
    Plaintext,
    /// TLS; clients are not asked for a certificate.
    Tls,
    /// TLS, and every client presents a certificate from the configured CA.
    MutualTls,
}

impl Security {
    /// What a server with `tls` speaks.
    pub fn of(tls: Option<&ServerTls>) -> Self {
        match tls {
            None => Self::Plaintext,
            Some(tls) if tls.mutual => Self::MutualTls,
            Some(_) => Self::Tls,
        }
    }
}

impl std::fmt::Display for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plaintext => "plaintext",
            Self::Tls => "TLS",
            Self::MutualTls => "mutual TLS",
        })
    }
}

/// The one crypto provider of this project (ring: already in the tree, no C toolchain needed).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str) -> impl FnOnce(rustls::Error) -> TlsError + '_ {
    move |error| TlsError::Config {
        what: what.to_owned(),
        why: error.to_string(),
    }
}

impl ServerTls {
    /// Serves `cert` with `key` (both re-read when they change); with `client_ca`, requires
    /// client certificates it signed.
    pub fn new(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = ReloadingCert::load(cert, key, Arc::clone(&provider))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(config_error("TLS protocol versions"))?;
        let builder = match client_ca {
            Some(path) => {
                let what = "the client CA (--tls-client-ca)";
                let mut roots = RootCertStore::empty();
                for certificate in pem::certificates(path, what)? {
                    roots.add(certificate).map_err(|error| TlsError::Pem {
                        what: what.to_owned(),
                        path: path.to_owned(),
                        why: error.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| TlsError::Config {
                            what: what.to_owned(),
                            why: error.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        // gRPC is HTTP/2 only; a client that offers ALPN must agree on h2.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mutual: client_ca.is_some(),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

/// A client's TLS to a server: the CA its certificate must chain to and, under mutual TLS, the
/// client's own certificate and key (approval-svc's `--order-svc-ca/-cert/-key`).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let what_ca = "the CA (--order-svc-ca)";
    // Parsed here for a precise message at start-up; tonic would only fail at the first call.
    pem::certificates(ca, what_ca)?;
    let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(pem::read(ca, what_ca)?),
    );
    if let Some((cert, key)) = identity {
        let what_cert = "the client certificate (--order-svc-cert)";
        let what_key = "the client key (--order-svc-key)";
        let chain = pem::certificates(cert, what_cert)?;
        let private = pem::private_key(key, what_key)?;
        rustls::sign::CertifiedKey::from_der(chain, private, &provider())
            .map_err(config_error("--order-svc-cert and --order-svc-key"))?;
        config = config.identity(tonic::transport::Identity::from_pem(
            pem::read(cert, what_cert)?,
            pem::read(key, what_key)?,
        ));
    }
    Ok(config)
}
