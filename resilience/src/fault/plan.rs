//! Fault rules and their text form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tonic::Code;

use crate::telemetry::{code_name, parse_code};

/// Which RPCs a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcFilter {
    /// Every RPC (`*`).
    Any,
    /// One RPC by full gRPC path, e.g. `/lab.order.v1.OrderService/CreateOrder`.
    Path(String),
    /// Every RPC whose method name (last path segment) is this, e.g. `CreateOrder`.
    Method(String),
}

impl RpcFilter {
    /// Whether the rule applies to a request with this URI path.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Path(p) => p == path,
            Self::Method(m) => path.rsplit('/').next() == Some(m.as_str()),
        }
    }
}

/// What a rule does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Wait this long before handling the request (adds up with other delays).
    Delay(Duration),
    /// Answer with this code at once; the handler does not run.
    Error(Code),
    /// Run the handler to completion, then answer UNAVAILABLE instead of its response: the work
    /// is committed, the client never learns it.
    DropResponse,
    /// Run the handler to completion, then never answer: the client times out.
    BlackHole,
}

impl FaultKind {
    /// Name used in the text form and the `kind` metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Delay(_) => "delay",
            Self::Error(_) => "error",
            Self::DropResponse => "drop_response",
            Self::BlackHole => "black_hole",
        }
    }
}

/// One fault: where, what, how often.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The RPCs it applies to.
    pub target: RpcFilter,
    /// The fault.
    pub kind: FaultKind,
    /// Chance in `[0, 1]` that it fires on a matching request.
    pub probability: f64,
    /// Only this attempt of a call (1 for the first try, 2 for the first retry, as told by
    /// `grpc-previous-rpc-attempts`); `None` for every attempt. Lets a drill script one call's
    /// story, e.g. "the first try commits and loses its reply, the retry gets INTERNAL".
    pub attempt: Option<u32>,
}

impl FaultRule {
    /// A rule that always fires on `target`.
    pub fn new(target: RpcFilter, kind: FaultKind) -> Self {
        Self {
            target,
            kind,
            probability: 1.0,
            attempt: None,
        }
    }

    /// The same rule, firing only on attempt `attempt` of a call (1 = the first try).
    pub fn on_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Whether the rule applies to attempt `attempt` (1-based) of a call to `path`.
    pub fn applies_to(&self, path: &str, attempt: u32) -> bool {
        self.target.matches(path) && self.attempt.is_none_or(|only| only == attempt)
    }

    /// The same rule, firing with `probability` (clamped to `[0, 1]`).
    pub fn with_probability(mut self, probability: f64) -> Self {
        self.probability = probability.clamp(0.0, 1.0);
        self
    }
}

/// An ordered list of rules; empty means no faults. See [`crate::fault`] for the text grammar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// The rules, evaluated in order.
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// A plan with these rules.
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Self { rules }
    }

    /// Whether the plan injects nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Why a fault plan's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault rule {rule:?}: {reason}")]
pub struct FaultParseError {
    /// The offending rule, as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for FaultRule {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| FaultParseError {
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut fields = text.splitn(3, ':').map(str::trim);
        let first = fields.next().unwrap_or_default();
        let (target, attempt) = match first.split_once('@') {
            None => (first, None),
            Some((target, attempt)) => match attempt.trim().parse::<u32>() {
                Ok(attempt) if attempt >= 1 => (target.trim(), Some(attempt)),
                _ => return Err(fail("the attempt after '@' must be a whole number from 1")),
            },
        };
        let target = match target {
            "" => return Err(fail("missing target")),
            "*" => RpcFilter::Any,
            path if path.starts_with('/') => RpcFilter::Path(path.to_owned()),
            method if method.contains('/') => {
                return Err(fail("a path must start with '/'"));
            }
            method => RpcFilter::Method(method.to_owned()),
        };
        let action = fields.next().ok_or_else(|| fail("missing action"))?;
        let kind = match action.split_once('=') {
            Some(("delay", d)) => FaultKind::Delay(
                humantime::parse_duration(d.trim())
                    .map_err(|e| fail(&format!("bad duration: {e}")))?,
            ),
            Some(("error", c)) => match parse_code(c.trim()) {
                Some(Code::Ok) | None => return Err(fail("error needs a non-OK gRPC code")),
                Some(code) => FaultKind::Error(code),
            },
            None if action == "drop_response" => FaultKind::DropResponse,
            None if action == "black_hole" => FaultKind::BlackHole,
            _ => {
                return Err(fail(
                    "action must be delay=DURATION, error=CODE, drop_response or black_hole",
                ));
            }
        };
        let probability = match fields.next() {
            None => 1.0,
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| fail("probability must be a number in [0, 1]"))?,
        };
        Ok(Self {
            target,
            kind,
            probability,
            attempt,
        })
    }
}

