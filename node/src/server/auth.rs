//! Client authentication: bearer tokens with roles, kept hashed in a tokens file.
//!
//! A token is `cw_` followed by 32 random bytes (base64url). The tokens file (JSON) holds, per
//! token, a name, a role and the SHA-256 of the token — never the token itself, which
//! `causeway tokens add` prints once. A presented token is hashed and compared with every stored
//! hash in constant time. The file is re-read when it changes, so `tokens add`/`remove` take
//! effect on a running node within [`RELOAD_EVERY`].
//!
//! Roles are ordered: `read` < `write` < `admin`; [`required_role`] maps a request to the least
//! role that may make it. `/healthz`, `/readyz` and the UI page itself are open (the page's API
//! calls carry the token the user typed). Another node presenting its cluster certificate over
//! HTTPS (see [`super::tls::NODE_HTTP_ALPN`]) has the `read` role.

use super::input::ApiError;
use super::transport::ConnInfo;
use anyhow::{Context, bail};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

/// How often a node checks its tokens file for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
const TOKEN_PREFIX: &str = "cw_";

/// What a token lets its holder do; each role includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GET of keys, listing, cluster status, metrics
    Read,
    /// + PUT and DELETE of keys (native and compatibility API)
    Write,
    /// + view changes, joins, anti-entropy pulls and every /v1/admin route
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One entry of the tokens file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, lowercase hex.
    pub sha256: String,
}

/// The tokens file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub tokens: Vec<TokenEntry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl TokensFile {
    pub fn read(path: &Path) -> anyhow::Result<TokensFile> {
        if !path.exists() {
            return Ok(TokensFile::default());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokens file {}", path.display()))?;
        let f: TokensFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing tokens file {}", path.display()))?;
        for t in &f.tokens {
            if unhex(&t.sha256).is_none() {
                bail!(
                    "tokens file {}: {:?} has no valid sha256",
                    path.display(),
                    t.name
                );
            }
        }
        Ok(f)
    }

    /// Writes the file atomically (a temporary file renamed over it), mode 0600.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Adds a new random token and returns it (the only time it is ever shown).
    pub fn add(&mut self, name: &str, role: Role) -> anyhow::Result<String> {
        if self.tokens.iter().any(|t| t.name == name) {
            bail!("a token named {name:?} exists already; remove it first");
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let token = format!("{TOKEN_PREFIX}{}", B64URL.encode(raw));
        self.tokens.push(TokenEntry {
            name: name.to_owned(),
            role,
            sha256: hex(&hash(&token)),
        });
        Ok(token)
    }
}

/// The stored hashes and their roles.
type Hashes = Arc<Vec<([u8; 32], Role)>>;

/// The tokens a node accepts, reloaded when the file changes.
pub struct Tokens {
    path: PathBuf,
    /// The file's modification time when it was read, and its hashes.
    state: RwLock<(Option<SystemTime>, Hashes)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Tokens {
    /// Loads `path` (which must parse; it may be missing: then no token is valid yet).
    pub fn load(path: &Path) -> anyhow::Result<Arc<Tokens>> {
        let t = Tokens {
            path: path.to_owned(),
            state: RwLock::new((None, Arc::new(Vec::new()))),
        };
        t.reload()?;
        Ok(Arc::new(t))
    }

    fn reload(&self) -> anyhow::Result<()> {
        let stamp = modified(&self.path);
        let f = TokensFile::read(&self.path)?;
        let entries = f
            .tokens
            .iter()
            .filter_map(|t| Some((unhex(&t.sha256)?, t.role)))
            .collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (stamp, Arc::new(entries));
        Ok(())
    }

    /// Re-reads the file every [`RELOAD_EVERY`] when its modification time changed; a file that
    /// no longer parses keeps the previous tokens (and is logged).
    pub fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let seen = self.state.read().unwrap_or_else(|e| e.into_inner()).0;
                if modified(&self.path) != seen {
                    match self.reload() {
                        Ok(()) => tracing::info!(file = %self.path.display(), "reloaded tokens"),
                        Err(e) => tracing::warn!("keeping the previous tokens: {e:#}"),
                    }
                }
            }
        });
    }

    /// The role of `token`, if it is valid. Every stored hash is compared, in constant time.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let h = hash(token);
        let entries = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        let mut found = None;
        for (stored, role) in entries.iter() {
            if bool::from(stored.ct_eq(&h)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// The least role a request needs, `None` for the open routes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if matches!(path, "/healthz" | "/readyz" | "/ui" | "/ui/") {
        return None;
    }
    let admin = path.starts_with("/v1/admin")
        || path.starts_with("/v1/cluster/")
        || path == "/kv-store/view-change";
    if admin {
        return Some(Role::Admin);
    }
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST && path == "/v1/context/merge");
    Some(if reads { Role::Read } else { Role::Write })
}

