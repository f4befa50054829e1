//! Reads a service's Prometheus `/metrics` page (plain HTTP/1.1, no client library), so scenario
//! summaries can show the resilience stack's own counts: retries, budget refusals, breaker
//! transitions; and lints a page with Prometheus's own `promtool check metrics`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as exposed).
    pub name: String,
    /// Label pairs in exposition order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format (comments and malformed lines skipped).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// True when the page has a series of family `name` (a histogram's `_count` counts).
    pub fn has_family(&self, name: &str) -> bool {
        let count = format!("{name}_count");
        self.samples
            .iter()
            .any(|s| s.name == name || s.name == count)
    }

    /// The value of the series of `name` with exactly these labels (in any order), if exported.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// Sum of every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Sum of the series of `name` whose label `label` is `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.labels.iter().any(|(k, v)| k == label && v == value))
            .map(|s| s.value)
            .sum()
    }

    /// The resilience stack's counters, as summed over all clients.
    pub fn resilience(&self) -> ResilienceCounts {
        let count = |name: &str| self.sum(name) as u64;
        let to = |state: &str| {
            self.sum_where("resilience_breaker_transitions_total", "to", state) as u64
        };
        ResilienceCounts {
            calls: count("resilience_calls_total"),
            attempts: count("resilience_attempts_total"),
            retries: count("resilience_retries_total"),
            budget_exhausted: count("resilience_retry_budget_exhausted_total"),
            attempt_timeouts: count("resilience_attempt_timeouts_total"),
            breaker_opened: to("open"),
            breaker_half_opened: to("half_open"),
            breaker_closed: to("closed"),
            breaker_rejections: count("resilience_breaker_rejections_total"),
            shed: count("resilience_shed_total"),
        }
    }
}

/// The resilience stack's counters of one process (they restart from zero with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResilienceCounts {
    /// Logical calls.
    pub calls: u64,
    /// Attempts sent (first tries and retries).
    pub attempts: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Attempts cut by the per-attempt timeout.
    pub attempt_timeouts: u64,
    /// Breaker transitions to open.
    pub breaker_opened: u64,
    /// Breaker transitions to half-open.
    pub breaker_half_opened: u64,
    /// Breaker transitions to closed.
    pub breaker_closed: u64,
    /// Calls failed fast by the open breaker.
    pub breaker_rejections: u64,
    /// Attempts shed by the concurrency limit.
    pub shed: u64,
}

impl std::ops::Add for ResilienceCounts {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            calls: self.calls + other.calls,
            attempts: self.attempts + other.attempts,
            retries: self.retries + other.retries,
            budget_exhausted: self.budget_exhausted + other.budget_exhausted,
            attempt_timeouts: self.attempt_timeouts + other.attempt_timeouts,
            breaker_opened: self.breaker_opened + other.breaker_opened,
            breaker_half_opened: self.breaker_half_opened + other.breaker_half_opened,
            breaker_closed: self.breaker_closed + other.breaker_closed,
            breaker_rejections: self.breaker_rejections + other.breaker_rejections,
            shed: self.shed + other.shed,
        }
    }
}

impl fmt::Display for ResilienceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "calls={} attempts={} retries={} budget_refused={} attempt_timeouts={} \
             breaker(open={} half_open={} closed={} rejected={}) shed={}",
            self.calls,
            self.attempts,
            self.retries,
            self.budget_exhausted,
            self.attempt_timeouts,
            self.breaker_opened,
            self.breaker_half_opened,
            self.breaker_closed,
            self.breaker_rejections,
            self.shed
        )
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_once(' ')?,
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}')?)),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    labels
}

/// Fetches and parses `http://<addr>/metrics`.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Metrics> {
    Ok(Metrics::parse(&fetch(addr).await?))
}

/// Fetches `http://<addr>/metrics` as text, unparsed (for [`promtool_findings`]).
pub async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "metrics scrape timed out")
        })??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "metrics answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(body)
}

/// Why a page could not be linted.
#[derive(Debug, thiserror::Error)]
pub enum PromtoolError {
    /// `promtool` is not on `PATH` (Debian package `prometheus`).
    #[error("promtool is not installed (Debian: apt-get install prometheus)")]
    NotInstalled,
    /// Running it failed.
    #[error("running promtool: {0}")]
    Io(#[from] std::io::Error),
}

/// What `promtool check metrics` finds wrong with `page`, one line per finding (lint problems,
/// or the parse error of a page it cannot read); empty when the page is clean.
pub async fn promtool_findings(page: &str) -> Result<Vec<String>, PromtoolError> {
    use std::process::Stdio;
    let child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(PromtoolError::NotInstalled);
        }
        Err(error) => return Err(error.into()),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(page.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    let mut findings: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if !output.status.success() && findings.is_empty() {
        findings.push(format!("promtool exited with {}", output.status));
    }
    Ok(findings)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let text = "# TYPE resilience_retries_total counter\n\
                    resilience_retries_total{client=\"order-svc\"} 7\n\
                    resilience_breaker_transitions_total{client=\"order-svc\",to=\"open\"} 2\n\
                    resilience_breaker_transitions_total{client=\"order-svc\",to=\"closed\"} 1\n\
                    plain_gauge 3.5\n\
                    weird{a=\"x\\\"y\"} 1\n";
        let metrics = Metrics::parse(text);
        assert_eq!(metrics.sum("resilience_retries_total"), 7.0);
        assert_eq!(metrics.sum("plain_gauge"), 3.5);
        assert_eq!(
            metrics.samples[4].labels,
            [("a".to_owned(), "x\"y".to_owned())]
        );
        let counts = metrics.resilience();
        assert_eq!(
            (counts.retries, counts.breaker_opened, counts.breaker_closed),
            (7, 2, 1)
        );
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