impl FromStr for FaultPlan {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(';')
            .map(str::trim)
            .filter(|rule| !rule.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self::new)
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RpcFilter::Any => f.write_str("*")?,
            RpcFilter::Path(p) | RpcFilter::Method(p) => f.write_str(p)?,
        }
        if let Some(attempt) = self.attempt {
            write!(f, "@{attempt}")?;
        }
        match self.kind {
            FaultKind::Delay(d) => write!(f, ":delay={}", humantime::format_duration(d))?,
            FaultKind::Error(c) => write!(f, ":error={}", code_name(c))?,
            kind => write!(f, ":{}", kind.name())?,
        }
        write!(f, ":{}", self.probability)
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let plan: FaultPlan = "CreateOrder:drop_response:1.0; *:delay=200ms:0.5"
            .parse()
            .unwrap();
        assert_eq!(
            plan.rules,
            vec![
                FaultRule::new(
                    RpcFilter::Method("CreateOrder".into()),
                    FaultKind::DropResponse
                ),
                FaultRule::new(RpcFilter::Any, FaultKind::Delay(Duration::from_millis(200)))
                    .with_probability(0.5),
            ]
        );
        assert_eq!(plan.to_string().parse::<FaultPlan>().unwrap(), plan);
    }

    #[test]
    fn parses_paths_codes_and_defaults() {
        let plan: FaultPlan =
            "/lab.order.v1.OrderService/GetOrder:error=unavailable;CreateOrder:error=10:0;;x:black_hole"
                .parse()
                .unwrap();
        assert_eq!(plan.rules.len(), 3);
        assert_eq!(plan.rules[0].kind, FaultKind::Error(Code::Unavailable));
        assert_eq!(plan.rules[0].probability, 1.0);
        assert!(
            plan.rules[0]
                .target
                .matches("/lab.order.v1.OrderService/GetOrder")
        );
        assert!(
            !plan.rules[0]
                .target
                .matches("/lab.order.v1.OrderService/GetProduct")
        );
        assert_eq!(plan.rules[1].kind, FaultKind::Error(Code::Aborted));
        assert!(
            plan.rules[1]
                .target
                .matches("/lab.order.v1.OrderService/CreateOrder")
        );
        assert_eq!(plan.rules[2].kind, FaultKind::BlackHole);
        assert!("".parse::<FaultPlan>().unwrap().is_empty());
    }

    #[test]
    fn parses_attempt_filters() {
        let plan: FaultPlan = "CreateOrder@1:drop_response; CreateOrder@2:error=INTERNAL"
            .parse()
            .unwrap();
        assert_eq!(
            plan.rules,
            vec![
                FaultRule::new(
                    RpcFilter::Method("CreateOrder".into()),
                    FaultKind::DropResponse
                )
                .on_attempt(1),
                FaultRule::new(
                    RpcFilter::Method("CreateOrder".into()),
                    FaultKind::Error(Code::Internal)
                )
                .on_attempt(2),
            ]
        );
        let path = "/lab.order.v1.OrderService/CreateOrder";
        assert!(plan.rules[0].applies_to(path, 1) && !plan.rules[0].applies_to(path, 2));
        assert!(plan.rules[1].applies_to(path, 2) && !plan.rules[1].applies_to(path, 3));
        assert_eq!(plan.to_string().parse::<FaultPlan>().unwrap(), plan);
    }

    #[test]
    fn rejects_malformed_rules() {
        for bad in [
            "CreateOrder",
            ":delay=1s",
            "x:delay=soon",
            "x:error=OK",
            "x:error=NOPE",
            "x:explode",
            "x:drop_response:1.5",
            "x:drop_response:maybe",
            "lab.order.v1.OrderService/CreateOrder:black_hole",
            "CreateOrder@0:black_hole",
            "CreateOrder@first:black_hole",
        ] {
            assert!(bad.parse::<FaultPlan>().is_err(), "{bad}");
        }
    }
}
