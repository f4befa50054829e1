//! Drills read from a TOML timeline file (`lab drill --scenario-file FILE.toml`).
//!
//! ```toml
//! name = "order-svc-bad-day"          # the report's title
//! seed = 7                             # optional (42)
//!
//! [workload]                           # every key optional; `lab drill` flags win
//! duration = "30s"                     # approvals are sent for this long…
//! rate = 200                           # …at this many per second
//! max_in_flight = 64
//! stock = 5000                         # default: 90 % of rate × duration
//! quantity = 1
//! deadline = "10s"                     # each approval's deadline
//!
//! [cluster]
//! order_instances = 1                  # the proxy stands in front of order-svc only with 1
//! approval_instances = 1
//! approval_env = { APPROVAL_LEASE = "3s" }
//!
//! [settle]
//! resend_errored = true                # re-send failed approvals once, as callers do
//! pause = "2s"
//! timeout = "60s"
//!
//! [[fault]]
//! at = "30%"                           # of the duration; or "6s", "after 1s",
//! action = "kill"                      # "answers 600", "load-done", "load-done 2s"
//! service = "order-svc"
//! instance = 0
//! ```
//!
//! Actions: `kill`, `terminate` (`drain`, default 10 s), `restart` (each with `service` =
//! `order-svc`|`approval-svc` and `instance`, default 0), `rolling-restart` (`service`,
//! `drain`, `pause`), `proxy` (`fault` in the proxy's text form, e.g. `"latency 1500ms
//! 100ms"`, `"lose 0.3"`, `"unavailable"`; `for` a duration, else until `clear-proxy`),
//! `clear-proxy`, `terminate-connections` (`database` = `order`|`approval`|`both`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::ClusterOptions;
use crate::engine::{
    Action, At, Databases, Expectations, Pacing, Product, Scenario, Service, Settle, Workload,
};

use super::Params;

/// Why a timeline file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not TOML, or not this format.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value the format does not know.
    #[error("fault #{step}: {message}")]
    Step {
        /// The `[[fault]]`, from 1.
        step: usize,
        /// What is wrong.
        message: String,
    },
    /// A bad duration elsewhere.
    #[error("{0}")]
    Value(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    seed: Option<u64>,
    #[serde(default)]
    workload: FileWorkload,
    #[serde(default)]
    cluster: FileCluster,
    #[serde(default)]
    settle: FileSettle,
    #[serde(default)]
    expect: FileExpect,
    #[serde(default, rename = "fault")]
    faults: Vec<FileStep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkload {
    duration: Option<String>,
    rate: Option<f64>,
    max_in_flight: Option<usize>,
    stock: Option<i64>,
    quantity: Option<i32>,
    deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    order_instances: Option<usize>,
    approval_instances: Option<usize>,
    proxy: Option<bool>,
    #[serde(default)]
    approval_env: BTreeMap<String, String>,
    #[serde(default)]
    order_env: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettle {
    resend_errored: Option<bool>,
    pause: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExpect {
    max_failed: Option<u64>,
    no_dead_letters: Option<bool>,
    exact_end_state: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStep {
    at: String,
    action: String,
    service: Option<String>,
    instance: Option<usize>,
    fault: Option<String>,
    #[serde(rename = "for")]
    lasting: Option<String>,
    database: Option<String>,
    drain: Option<String>,
    pause: Option<String>,
}

/// Reads a drill from a TOML timeline file's text (see the module docs); `params` (the
/// command line) win over the file's workload and cluster.
pub fn from_toml(text: &str, params: &Params) -> Result<Scenario, FileError> {
    let file: File = toml::from_str(text)?;
    let duration_of = |text: &Option<String>, default: Duration| match text {
        Some(text) => humantime::parse_duration(text)
            .map_err(|error| FileError::Value(format!("bad duration {text:?}: {error}"))),
        None => Ok(default),
    };
    let params = Params {
        duration: Some(params.duration.map_or_else(
            || duration_of(&file.workload.duration, Duration::from_secs(30)),
            Ok,
        )?),
        rate: params.rate.or(file.workload.rate),
        order_instances: params.order_instances.or(file.cluster.order_instances),
        approval_instances: params
            .approval_instances
            .or(file.cluster.approval_instances),
        seed: params.seed.or(file.seed),
    };
    let duration = params.duration();
    let challenges = params.challenges();
    let mut cluster = ClusterOptions::default()
        .order_instances(params.order_instances.unwrap_or(1))
        .approval_instances(params.approval_instances.unwrap_or(1));
    if file.cluster.proxy == Some(false) {
        cluster = cluster.without_proxy();
    }
    for (key, value) in &file.cluster.approval_env {
        cluster = cluster.approval_env(key, value);
    }
    for (key, value) in &file.cluster.order_env {
        cluster = cluster.order_env(key, value);
    }
    let workload = Workload {
        products: vec![Product {
            name: "reward".into(),
            stock: file
                .workload
                .stock
                .unwrap_or((challenges as i64 * 9 / 10).max(1)),
        }],
        challenges,
        quantity: file.workload.quantity.unwrap_or(1),
        pacing: Pacing::paced(params.rate(), file.workload.max_in_flight.unwrap_or(64)),
        deadline: duration_of(&file.workload.deadline, Duration::from_secs(10))?,
        ..Workload::default()
    };
    let mut scenario = Scenario::new(&file.name, &file.name, params.seed.unwrap_or(42))
        .cluster(cluster)
        .workload(workload)
        .settle(Settle {
            resend_errored: file.settle.resend_errored.unwrap_or(true).then_some(32),
            pause: duration_of(&file.settle.pause, Duration::from_secs(2))?,
            timeout: duration_of(&file.settle.timeout, Duration::from_secs(60))?,
        })
        .expect(Expectations {
            max_failed: file.expect.max_failed,
            no_dead_letters: file.expect.no_dead_letters.unwrap_or(true),
            exact_end_state: file.expect.exact_end_state.unwrap_or(true),
        });
    for (n, step) in file.faults.iter().enumerate() {
        let fail = |message: String| FileError::Step {
            step: n + 1,
            message,
        };
        let at = parse_at(&step.at, duration).map_err(fail)?;
        let action = parse_action(step).map_err(fail)?;
        scenario = scenario.at(at, action);
    }
    Ok(scenario)
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("bad duration {text:?}: {error}"))
}

/// `6s`, `30%`, `after 1s`, `answers 600`, `load-done`, `load-done 2s`.
fn parse_at(text: &str, run: Duration) -> Result<At, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("after ") {
        return Ok(At::After(duration(rest)?));
    }
    if let Some(rest) = text.strip_prefix("answers ") {
        return rest
            .trim()
            .parse()
            .map(At::Answers)
            .map_err(|_| format!("bad answer count {rest:?}"));
    }
    if let Some(rest) = text.strip_prefix("load-done") {
        return Ok(At::LoadDone(if rest.trim().is_empty() {
            Duration::ZERO
        } else {
            duration(rest)?
        }));
    }
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=1_000.0).contains(p))
            .ok_or_else(|| format!("bad percentage {text:?}"))?;
        return Ok(At::Time(run.mul_f64(percent / 100.0)));
    }
    Ok(At::Time(duration(text)?))
}

