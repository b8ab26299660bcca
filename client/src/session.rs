//! A session: the causal context one application thread of work carries, so that it reads its
//! own writes and never sees the store go back in time, whichever node serves it.
//!
//! Every reply carries a token naming the caller's context joined with what the serving replica
//! knows of the key (a superset of the token the request sent). So when a reply comes back and
//! no other reply has updated the session since its request was sent, the reply's token simply
//! *replaces* the session's: no merge is needed. When requests of one session overlap (clones
//! of a session used from several tasks), a reply may not include what another one brought;
//! such tokens are kept aside and joined with `POST /v1/context/merge` before the next request
//! is sent. The join happens on a node rather than here so that this crate does not depend on
//! the store's token format (the `causeway` package, whose CLI is built on this crate, owns it).

use crate::client::{CONTEXT_HEADER, Client, Reply, Request, Retry};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// What a session knows: its token, a generation bumped on every change, and tokens received
/// out of order that still have to be joined into it.
#[derive(Debug, Default)]
struct Context {
    token: String,
    generation: u64,
    pending: Vec<String>,
}

/// A causal session over a [`Client`]. Clones share one context.
#[derive(Clone, Debug)]
pub struct Session {
    client: Client,
    ctx: Arc<Mutex<Context>>,
}

/// The session's state when a request went out.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub token: String,
    generation: u64,
}

impl Session {
    /// A session with an empty context.
    pub fn new(client: Client) -> Session {
        Session::with_context(client, "")
    }

    /// A session continuing from `token` (one saved by [`Session::context`], or received by
    /// another program).
    pub fn with_context(client: Client, token: &str) -> Session {
        Session {
            client,
            ctx: Arc::new(Mutex::new(Context {
                token: token.trim().to_owned(),
                ..Context::default()
            })),
        }
    }

    /// The client this session sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Context> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's token, every received token joined into it.
    pub async fn context(&self) -> Result<String> {
        Ok(self.prepare().await?.token)
    }

    /// Adds another session's (or program's) causal past to this one: later requests see
    /// everything either had seen.
    pub fn absorb(&self, token: &str) {
        let token = token.trim();
        if !token.is_empty() {
            self.lock().pending.push(token.to_owned());
        }
    }

    /// Joins the pending tokens into the session's (one merge request, only if there are any)
    /// and returns the state to send a request with.
    pub(crate) async fn prepare(&self) -> Result<Sent> {
        loop {
            let (token, generation, pending) = {
                let mut c = self.lock();
                if c.pending.is_empty() {
                    return Ok(Sent {
                        token: c.token.clone(),
                        generation: c.generation,
                    });
                }
                (
                    c.token.clone(),
                    c.generation,
                    std::mem::take(&mut c.pending),
                )
            };
            let mut all = pending.clone();
            all.push(token);
            let merged = match merge(&self.client, &all).await {
                Ok(m) => m,
                Err(e) => {
                    self.lock().pending.extend(pending);
                    return Err(e);
                }
            };
            let mut c = self.lock();
            if c.generation == generation {
                c.token = merged;
                c.generation += 1;
            } else {
                // A reply replaced the token meanwhile; what was merged still has to join it.
                c.pending.push(merged);
            }
        }
    }

    /// Takes in the token of `reply` to a request sent as `sent`.
    pub(crate) fn observe(&self, sent: &Sent, reply: &Reply) {
        let Some(token) = reply.context().map(str::trim).filter(|t| !t.is_empty()) else {
            return;
        };
        let mut c = self.lock();
        if c.generation == sent.generation {
            c.token = token.to_owned();
            c.generation += 1;
        } else if token != c.token {
            c.pending.push(token.to_owned());
        }
    }

    /// Sends any request with the session's context and takes in the reply's (the typed calls
    /// are built on it; a caller that wants the raw reply, such as a load generator reading
    /// values without their JSON form, uses it directly).
    pub async fn send(&self, req: Request) -> Result<Reply> {
        let sent = self.prepare().await?;
        let req = if sent.token.is_empty() {
            req
        } else {
            req.header(CONTEXT_HEADER, &sent.token)?
        };
        let reply = self.client.send(&req).await?;
        self.observe(&sent, &reply);
        Ok(reply)
    }
}

/// `POST /v1/context/merge`: the token naming the union of `tokens`' causal pasts.
pub async fn merge(client: &Client, tokens: &[String]) -> Result<String> {
    let req = Request::new(reqwest::Method::POST, "/v1/context/merge", Retry::Safe)
        .json(&serde_json::json!({ "contexts": tokens }));
    let reply = client.send(&req).await?.success()?;
    let v = reply.json()?;
    v["context"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol {
            node: reply.node.clone(),
            detail: "the merge reply has no context".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(token: &str) -> Reply {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CONTEXT_HEADER, token.parse().expect("a header value"));
        Reply {
            node: "http://n:1".into(),
            status: 204,
            headers,
            body: bytes::Bytes::new(),
        }
    }

    #[tokio::test]
    async fn a_reply_replaces_the_token_unless_another_reply_came_first() {
        let client = Client::builder()
            .node("127.0.0.1:1")
            .build()
            .expect("client");
        let s = Session::with_context(client, "t0");
        // Two requests go out with the same token; their replies come back in turn.
        let first = s.prepare().await.expect("no merge needed");
        let second = s.prepare().await.expect("no merge needed");
        assert_eq!(first.token, "t0");
        s.observe(&first, &reply("t1"));
        assert_eq!(
            s.lock().token,
            "t1",
            "the first reply extends what was sent: replace"
        );
        s.observe(&second, &reply("t2"));
        let c = s.lock();
        assert_eq!(c.token, "t1");
        assert_eq!(
            c.pending,
            vec!["t2".to_owned()],
            "the second reply does not include the first one's: it waits to be merged"
        );
    }
}
