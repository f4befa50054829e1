//! A server certificate that follows its files.
//!
//! rustls asks a [`ResolvesServerCert`] for the certificate at every handshake. This one
//! re-reads the certificate and key files when at least [`CHECK_EVERY`] has passed since it
//! last looked, and switches when their contents changed and form a valid pair. Contents are
//! compared rather than modification times: a rename or a Kubernetes secret's symlink swap
//! changes the bytes but not always the mtime, and a coarse mtime can miss a quick rewrite.
//! A pair caught half-written (a new certificate with the old key) is refused, logged, and
//! retried at the next check; connections keep getting the last good pair meanwhile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{TlsError, pem};

/// How often a handshake may look at the files. Reading two small files at most once a second
/// costs nothing next to a handshake; a renewal is served within a second.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

const WHAT_CERT: &str = "the certificate (--tls-cert)";
const WHAT_KEY: &str = "the private key (--tls-key)";

struct Loaded {
    certified: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    checked: Instant,
}

/// The certificate and key of `--tls-cert`/`--tls-key`, re-read when they change.
pub(crate) struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Reads the pair now: a server must not start with a certificate it cannot serve.
    pub(crate) fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let cert_pem = pem::read(cert, WHAT_CERT)?;
        let key_pem = pem::read(key, WHAT_KEY)?;
        let certified = certified_key(cert, &cert_pem, key, &key_pem, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            loaded: Mutex::new(Loaded {
                certified: Arc::new(certified),
                cert_pem,
                key_pem,
                checked: Instant::now(),
            }),
        })
    }

    /// Switches to the files' pair if it changed and is valid.
    fn refresh(&self, loaded: &mut Loaded) {
        let read = pem::read(&self.cert, WHAT_CERT)
            .and_then(|cert| Ok((cert, pem::read(&self.key, WHAT_KEY)?)));
        let (cert_pem, key_pem) = match read {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "TLS certificate not re-read; serving the last one");
                return;
            }
        };
        if cert_pem == loaded.cert_pem && key_pem == loaded.key_pem {
            return;
        }
        match certified_key(&self.cert, &cert_pem, &self.key, &key_pem, &self.provider) {
            Ok(certified) => {
                tracing::info!(cert = ?self.cert, "TLS certificate reloaded");
                loaded.certified = Arc::new(certified);
                loaded.cert_pem = cert_pem;
                loaded.key_pem = key_pem;
            }
            Err(error) => {
                tracing::warn!(%error, "changed TLS certificate refused; serving the last one");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic elsewhere while holding the lock leaves `Loaded` whole (it is replaced
        // field by field only after validation), so a poisoned lock is still usable.
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.checked.elapsed() >= CHECK_EVERY {
            loaded.checked = Instant::now();
            self.refresh(&mut loaded);
        }
        Some(Arc::clone(&loaded.certified))
    }
}

fn certified_key(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = pem::parse_certificates(cert_pem, cert, WHAT_CERT)?;
    let private = pem::parse_private_key(key_pem, key, WHAT_KEY)?;
    CertifiedKey::from_der(chain, private, provider).map_err(|error| TlsError::Config {
        what: format!("--tls-key {key:?} with --tls-cert {cert:?}"),
        why: error.to_string(),
    })
}
