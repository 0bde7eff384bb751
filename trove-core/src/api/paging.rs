//! One paging scheme for every listing that pages: the caller asks with a [`PageRequest`] (`limit` and `marker`
//! as the query gave them), the listing answers a [`Page`] (its rows and the marker of the next page, if any).
//!
//! What a marker names is the listing's choice, as upstream's: most listings page by key
//! ([`PageRequest::by_key`]: the marker is the key, e.g. the id, of the last row of the previous page; an unknown
//! marker is a 400), backups by offset ([`PageRequest::by_offset`]: the marker is the index of the next row; one
//! that is not a number is a 400). The limit is checked when the listing pages, after the caller's access (so a
//! non-admin asking an admin listing gets the 403 whatever the limit).

use crate::error::{Error, Result};

/// The `limit` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Limit {
    /// None given: the deployment's page size.
    #[default]
    Default,
    /// This many rows.
    Rows(usize),
    /// A query value that is not a positive integer (answered 400 when the listing pages).
    Invalid(String),
}

/// A page of a listing as asked: at most `limit` rows after `marker` (from the start without one). The default
/// asks for the first page of the deployment's page size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    limit: Limit,
    marker: Option<String>,
    max_limit: Option<usize>,
}

/// One page of a listing: its rows, and the marker of the next page when more rows follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows of the page, in listing order.
    pub items: Vec<T>,
    /// The marker that asks for the next page; `None` on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The same page with every row mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

impl PageRequest {
    /// At most `limit` rows (0 is taken as 1) after `marker`.
    pub fn new(limit: usize, marker: Option<String>) -> PageRequest {
        PageRequest {
            limit: Limit::Rows(limit),
            marker,
            max_limit: None,
        }
    }

