//! Keyset paging: `page_size` (default 50, max 500) and an opaque `page_token`.
//!
//! Rows are listed in id order; ids are UUID v7, so id order is creation order. The token is the
//! last id of the previous page, base64url-encoded behind a version tag so its format can change
//! without breaking clients that hold old tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::validate::Violations;

/// Page size when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: i32 = 500;
const TOKEN_PREFIX: &str = "v1:";

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows to return.
    pub size: i64,
    /// Return rows with ids strictly after this one; `None` for the first page.
    pub after: Option<Uuid>,
}

impl PageRequest {
    /// Validates `page_size` and `page_token`, recording violations.
    pub fn parse(page_size: i32, page_token: &str, violations: &mut Violations) -> Self {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if (1..=MAX_PAGE_SIZE).contains(&size) => size,
            _ => {
                violations.add(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let decoded = decode_token(page_token);
            if decoded.is_none() {
                violations.add("page_token", "is not a token returned by this service");
            }
            decoded
        };
        Self {
            size: i64::from(size),
            after,
        }
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.size + 1
    }

    /// Cuts the fetched rows to the page and returns the next page's token (empty when done).
    pub fn finish<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> Uuid) -> (Vec<T>, String) {
        // fetch_limit asked for one extra row; its presence means another page exists.
        let page_len = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() > page_len {
            rows.truncate(page_len);
            let token = rows.last().map(|row| encode_token(id_of(row)));
            (rows, token.unwrap_or_default())
        } else {
            (rows, String::new())
        }
    }
}

fn encode_token(last_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{last_id}"))
}

fn decode_token(token: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    Uuid::try_parse(text.strip_prefix(TOKEN_PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let mut violations = Violations::default();
        assert_eq!(PageRequest::parse(0, "", &mut violations).size, 50);
        assert_eq!(PageRequest::parse(500, "", &mut violations).size, 500);
        assert!(violations.is_empty());
        PageRequest::parse(501, "", &mut violations);
        PageRequest::parse(-1, "", &mut violations);
        PageRequest::parse(10, "garbage", &mut violations);
        assert!(violations.into_result().is_err());
    }

    #[test]
    fn token_round_trips_and_marks_the_last_page() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = PageRequest {
            size: 2,
            after: None,
        };
        let (rows, token) = page.finish(ids.clone(), |id| *id);
        assert_eq!(rows, ids[..2]);
        let mut violations = Violations::default();
        let next = PageRequest::parse(2, &token, &mut violations);
        assert_eq!(next.after, Some(ids[1]));
        let (rows, token) = next.finish(vec![ids[2]], |id| *id);
        assert_eq!(rows, [ids[2]]);
        assert!(token.is_empty());
    }
}
