//! Input validation that collects every problem of a request into one `INVALID_ARGUMENT` status
//! with `google.rpc.BadRequest` field violations, so a client fixes all of them in one go.

use tonic::Status;
use uuid::Uuid;

use crate::status;

/// Field violations found so far in one request.
#[derive(Debug, Default)]
pub struct Violations {
    violations: Vec<(String, String)>,
}

impl Violations {
    /// Records that `field` is invalid, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push((field.into(), description.into()));
    }

    /// Parses a required UUID in canonical form.
    pub fn uuid(&mut self, field: &str, value: &str) -> Option<Uuid> {
        if value.is_empty() {
            self.add(field, "is required");
            return None;
        }
        match Uuid::try_parse(value) {
            Ok(id) => Some(id),
            Err(_) => {
                self.add(
                    field,
                    "must be a UUID, e.g. 0190b6b0-7c4e-7a3e-9f1a-2b3c4d5e6f70",
                );
                None
            }
        }
    }

    /// Parses an optional UUID filter: empty means "not set".
    pub fn optional_uuid(&mut self, field: &str, value: &str) -> Option<Uuid> {
        if value.is_empty() {
            None
        } else {
            self.uuid(field, value)
        }
    }

    /// Checks a text's length in characters (`min..=max`) after trimming; returns it trimmed.
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        let trimmed = value.trim();
        let length = trimmed.chars().count();
        if length < min {
            self.add(
                field,
                format!("must have at least {min} non-blank characters"),
            );
        } else if length > max {
            self.add(field, format!("must have at most {max} characters"));
        } else if trimmed.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
        trimmed.to_owned()
    }

    /// Checks that `value` lies within `min..=max`.
    pub fn range<T>(&mut self, field: &str, value: T, min: T, max: T)
    where
        T: PartialOrd + std::fmt::Display,
    {
        if value < min || value > max {
            self.add(field, format!("must be between {min} and {max}"));
        }
    }

    /// Checks that an enum field holds a value this server knows.
    pub fn known_enum(&mut self, field: &str, known: bool) {
        if !known {
            self.add(field, "is not a known enum value");
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when nothing was recorded, else one `INVALID_ARGUMENT` status listing everything.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(status::invalid_argument(self.violations))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn collects_every_violation_into_one_status() {
        let mut violations = Violations::default();
        violations.uuid("product_id", "not-a-uuid");
        violations.text("name", "   ", 1, 10);
        violations.range("quantity", 0, 1, 5);
        let status = violations.into_result().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["product_id", "name", "quantity"]);
    }

    #[test]
    fn valid_input_passes_and_is_trimmed() {
        let mut violations = Violations::default();
        let id = Uuid::now_v7();
        assert_eq!(violations.uuid("id", &id.to_string()), Some(id));
        assert_eq!(violations.text("name", "  lamp ", 1, 10), "lamp");
        violations.range("quantity", 3, 1, 5);
        assert!(violations.into_result().is_ok());
    }
}