fn parse_action(step: &FileStep) -> Result<Action, String> {
    let service = || match step.service.as_deref() {
        Some("order-svc") => Ok(Service::Order),
        Some("approval-svc") => Ok(Service::Approval),
        Some(other) => Err(format!(
            "unknown service {other:?} (order-svc or approval-svc)"
        )),
        None => Err(format!("{:?} needs a service", step.action)),
    };
    let instance = step.instance.unwrap_or(0);
    let or =
        |text: &Option<String>, default: Duration| text.as_deref().map_or(Ok(default), duration);
    Ok(match step.action.as_str() {
        "kill" => Action::Kill(service()?, instance),
        "terminate" => Action::Terminate(
            service()?,
            instance,
            or(&step.drain, Duration::from_secs(10))?,
        ),
        "restart" => Action::Restart(service()?, instance),
        "rolling-restart" => Action::RollingRestart {
            service: service()?,
            drain: or(&step.drain, Duration::from_secs(10))?,
            pause: or(&step.pause, Duration::from_millis(500))?,
        },
        "proxy" => Action::Proxy {
            fault: step
                .fault
                .as_deref()
                .ok_or("a proxy step needs a fault")?
                .parse()
                .map_err(|error| format!("{error}"))?,
            lasting: step.lasting.as_deref().map(duration).transpose()?,
        },
        "clear-proxy" => Action::ClearProxy,
        "terminate-connections" => Action::TerminateConnections(match step.database.as_deref() {
            Some("order") => Databases::Order,
            Some("approval") => Databases::Approval,
            Some("both") | None => Databases::Both,
            Some(other) => {
                return Err(format!(
                    "unknown database {other:?} (order, approval, both)"
                ));
            }
        }),
        other => {
            return Err(format!(
                "unknown action {other:?}; one of: kill, terminate, restart, rolling-restart, \
                 proxy, clear-proxy, terminate-connections"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_file_reads() {
        let text = include_str!("../../../docs/drills/order-svc-bad-day.toml");
        let scenario = from_toml(text, &Params::default()).unwrap();
        assert_eq!(scenario.name, "order-svc-bad-day");
        assert!(scenario.timeline.len() >= 4, "{:?}", scenario.timeline);
    }

    #[test]
    fn the_command_line_wins_and_moments_parse() {
        let text = r#"
            name = "t"
            [workload]
            duration = "10s"
            rate = 50
            [[fault]]
            at = "50%"
            action = "kill"
            service = "order-svc"
            [[fault]]
            at = "after 1s"
            action = "restart"
            service = "order-svc"
            [[fault]]
            at = "load-done 2s"
            action = "proxy"
            fault = "lose 0.5"
            for = "3s"
        "#;
        let params = Params {
            rate: Some(100.0),
            ..Params::default()
        };
        let scenario = from_toml(text, &params).unwrap();
        assert_eq!(scenario.workload.challenges, 1_000);
        assert_eq!(scenario.timeline[0].at, At::Time(Duration::from_secs(5)));
        assert_eq!(scenario.timeline[1].at, At::After(Duration::from_secs(1)));
        assert_eq!(
            scenario.timeline[2].at,
            At::LoadDone(Duration::from_secs(2))
        );
        assert_eq!(
            parse_at("answers 600", Duration::ZERO),
            Ok(At::Answers(600))
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            (
                "name = \"t\"\n[[fault]]\nat = \"1s\"\naction = \"explode\"",
                "unknown action",
            ),
            (
                "name = \"t\"\n[[fault]]\nat = \"soon\"\naction = \"clear-proxy\"",
                "bad duration",
            ),
            (
                "name = \"t\"\n[[fault]]\nat = \"1s\"\naction = \"kill\"",
                "needs a service",
            ),
            ("name = \"t\"\nspeed = 3", "unknown field"),
        ] {
            let error = from_toml(text, &Params::default()).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
