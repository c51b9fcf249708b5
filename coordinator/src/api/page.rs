//! Cursor pagination shared by every list route: the page size and its
//! bounds, one extra row to tell whether another page follows, and the
//! cursor of that page.

use uuid::Uuid;

use super::error::ApiError;

/// Page size when the request names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a request may ask for.
pub const MAX_LIMIT: u32 = 200;

/// A checked page request: `limit` (1 to [`MAX_LIMIT`], default
/// [`DEFAULT_LIMIT`]) rows after a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    limit: u32,
}

impl Page {
    /// The page a request's `limit` asks for, or 400 on `limit`.
    pub fn new(limit: Option<u32>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok(Page { limit })
    }

    /// Rows to read from the store: one more than the page, so that
    /// [`Page::cut`] can tell whether another page follows.
    pub fn rows_to_read(self) -> u32 {
        self.limit + 1
    }

    /// Cuts `rows` (read with [`Page::rows_to_read`]) to the page and
    /// returns the next page's cursor, taken from the last row kept, when
    /// more rows followed.
    pub fn cut<T, C>(self, rows: &mut Vec<T>, cursor: impl FnOnce(&T) -> C) -> Option<C> {
        let limit = self.limit as usize;
        if rows.len() <= limit {
            return None;
        }
        rows.truncate(limit);
        rows.last().map(cursor)
    }
}

/// A `cursor` query parameter as this API hands them out (a row id), or
/// 400 on `cursor`.
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| ApiError::invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused_on_limit() {
        for bad in [0, MAX_LIMIT + 1, u32::MAX] {
            let err = Page::new(Some(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.detail.field.as_deref(), Some("limit"));
        }
        assert_eq!(Page::new(None).unwrap().rows_to_read(), DEFAULT_LIMIT + 1);
        assert_eq!(Page::new(Some(1)).unwrap().rows_to_read(), 2);
        assert_eq!(Page::new(Some(MAX_LIMIT)).unwrap().rows_to_read(), 201);
    }

    #[test]
    fn a_next_cursor_only_when_more_rows_followed() {
        let page = Page::new(Some(2)).unwrap();
        let mut rows = vec![1, 2, 3];
        assert_eq!(page.cut(&mut rows, |r| *r), Some(2));
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert_eq!(page.cut(&mut rows, |r| *r), None);
        assert_eq!(rows, [1, 2]);
        let mut rows: Vec<i32> = Vec::new();
        assert_eq!(page.cut(&mut rows, |r| *r), None);
    }

    #[test]
    fn cursors_are_row_ids() {
        let id = Uuid::now_v7();
        assert_eq!(parse_cursor(Some(&id.to_string())).unwrap(), Some(id));
        assert_eq!(parse_cursor(None).unwrap(), None);
        let err = parse_cursor(Some("bogus")).unwrap_err();
        assert_eq!(err.detail.field.as_deref(), Some("cursor"));
    }
}
