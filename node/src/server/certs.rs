//! `causeway certs`: a development CA and node certificates (rcgen).
//!
//! Layout of the output directory: `ca.pem` and `ca.key` (created once, reused afterwards so
//! new nodes join the same cluster), and per node address `node-HOST_PORT.pem` and
//! `node-HOST_PORT.key`. A node certificate names its address as the URI SAN
//! `causeway://HOST:PORT` (its identity as a peer) and its host as an IP or DNS SAN, and may be
//! used as both a TLS server and client certificate. Key files are written with mode 0600.

use super::config::check_address;
use super::tls::{NODE_URI_PREFIX, TlsFiles};
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// Options of `causeway certs`.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for the CA and the node certificates (the CA is reused when present)
    #[arg(long, default_value = "causeway-data/tls")]
    pub out: PathBuf,
    /// Node addresses (host:port) to issue certificates for
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Runs `causeway certs`: prints the files it wrote and the flags that use them.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    for node in &args.nodes {
        let files = issue(&args.out, node)?;
        println!(
            "{node}: --tls-ca {} --tls-cert {} --tls-key {}",
            files.ca.display(),
            files.cert.display(),
            files.key.display()
        );
    }
    Ok(())
}

/// The files of `node`'s certificate under `dir`.
pub fn node_files(dir: &Path, node: &str) -> TlsFiles {
    let stem = format!("node-{}", node.replace([':', '[', ']'], "_"));
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        client_cert: None,
        mesh_ca: Vec::new(),
    }
}

/// Writes a secret file readable only by its owner.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Causeway cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// The CA under `dir`, created when missing.
fn load_or_create_ca(dir: &Path) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)
            .with_context(|| format!("parsing {}", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(&cert_path)?)
            .with_context(|| format!("parsing {}", cert_path.display()))?;
        // Re-signing the same name with the same key yields an equivalent issuer.
        return Ok((params.self_signed(&key)?, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    std::fs::write(&cert_path, cert.pem())?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert, key))
}

/// Issues a certificate for `node` signed by the CA under `dir` (created when missing) and
/// returns the files a node started with it uses.
pub fn issue(dir: &Path, node: &str) -> anyhow::Result<TlsFiles> {
    check_address(node)?;
    let (ca, ca_key) = load_or_create_ca(dir)?;
    let host = node.rsplit_once(':').map_or(node, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut p = CertificateParams::new(vec![host.to_owned()])?;
    p.subject_alt_names.push(SanType::URI(
        format!("{NODE_URI_PREFIX}{node}").as_str().try_into()?,
    ));
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("causeway node {node}"));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    let files = node_files(dir, node);
    std::fs::write(&files.cert, cert.pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}