/// Checks a request's credentials against the role it needs: `authorization` is the raw value
/// of its `Authorization` header (HTTP) or `authorization` metadata (gRPC), `from_node` whether
/// it came over a connection that presented a cluster certificate (such a peer has the `read`
/// role), `what` names the request in the refusal. A refusal is a 401 (no or unknown token) or
/// a 403 (a token of a lesser role), counted in `causeway_auth_rejected_total`.
pub fn authorize(
    tokens: &Tokens,
    authorization: Option<&[u8]>,
    from_node: bool,
    needed: Role,
    what: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let unauthenticated = |detail: &str| {
        metrics::counter!("causeway_auth_rejected_total", "reason" => "unauthenticated")
            .increment(1);
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    };
    let role = if from_node {
        Some(Role::Read)
    } else {
        let Some(value) = authorization else {
            return Err(unauthenticated(
                "this node requires a bearer token (Authorization: Bearer …)",
            ));
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(unauthenticated(
                "the Authorization header must be `Bearer <token>`",
            ));
        };
        tokens.role_of(token)
    };
    match role {
        None => Err(unauthenticated("the token is not valid on this node")),
        Some(r) if r < needed => {
            metrics::counter!("causeway_auth_rejected_total", "reason" => "forbidden").increment(1);
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} needs the {} role; this token has {}",
                    what(),
                    needed.name(),
                    r.name()
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// The middleware: checks the request's token (or node certificate) against its route's role.
pub async fn require(
    State(tokens): State<Arc<Tokens>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
    next: Next,
) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let authorization = req.headers().get(header::AUTHORIZATION);
    let what = || format!("{} {}", req.method(), req.uri().path());
    match authorize(
        &tokens,
        authorization.map(HeaderValue::as_bytes),
        conn.node.is_some(),
        needed,
        what,
    ) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let unauthenticated = e.status == StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthenticated {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"causeway\""),
                );
            }
            resp
        }
    }
}

/// `causeway tokens …`.
#[derive(clap::Args, Debug, Clone)]
pub struct TokensArgs {
    /// The tokens file nodes read (`serve --tokens-file`)
    #[arg(
        long,
        env = "CAUSEWAY_TOKENS_FILE",
        default_value = "causeway-data/tokens.json"
    )]
    pub tokens_file: PathBuf,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum TokensCommand {
    /// Create a token with a role and print it (it is stored only as a hash)
    Add {
        #[arg(long, value_enum)]
        role: Role,
        /// A name to list and remove it by [default: the role and a number]
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tokens' names and roles
    List,
    /// Remove a token by name
    Remove { name: String },
}

/// Runs `causeway tokens …`.
pub fn run(args: &TokensArgs) -> anyhow::Result<()> {
    let path = &args.tokens_file;
    let mut file = TokensFile::read(path)?;
    match &args.command {
        TokensCommand::Add { role, name } => {
            let name = name.clone().unwrap_or_else(|| {
                (1..)
                    .map(|i| format!("{}-{i}", role.name()))
                    .find(|n| !file.tokens.iter().any(|t| t.name == *n))
                    .unwrap_or_default()
            });
            let token = file.add(&name, *role)?;
            file.write(path)?;
            eprintln!(
                "added {name:?} ({}) to {}; the token is shown only now:",
                role.name(),
                path.display()
            );
            println!("{token}");
        }
        TokensCommand::List => {
            for t in &file.tokens {
                println!("{}\t{}", t.name, t.role.name());
            }
        }
        TokensCommand::Remove { name } => {
            let before = file.tokens.len();
            file.tokens.retain(|t| t.name != *name);
            if file.tokens.len() == before {
                bail!("no token named {name:?} in {}", path.display());
            }
            file.write(path)?;
            eprintln!("removed {name:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_routes() {
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/ui/"), None);
        assert_eq!(required_role(&Method::GET, "/v1/kv/a"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(required_role(&Method::PUT, "/v1/kv/a"), Some(Role::Write));
        assert_eq!(
            required_role(&Method::DELETE, "/kv-store/keys/a"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::POST, "/v1/context/merge"),
            Some(Role::Read)
        );
        for (m, p) in [
            (Method::POST, "/v1/cluster/join"),
            (Method::PUT, "/v1/cluster/view"),
            (Method::POST, "/v1/admin/aae/pull"),
            (Method::POST, "/v1/admin/backup"),
            (Method::PUT, "/kv-store/view-change"),
        ] {
            assert_eq!(required_role(&m, p), Some(Role::Admin), "{m} {p}");
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_checked() {
        let path =
            std::env::temp_dir().join(format!("causeway-tokens-{}.json", std::process::id()));
        let mut f = TokensFile::default();
        let admin = f.add("ops", Role::Admin).expect("add");
        let reader = f.add("dash", Role::Read).expect("add");
        assert!(f.add("ops", Role::Read).is_err(), "names are unique");
        f.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&admin) && !text.contains(&reader));
        let tokens = Tokens::load(&path).expect("load");
        assert_eq!(tokens.role_of(&admin), Some(Role::Admin));
        assert_eq!(tokens.role_of(&reader), Some(Role::Read));
        assert_eq!(tokens.role_of("cw_nope"), None);
        assert_eq!(tokens.role_of(""), None);
        let _ = std::fs::remove_file(path);
    }
}
