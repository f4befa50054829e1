//! Where the endpoints come from: a list of URLs, each either an address or a name that
//! resolves to several (a Kubernetes headless service), re-resolved every interval so that
//! instances that appear or vanish join or leave the balancer live.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::Pool;

/// Why a list of endpoints was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No URL was given.
    #[error("no endpoint URL configured")]
    NoEndpoint,
    /// A URL is malformed or lacks a host.
    #[error("invalid endpoint URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        why: String,
    },
    /// The resolve interval is zero.
    #[error("the resolve interval must be greater than zero")]
    ZeroInterval,
    /// The TLS settings cannot make a connector.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

#[derive(Debug, Clone)]
struct Target {
    url: String,
    scheme: String,
    host: String,
    port: u16,
}

/// The addresses a name resolves to.
pub type Resolved = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves names to addresses; the default is the system's resolver
/// (`tokio::net::lookup_host`). Tests (or a service registry) can supply their own.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses `host` stands for now, each with `port`.
    fn resolve(&self, host: &str, port: u16) -> Resolved;
}

struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// How to find and connect to the endpoints of a balanced set.
#[derive(Clone)]
pub struct Discovery {
    targets: Vec<Target>,
    resolve_interval: Duration,
    connect_timeout: Duration,
    resolver: Arc<dyn Resolve>,
    tls: Option<ClientTlsConfig>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("targets", &self.targets)
            .field("resolve_interval", &self.resolve_interval)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// `urls` are `scheme://host:port` (port defaults to 80/443); a host that is not an IP
    /// address is resolved now and every `resolve_interval`, each address one endpoint.
    pub fn new(
        urls: &[String],
        resolve_interval: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, DiscoveryError> {
        if resolve_interval.is_zero() {
            return Err(DiscoveryError::ZeroInterval);
        }
        let targets = urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(DiscoveryError::NoEndpoint);
        }
        Ok(Self {
            targets,
            resolve_interval,
            connect_timeout,
            resolver: Arc::new(SystemResolver),
            tls: None,
        })
    }

    /// Resolves names with `resolver` instead of the system's resolver.
    pub fn with_resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Speaks TLS (with `tls`'s roots and client identity) to the `https://` URLs. A name is
    /// resolved to addresses, but each address's certificate is verified against the name in
    /// the URL, as a client connecting to the name would.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Result<Self, DiscoveryError> {
        // tonic checks the settings when they meet an endpoint; check them now, not per address.
        Endpoint::from_static("https://localhost")
            .tls_config(tls.clone())
            .map_err(|error| DiscoveryError::Tls(error.to_string()))?;
        self.tls = Some(tls);
        Ok(self)
    }

    fn endpoint(&self, url: &str, target: &Target) -> Option<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        match &self.tls {
            Some(tls) if target.scheme == "https" => endpoint
                .tls_config(tls.clone().domain_name(target.host.clone()))
                .inspect_err(
                    |error| tracing::warn!(%url, %error, "endpoint left out: TLS set-up failed"),
                )
                .ok(),
            _ => Some(endpoint),
        }
    }

    /// Resolves every target once, fills `handle`'s pool, then keeps re-resolving in a task
    /// until the balancer is dropped. A name that fails to resolve keeps its last addresses:
    /// a DNS hiccup must not empty the balancer.
    pub(crate) async fn start(self, pool: &Arc<Pool>) {
        let mut last: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        self.refresh(pool, &mut last).await;
        // Nothing resolved: the breaker opens (CIRCUIT_OPEN at once) rather than calls waiting
        // on an empty balancer until their deadline.
        pool.endpoint_changed();
        if self
            .targets
            .iter()
            .all(|t| t.host.parse::<IpAddr>().is_ok())
        {
            return;
        }
        let pool = Arc::downgrade(pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.resolve_interval).await;
                let Some(pool) = Weak::upgrade(&pool) else {
                    return;
                };
                if pool.is_closed() {
                    return;
                }
                self.refresh(&pool, &mut last).await;
            }
        });
    }

    async fn refresh(&self, pool: &Arc<Pool>, last: &mut BTreeMap<String, BTreeSet<String>>) {
        for target in &self.targets {
            match resolve(target, self.resolver.as_ref()).await {
                Ok(urls) if !urls.is_empty() => {
                    last.insert(target.url.clone(), urls);
                }
                Ok(_) => {
                    tracing::warn!(url = %target.url, "name resolved to no address; keeping the last ones")
                }
                Err(error) => {
                    tracing::warn!(url = %target.url, %error, "resolving failed; keeping the last addresses")
                }
            }
        }
        let wanted: BTreeSet<&String> = last.values().flatten().collect();
        for key in pool.keys() {
            if !wanted.contains(&key) {
                pool.remove(&key);
            }
        }
        for target in &self.targets {
            for url in last.get(&target.url).into_iter().flatten() {
                if let Some(endpoint) = self.endpoint(url, target) {
                    pool.insert(endpoint);
                }
            }
        }
    }
}

fn parse(url: &str) -> Result<Target, DiscoveryError> {
    let invalid = |why: &str| DiscoveryError::InvalidUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| invalid("no scheme"))?
        .to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(Target {
        url: url.to_owned(),
        scheme,
        host,
        port,
    })
}

/// The endpoint URLs a target stands for now.
async fn resolve(target: &Target, resolver: &dyn Resolve) -> std::io::Result<BTreeSet<String>> {
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => resolver.resolve(&target.host, target.port).await?,
    };
    Ok(addrs
        .into_iter()
        .map(|addr| format!("{}://{addr}", target.scheme))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = |urls: &[&str]| {
            Discovery::new(
                &urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                Duration::from_secs(5),
                Duration::from_secs(1),
            )
        };
        assert!(ok(&["http://127.0.0.1:1", " http://svc.ns:50051"]).is_ok());
        assert!(matches!(ok(&[]), Err(DiscoveryError::NoEndpoint)));
        assert!(matches!(ok(&[" "]), Err(DiscoveryError::NoEndpoint)));
        assert!(matches!(
            ok(&["not a url"]),
            Err(DiscoveryError::InvalidUrl { .. })
        ));
        assert!(matches!(
            ok(&["ftp://a:1"]),
            Err(DiscoveryError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Discovery::new(
                &["http://a:1".into()],
                Duration::ZERO,
                Duration::from_secs(1)
            ),
            Err(DiscoveryError::ZeroInterval)
        ));
    }

    #[tokio::test]
    async fn ip_literals_need_no_lookup_and_names_resolve() {
        let literal = parse("http://[::1]:7").unwrap();
        assert_eq!(
            resolve(&literal, &SystemResolver).await.unwrap(),
            BTreeSet::from(["http://[::1]:7".to_owned()])
        );
        let name = parse("http://localhost:7").unwrap();
        let urls = resolve(&name, &SystemResolver).await.unwrap();
        assert!(urls.contains("http://127.0.0.1:7"), "{urls:?}");
    }
}
