//! Range listings (`GET /v1/kv`) as an iterator over pages and entries.

use crate::client::{Request, encode_component};
use crate::error::{Error, Result};
use crate::session::Session;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::collections::VecDeque;

/// Which keys to list: `[start, end)`, only those beginning with `prefix`, from the cursor
/// `after`, `limit` per page (the node's default when `None`, at most 1,000).
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub prefix: Option<Vec<u8>>,
    /// A `next` cursor from an earlier page, passed back unchanged.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// One listed key and its live values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub values: Vec<Bytes>,
}

/// One page of a listing, and the cursor of the next (`None` on the last page).
#[derive(Clone, Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<String>,
    /// The node's JSON for the page, as it sent it.
    pub raw: serde_json::Value,
}

/// A listing in progress: [`Listing::next_page`] fetches pages in key order until the range
/// ends; [`Listing::next`] yields their entries one by one.
#[derive(Debug)]
pub struct Listing {
    session: Session,
    query: String,
    /// `None` before the first page and after the last.
    after: Option<String>,
    started: bool,
    done: bool,
    buffered: VecDeque<Entry>,
}

impl Session {
    /// Lists the keys `opts` selects, lazily, a page per request.
    pub fn list(&self, opts: ListOptions) -> Listing {
        let mut query = String::new();
        for (name, v) in [
            ("start", &opts.start),
            ("end", &opts.end),
            ("prefix", &opts.prefix),
        ] {
            if let Some(v) = v {
                query.push_str(&format!("{name}={}&", encode_component(v)));
            }
        }
        if let Some(l) = opts.limit {
            query.push_str(&format!("limit={l}&"));
        }
        Listing {
            session: self.clone(),
            query,
            after: opts.after,
            started: false,
            done: false,
            buffered: VecDeque::new(),
        }
    }
}

impl Listing {
    /// The next page, or `None` once the last page was returned.
    pub async fn next_page(&mut self) -> Result<Option<Page>> {
        if self.done {
            return Ok(None);
        }
        let mut path = format!("/v1/kv?{}", self.query);
        if let Some(c) = &self.after {
            // The cursor is URL-safe as the node issued it.
            path.push_str(&format!("after={c}"));
        }
        let reply = self.session.send(Request::get(path)).await?.success()?;
        let raw = reply.json()?;
        let bad = |detail: String| Error::Protocol {
            node: reply.node.clone(),
            detail,
        };
        let mut entries = Vec::new();
        for e in raw["entries"]
            .as_array()
            .ok_or_else(|| bad("a listing page has no entries".into()))?
        {
            let key = e["key_base64"]
                .as_str()
                .and_then(|k| B64.decode(k).ok())
                .ok_or_else(|| bad("a listed key is not base64".into()))?;
            let values = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().and_then(|v| B64.decode(v).ok()).map(Bytes::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a listed value is not base64".into()))?;
            entries.push(Entry { key, values });
        }
        let next = raw["next"].as_str().map(str::to_owned);
        if self.started && next.is_some() && next == self.after {
            return Err(bad(format!(
                "the node returned the cursor it was given ({})",
                next.unwrap_or_default()
            )));
        }
        self.started = true;
        self.done = next.is_none();
        self.after.clone_from(&next);
        Ok(Some(Page { entries, next, raw }))
    }

    /// The next entry, fetching pages as needed; `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Ok(Some(e));
            }
            match self.next_page().await? {
                Some(page) => self.buffered.extend(page.entries),
                None => return Ok(None),
            }
        }
    }

    /// Every remaining entry (for ranges known to be small).
    pub async fn collect(mut self) -> Result<Vec<Entry>> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await? {
            all.push(e);
        }
        Ok(all)
    }
}