    /// The page of a request's query: `limit` and `marker` as given (a `limit` that is not a positive integer is
    /// answered 400 when the listing pages), with limits above `max_limit` cut to it.
    pub fn from_query(limit: Option<&str>, marker: Option<&str>, max_limit: usize) -> PageRequest {
        let limit = match limit {
            None => Limit::Default,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n > 0 => Limit::Rows(n),
                _ => Limit::Invalid(s.to_string()),
            },
        };
        PageRequest {
            limit,
            marker: marker.map(str::to_string),
            max_limit: Some(max_limit),
        }
    }

    /// The marker as given.
    pub fn marker(&self) -> Option<&str> {
        self.marker.as_deref()
    }

    /// The rows on the page: the limit asked for (400 when it is not a positive integer), `default_size` without
    /// one, at most the maximum, at least 1.
    pub fn limit(&self, default_size: usize) -> Result<usize> {
        let asked = match &self.limit {
            Limit::Default => default_size,
            Limit::Rows(n) => *n,
            Limit::Invalid(s) => {
                return Err(Error::bad_request(format!(
                    "The limit '{s}' is not a positive integer."
                )))
            }
        };
        Ok(self.max_limit.map_or(asked, |m| asked.min(m)).max(1))
    }

    /// Pages `items` (already in listing order) by key: the marker is the key of the last row of the previous
    /// page (400 when no row has it), and the next page's marker is the key of this page's last row.
    pub fn by_key<T>(
        &self,
        default_size: usize,
        mut items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        let limit = self.limit(default_size)?;
        if let Some(marker) = &self.marker {
            let pos = items
                .iter()
                .position(|i| key(i) == *marker)
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "The marker '{}' could not be found.",
                        marker.escape_default()
                    ))
                })?;
            items.drain(..=pos);
        }
        let next = (items.len() > limit).then(|| key(&items[limit - 1]));
        items.truncate(limit);
        Ok(Page { items, next })
    }

    /// Pages `items` (already in listing order) by offset, as upstream pages backups: the marker is the index of
    /// the page's first row (400 when it is not a number), and the next page's marker the index after its last.
    pub fn by_offset<T>(&self, default_size: usize, items: Vec<T>) -> Result<Page<T>> {
        let limit = self.limit(default_size)?;
        let offset = match &self.marker {
            None => 0,
            Some(m) => m.parse::<usize>().map_err(|_| {
                Error::bad_request(format!(
                    "The marker '{}' is not an offset.",
                    m.escape_default()
                ))
            })?,
        };
        let end = offset.saturating_add(limit);
        let next = (end < items.len()).then(|| end.to_string());
        let items = items.into_iter().skip(offset).take(limit).collect();
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &Page<u32>) -> Vec<u32> {
        p.items.clone()
    }

    #[test]
    fn key_pages_follow_the_marker_and_name_the_last_row() {
        let rows: Vec<u32> = (1..=5).collect();
        let key = |r: &u32| r.to_string();
        let first = PageRequest::new(2, None)
            .by_key(20, rows.clone(), key)
            .unwrap();
        assert_eq!(
            (keys(&first), first.next.as_deref()),
            (vec![1, 2], Some("2"))
        );
        let second = PageRequest::new(2, first.next)
            .by_key(20, rows.clone(), key)
            .unwrap();
        assert_eq!(
            (keys(&second), second.next.as_deref()),
            (vec![3, 4], Some("4"))
        );
        let last = PageRequest::new(2, second.next)
            .by_key(20, rows.clone(), key)
            .unwrap();
        assert_eq!((keys(&last), last.next), (vec![5], None));
        let exact = PageRequest::new(5, None)
            .by_key(20, rows.clone(), key)
            .unwrap();
        assert_eq!(
            exact.next, None,
            "no next page when the rows end with the page"
        );
        let e = PageRequest::new(2, Some("9".into()))
            .by_key(20, rows, key)
            .unwrap_err();
        assert_eq!(e.fault().status, 400);
        assert!(e.to_string().contains("could not be found"), "{e}");
    }

    #[test]
    fn offset_pages_count_rows_and_refuse_markers_that_are_not_numbers() {
        let rows: Vec<u32> = (0..5).collect();
        let first = PageRequest::new(2, None)
            .by_offset(20, rows.clone())
            .unwrap();
        assert_eq!(
            (keys(&first), first.next.as_deref()),
            (vec![0, 1], Some("2"))
        );
        let last = PageRequest::new(2, Some("4".into()))
            .by_offset(20, rows.clone())
            .unwrap();
        assert_eq!((keys(&last), last.next), (vec![4], None));
        let beyond = PageRequest::new(2, Some("9".into()))
            .by_offset(20, rows.clone())
            .unwrap();
        assert!(beyond.items.is_empty() && beyond.next.is_none());
        let huge = PageRequest::new(2, Some(usize::MAX.to_string()))
            .by_offset(20, rows.clone())
            .unwrap();
        assert!(huge.items.is_empty() && huge.next.is_none());
        let e = PageRequest::new(2, Some("x".into()))
            .by_offset(20, rows)
            .unwrap_err();
        assert_eq!(e.fault().status, 400);
        assert!(e.to_string().contains("not an offset"), "{e}");
    }

    #[test]
    fn limits_default_cap_and_refuse_what_is_not_a_positive_integer() {
        let q = |l: Option<&str>| PageRequest::from_query(l, None, 100);
        assert_eq!(q(None).limit(20).unwrap(), 20);
        assert_eq!(q(Some("7")).limit(20).unwrap(), 7);
        assert_eq!(
            q(Some("1000")).limit(20).unwrap(),
            100,
            "cut to the maximum"
        );
        assert_eq!(
            PageRequest::from_query(None, None, 10).limit(20).unwrap(),
            10
        );
        for bad in ["0", "-1", "x", ""] {
            let e = q(Some(bad)).limit(20).unwrap_err();
            assert_eq!(e.fault().status, 400, "{bad}");
            assert!(e.to_string().contains("not a positive integer"), "{e}");
        }
        assert_eq!(
            PageRequest::new(0, None).limit(20).unwrap(),
            1,
            "0 is taken as 1"
        );
        assert_eq!(PageRequest::default().limit(20).unwrap(), 20);
        assert_eq!(q(None).marker(), None);
        assert_eq!(
            PageRequest::from_query(None, Some("m"), 1).marker(),
            Some("m")
        );
    }
}
