//! Throwaway certificates for development and tests (`lab certs init`): a CA, a server
//! certificate for the given hosts and a client certificate, all signed by that CA.

use std::io;
use std::path::Path;

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key (PKCS#8), both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// A throwaway CA that can issue more certificates, and the first server and client
/// certificates it issued.
pub struct DevCerts {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The server certificate (subject alternative names: the hosts given).
    pub server: PemPair,
    /// The client certificate (for mutual TLS).
    pub client: PemPair,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

/// Valid from today for a year: long enough for a lab, short enough that a leaked throwaway
/// certificate does not stay good for ever.
fn params(common_name: &str, hosts: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "concurrency-lab");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    let today = chrono::Utc::now().date_naive();
    // Day 28 at most: a 29 February has no twin a year later.
    let day = u8::try_from(today.day().min(28)).unwrap_or(28);
    let month = u8::try_from(today.month()).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = rcgen::date_time_ymd(today.year() + 1, month, day);
    Ok(params)
}

impl DevCerts {
    /// A new CA, a server certificate valid for `hosts` (names or IP addresses) and a client
    /// certificate named `client`.
    pub fn generate(hosts: &[String]) -> Result<Self, rcgen::Error> {
        let mut ca = params("concurrency-lab throwaway CA", &[])?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut certs = Self {
            ca,
            server: PemPair {
                cert: String::new(),
                key: String::new(),
            },
            client: PemPair {
                cert: String::new(),
                key: String::new(),
            },
        };
        certs.server = certs.issue_server("concurrency-lab server", hosts)?;
        certs.client = certs.issue_client("approval-svc")?;
        Ok(certs)
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A new server certificate from this CA, named `common_name`, valid for `hosts`.
    pub fn issue_server(
        &self,
        common_name: &str,
        hosts: &[String],
    ) -> Result<PemPair, rcgen::Error> {
        self.issue(common_name, hosts, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A new client certificate from this CA, named `common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<PemPair, rcgen::Error> {
        self.issue(common_name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<PemPair, rcgen::Error> {
        let mut params = params(common_name, hosts)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `server.pem`, `server-key.pem`, `client.pem` and `client-key.pem` into
    /// `dir` (created if needed); the keys readable by their owner only.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), self.ca_pem())?;
        self.server.write(dir, "server")?;
        self.client.write(dir, "client")
    }
}

impl PemPair {
    /// Writes `dir/NAME.pem` and `dir/NAME-key.pem` (owner-only on Unix).
    pub fn write(&self, dir: &Path, name: &str) -> io::Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert)?;
        write_private(&dir.join(format!("{name}-key.pem")), &self.key)
    }
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Security, ServerTlsArgs, client_config};

    #[test]
    fn written_certificates_serve_mutual_tls_and_make_a_client_identity() {
        let dir = tempfile::tempdir().unwrap();
        DevCerts::generate(&["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .write(dir.path())
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        let server = ServerTlsArgs {
            cert: Some(path("server.pem")),
            key: Some(path("server-key.pem")),
            client_ca: Some(path("ca.pem")),
        }
        .load()
        .unwrap();
        assert_eq!(Security::of(server.as_ref()), Security::MutualTls);
        client_config(
            &path("ca.pem"),
            Some((&path("client.pem"), &path("client-key.pem"))),
        )
        .unwrap();
        #[cfg(unix)]
        for key in ["server-key.pem", "client-key.pem"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key} is the owner's only");
        }
    }
}
