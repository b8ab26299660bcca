//! What can go wrong, typed so an application can tell "the write did not happen" from "the
//! write may have happened".

/// A client error. The distinction that matters most is between [`Error::Unavailable`] (no node
/// executed the request: safe to retry) and [`Error::Indeterminate`] (a write reached a node and
/// its outcome is unknown: retrying it blindly could write the value twice, as two siblings).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was configured wrongly (a bad node address, CA file or token).
    #[error("client configuration: {0}")]
    Config(String),
    /// The node refused the request's credentials (401: no token, or one it does not know).
    #[error("{node}: unauthorized: {detail}")]
    Unauthorized { node: String, detail: String },
    /// The token is valid but its role does not allow the request (403).
    #[error("{node}: forbidden: {detail}")]
    Forbidden { node: String, detail: String },
    /// The node answered with an error that retrying will not change (a 4xx such as 400, 409
    /// for too many siblings, 413; or 507 for a full disk), as its `{"error","detail"}` body.
    #[error("{node}: {status} {error}: {detail}")]
    Api {
        node: String,
        status: u16,
        error: String,
        detail: String,
    },
    /// No node executed the request: every attempt failed before the request was sent (the node
    /// did not accept the connection) or, for a read, failed in a way a retry may pass. One line
    /// per attempt, in order.
    #[error("no node could serve the request: {}", attempts.join("; "))]
    Unavailable { attempts: Vec<String> },
    /// A write was sent and then failed in a way that does not say whether it was applied (the
    /// node answered 503, or the connection broke or timed out after the request went out). The
    /// client does not retry it: read the key to find out, then write with that read's context.
    #[error("{node}: the write's outcome is unknown: {cause}")]
    Indeterminate { node: String, cause: String },
    /// The node's reply could not be understood (not the JSON the API documents).
    #[error("{node}: unexpected reply: {detail}")]
    Protocol { node: String, detail: String },
}

impl Error {
    /// The HTTP status the node answered with, when the error is the node's answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request certainly had no effect, so sending it again is safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
