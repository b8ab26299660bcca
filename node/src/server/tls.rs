//! TLS material and configurations (rustls, ring provider).
//!
//! A node holds a certificate signed by the cluster's CA whose subject alternative names include
//! the URI `causeway://HOST:PORT` for each address it serves as (its member address), plus the
//! host as an IP or DNS name for ordinary hostname checks. Peers authenticate each other with it
//! in both directions (mutual TLS): a peer's identity is the set of such URIs in the certificate
//! it presented, never what its frames claim.
//!
//! One port serves three kinds of TLS connections, told apart by ALPN:
//! - [`PEER_ALPN`]: a peer link; the client must present a certificate of the cluster CA;
//! - [`NODE_HTTP_ALPN`]: HTTP from another node (status reports), also with a node certificate;
//! - anything else (`http/1.1`, none): HTTPS from a client, which authenticates with a token.
//!
//! Client certificates are optional at the handshake (HTTPS clients have none), but one that is
//! presented must chain to the cluster CA (or a `--mesh-ca`) or the handshake fails.
//!
//! Mesh CAs (`--mesh-ca`, docs/mesh.md) are extra trust anchors of peer links in both
//! directions. A peer whose certificate chains only to a mesh CA is a node of another cluster:
//! its links carry mesh messages only, and its node HTTP is served as an anonymous client's
//! ([`NodeTls::client_of_cluster`], [`NodeTls::server_of_cluster`]). Node HTTP this node makes
//! trusts the cluster CA alone.

use crate::core::NodeId;
use anyhow::{Context, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN of a peer link.
pub const PEER_ALPN: &[u8] = b"causeway-peer";
/// ALPN of HTTP requests one node makes to another.
pub const NODE_HTTP_ALPN: &[u8] = b"causeway-node-http";
/// Prefix of the URI SAN naming a node address in its certificate.
pub const NODE_URI_PREFIX: &str = "causeway://";

/// Where a node's TLS material lives (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate: the only issuer of peers this node trusts.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A separate certificate and key for HTTPS clients (default: the node's).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// CA certificates of other clusters' nodes (`--mesh-ca`): a peer authenticated through
    /// one of them, and not through `ca`, may exchange mesh messages only.
    pub mesh_ca: Vec<PathBuf>,
}

/// The loaded TLS configurations of a node.
pub struct NodeTls {
    /// Accepts peer links, node HTTP and client HTTPS on the listening port.
    pub server: Arc<rustls::ServerConfig>,
    /// Dials peer links with this node's certificate.
    pub peer_client: Arc<rustls::ClientConfig>,
    /// Makes HTTP requests to other nodes with this node's certificate.
    pub node_http_client: rustls::ClientConfig,
    /// With `--mesh-ca`: verifiers trusting the cluster CA alone, which tell a peer of this
    /// cluster from one that only a mesh CA vouches for. `None` without a mesh CA: then every
    /// peer the handshake accepted is of this cluster.
    cluster_only: Option<ClusterOnly>,
}

/// Verifiers that trust only the cluster CA.
#[derive(Clone)]
struct ClusterOnly {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process's default rustls provider (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a PEM private key from {}", path.display()))
}

/// Trust anchors: every certificate in the CA file.
pub fn roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    Ok(roots)
}

