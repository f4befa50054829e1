//! Reading PEM files with errors that name the file and what it should hold.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The bytes of `path`.
pub(crate) fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn unusable(path: &Path, what: &str, why: impl ToString) -> TlsError {
    TlsError::Pem {
        what: what.to_owned(),
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// Every certificate in `pem` (at least one).
pub(crate) fn parse_certificates(
    pem: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unusable(path, what, error))?;
    if certificates.is_empty() {
        return Err(unusable(path, what, "no PEM CERTIFICATE block"));
    }
    Ok(certificates)
}

/// The first private key in `pem`.
pub(crate) fn parse_private_key(
    pem: &[u8],
    path: &Path,
    what: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            unusable(path, what, "no PEM PRIVATE KEY block")
        }
        other => unusable(path, what, other),
    })
}

/// Every certificate in the file `path`.
pub(crate) fn certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(&read(path, what)?, path, what)
}

/// The private key in the file `path`.
pub(crate) fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(&read(path, what)?, path, what)
}