/// The node addresses a certificate vouches for (its `causeway://` URI SANs).
pub fn identities(cert: &CertificateDer<'_>) -> Vec<NodeId> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(NODE_URI_PREFIX),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

/// Presents the node certificate to nodes (peer and node-HTTP ALPN) and the client certificate
/// to everyone else.
#[derive(Debug)]
struct ByAlpn {
    node: Arc<CertifiedKey>,
    client: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByAlpn {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let from_node = hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == PEER_ALPN || p == NODE_HTTP_ALPN));
        Some(if from_node {
            self.node.clone()
        } else {
            self.client.clone()
        })
    }
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = read_certs(cert)?;
    let key = provider()
        .key_provider
        .load_private_key(read_key(key)?)
        .with_context(|| format!("{} is not a supported private key", key.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

impl NodeTls {
    /// Loads the files and checks that the node certificate names `me` (its member address).
    pub fn load(files: &TlsFiles, me: &str) -> anyhow::Result<NodeTls> {
        install_provider();
        let cluster_roots = Arc::new(roots(&files.ca)?);
        let mut all = (*cluster_roots).clone();
        for ca in &files.mesh_ca {
            for c in read_certs(ca)? {
                all.add(c).with_context(|| {
                    format!("{} is not a usable mesh CA certificate", ca.display())
                })?;
            }
        }
        let roots = Arc::new(all);
        let cluster_only = match files.mesh_ca.is_empty() {
            true => None,
            false => Some(ClusterOnly {
                clients: WebPkiClientVerifier::builder_with_provider(
                    cluster_roots.clone(),
                    provider(),
                )
                .build()
                .context("building the cluster client verifier")?,
                servers: WebPkiServerVerifier::builder_with_provider(
                    cluster_roots.clone(),
                    provider(),
                )
                .build()
                .context("building the cluster server verifier")?,
            }),
        };
        let node_chain = read_certs(&files.cert)?;
        let ids = identities(&node_chain[0]);
        if !ids.iter().any(|i| i == me) {
            bail!(
                "the node certificate {} names {:?}, not this node's address {me} (a SAN \
                 URI {NODE_URI_PREFIX}{me}); generate one with `causeway certs {me}`",
                files.cert.display(),
                ids
            );
        }
        let node = certified_key(&files.cert, &files.key)?;
        let client = match &files.client_cert {
            Some((c, k)) => certified_key(c, k)?,
            None => node.clone(),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .context("building the client-certificate verifier")?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(ByAlpn { node, client }));
        server.alpn_protocols = vec![
            PEER_ALPN.to_vec(),
            NODE_HTTP_ALPN.to_vec(),
            b"http/1.1".to_vec(),
        ];
        let client_config = |alpn: &[u8],
                             roots: &Arc<rustls::RootCertStore>|
         -> anyhow::Result<rustls::ClientConfig> {
            let mut c = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(node_chain.clone(), read_key(&files.key)?)
                .context("the node certificate and key do not match")?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(c)
        };
        Ok(NodeTls {
            server: Arc::new(server),
            peer_client: Arc::new(client_config(PEER_ALPN, &roots)?),
            node_http_client: client_config(NODE_HTTP_ALPN, &cluster_roots)?,
            cluster_only,
        })
    }

    /// The same configurations with a server offering only the ALPN protocols `alpn`.
    pub fn offering(&self, alpn: Vec<Vec<u8>>) -> NodeTls {
        let mut server = (*self.server).clone();
        server.alpn_protocols = alpn;
        NodeTls {
            server: Arc::new(server),
            peer_client: self.peer_client.clone(),
            node_http_client: self.node_http_client.clone(),
            cluster_only: self.cluster_only.clone(),
        }
    }

    /// Whether a client certificate chain the handshake accepted (`chain[0]` the peer's own)
    /// chains to the cluster CA, not merely to a mesh CA.
    pub fn client_of_cluster(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some(only) = &self.cluster_only else {
            return true;
        };
        chain.split_first().is_some_and(|(ee, rest)| {
            only.clients
                .verify_client_cert(ee, rest, UnixTime::now())
                .is_ok()
        })
    }

    /// Whether the certificate chain a dialled peer presented for `name` chains to the
    /// cluster CA, not merely to a mesh CA.
    pub fn server_of_cluster(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> bool {
        let Some(only) = &self.cluster_only else {
            return true;
        };
        chain.split_first().is_some_and(|(ee, rest)| {
            only.servers
                .verify_server_cert(ee, rest, name, &[], UnixTime::now())
                .is_ok()
        })
    }
}

/// The TLS server name to check when dialing `addr` (`host:port`).
pub fn server_name(addr: &str) -> anyhow::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).with_context(|| format!("{addr} has no valid host name"))
}
