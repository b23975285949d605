//! The campus CA and the certificates of the cloud and of each box, and the TLS
//! configurations built from them (rustls with ring, TLS 1.3 only, mutual auth).
//!
//! A box's node id is the certificate's only DNS name, `<node id>.node.canteen`;
//! the cloud compares it with the id the box claims in `Hello`.

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

pub const NODE_SUFFIX: &str = ".node.canteen";
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CLOUD_CERT: &str = "cloud.pem";
pub const CLOUD_KEY: &str = "cloud.key";
/// A box's HTTPS certificate for its staff listener, and its key.
pub const HTTPS_CERT: &str = "https.pem";
pub const HTTPS_KEY: &str = "https.key";
/// The name boxes expect on the cloud's certificate unless told otherwise.
pub const DEFAULT_CLOUD_NAME: &str = "cloud.canteen";
/// How long a certificate issued to a box is valid unless told otherwise: a stolen
/// box stops authenticating when its certificate ends (renew by enrolling again).
pub const BOX_CERT_VALID: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node id: 1 to 63 lowercase letters, digits or dashes (it becomes a DNS label).
pub fn check_node_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id.len() > 63
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("node id {id:?} must be 1 to 63 lowercase letters, digits or dashes");
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Creates the campus CA in `dir` (refusing to overwrite one) and the cloud's
/// certificate for `cloud_name`.
pub fn ca_init(dir: &Path, cloud_name: &str) -> anyhow::Result<()> {
    make_ca(dir, "canteen campus CA")?;
    issue(dir, cloud_name, &dir.join(CLOUD_CERT), &dir.join(CLOUD_KEY))
}

fn make_ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    if dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA; refusing to replace it",
            dir.display()
        );
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join(CA_CERT), cert.pem())?;
    write_private(&dir.join(CA_KEY), &key.serialize_pem())?;
    Ok(())
}

/// Checks the names an HTTPS certificate will carry: host names or IP addresses, at
/// least one.
fn check_https_names(names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!(
            "name the box's address for the staff app: --https-name box.canteen.local (or its IP)"
        );
    }
    for n in names {
        let ok = n.parse::<std::net::IpAddr>().is_ok()
            || (!n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !ok {
            bail!("{n:?} is neither a host name nor an IP address");
        }
    }
    Ok(())
}

/// Issues, with the CA in `ca_dir`, a TLS server certificate for a box's staff HTTPS
/// listener naming each of `names` (host names or IP addresses, as the staff app
/// reaches the box).
pub fn issue_https(
    ca_dir: &Path,
    names: &[String],
    cert_out: &Path,
    key_out: &Path,
) -> anyhow::Result<()> {
    check_https_names(names)?;
    issue_for(ca_dir, names, true, Some(BOX_CERT_VALID), cert_out, key_out)
}

/// For a box without a cloud: a CA of its own in `dir` and the staff HTTPS certificate
/// it signs (`https.pem`, `https.key`). Give `ca.pem` to the staff app.
pub fn local_ca(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    check_https_names(names)?;
    make_ca(dir, "canteen box CA")?;
    issue_https(dir, names, &dir.join(HTTPS_CERT), &dir.join(HTTPS_KEY))
}

fn issue(ca_dir: &Path, dns_name: &str, cert_out: &Path, key_out: &Path) -> anyhow::Result<()> {
    issue_for(
        ca_dir,
        &[dns_name.to_owned()],
        false,
        None,
        cert_out,
        key_out,
    )
}

fn issue_for(
    ca_dir: &Path,
    names: &[String],
    server_only: bool,
    valid_for: Option<std::time::Duration>,
    cert_out: &Path,
    key_out: &Path,
) -> anyhow::Result<()> {
    let dns_name = names.first().map_or("", String::as_str);
    let ca_key_pem = std::fs::read_to_string(ca_dir.join(CA_KEY)).context("reading the CA key")?;
    let ca_cert_pem =
        std::fs::read_to_string(ca_dir.join(CA_CERT)).context("reading the CA certificate")?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, dns_name);
    if server_only {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }
    // Issued now (a revocation by node id covers every certificate issued before it),
    // valid for `valid_for`.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(1);
    if let Some(valid) = valid_for {
        params.not_after = now
            + time::Duration::seconds(
                i64::try_from(valid.as_secs())
                    .unwrap_or(i64::MAX / 2)
                    .min(100 * 365 * 86_400),
            );
    }
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(cert_out, cert.pem())?;
    write_private(key_out, &key.serialize_pem())?;
    Ok(())
}

/// Writes `<node id>.pem`, `<node id>.key` and a copy of the CA certificate into
/// `out_dir`: everything a box needs, made offline. With `https_names`, also the staff
/// HTTPS certificate `<node id>-https.pem` / `-https.key` for those names.
pub fn enroll(
    ca_dir: &Path,
    node_id: &str,
    out_dir: &Path,
    https_names: &[String],
) -> anyhow::Result<()> {
    enroll_for(ca_dir, node_id, out_dir, https_names, BOX_CERT_VALID)
}

/// [`enroll`] with certificates valid for `valid_for`.
pub fn enroll_for(
    ca_dir: &Path,
    node_id: &str,
    out_dir: &Path,
    https_names: &[String],
    valid_for: std::time::Duration,
) -> anyhow::Result<()> {
    check_node_id(node_id)?;
    if !https_names.is_empty() {
        check_https_names(https_names)?;
    }
    std::fs::create_dir_all(out_dir)?;
    if !https_names.is_empty() {
        issue_https(
            ca_dir,
            https_names,
            &out_dir.join(format!("{node_id}-https.pem")),
            &out_dir.join(format!("{node_id}-https.key")),
        )?;
    }
    issue_for(
        ca_dir,
        &[format!("{node_id}{NODE_SUFFIX}")],
        false,
        Some(valid_for),
        &out_dir.join(format!("{node_id}.pem")),
        &out_dir.join(format!("{node_id}.key")),
    )?;
    std::fs::copy(ca_dir.join(CA_CERT), out_dir.join(CA_CERT))?;
    Ok(())
}

/// Renews the certificates of a box enrolled in `dir` (as `enroll` wrote it): a new
/// node certificate valid for `valid_for` from now and, when the box has one, a new
/// staff HTTPS certificate for the names the old one carries. Returns those names.
/// The box picks the new files up at its next start.
pub fn renew(
    ca_dir: &Path,
    node_id: &str,
    dir: &Path,
    valid_for: std::time::Duration,
) -> anyhow::Result<Vec<String>> {
    check_node_id(node_id)?;
    let node_cert = dir.join(format!("{node_id}.pem"));
    let old = certs(&node_cert)
        .with_context(|| format!("{} holds no enrolment of {node_id}", dir.display()))?;
    if node_id_of(&old[0]).as_deref() != Some(node_id) {
        bail!("{} is not a certificate of {node_id}", node_cert.display());
    }
    let https = dir.join(format!("{node_id}-https.pem"));
    let names = if https.exists() {
        san_names(&certs(&https)?[0])
    } else {
        Vec::new()
    };
    enroll_for(ca_dir, node_id, dir, &names, valid_for)?;
    Ok(names)
}

/// The DNS names and IP addresses a certificate is for.
fn san_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the key {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    Ok(roots)
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // quinn's keep-alive is off by default; without it an idle link is dropped
    // silently by NATs and after the 30 s idle timeout.
    t.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    t.max_idle_timeout(Some(
        std::time::Duration::from_secs(20)
            .try_into()
            .expect("valid idle timeout"),
    ));
    t.max_concurrent_bidi_streams(16u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

/// The cloud's QUIC server configuration: its certificate, and only boxes with a
/// certificate from the campus CA.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key_path: &Path,
) -> anyhow::Result<quinn::ServerConfig> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)?;
    tls.alpn_protocols = vec![crate::proto::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// A box's QUIC client configuration: trusts the campus CA, presents its own
/// certificate.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key_path: &Path,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert)?, key(key_path)?)?;
    tls.alpn_protocols = vec![crate::proto::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The TLS server configuration of a box's staff HTTPS listener (TLS 1.2 and 1.3,
/// HTTP/1.1).
pub fn https_server_config(cert: &Path, key_path: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key(key_path)?)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The node id a verified peer certificate names, if it names one.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => {
            dns.strip_suffix(NODE_SUFFIX).map(str::to_owned)
        }
        _ => None,
    })
}

/// When a verified peer certificate was issued (its not-before, Unix seconds).
pub fn issued_at(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_before.timestamp())
}

/// When the connection's client certificate was issued.
pub fn peer_issued_at(connection: &quinn::Connection) -> Option<i64> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(issued_at)
}

/// The node id of the connection's client certificate.
pub fn peer_node_id(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(node_id_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolled_certificates_name_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        ca_init(&ca, DEFAULT_CLOUD_NAME).unwrap();
        assert!(
            ca_init(&ca, DEFAULT_CLOUD_NAME).is_err(),
            "a CA is never overwritten"
        );
        let out = dir.path().join("box");
        enroll(
            &ca,
            "canteen-north",
            &out,
            &["north.canteen.local".into(), "10.0.0.21".into()],
        )
        .unwrap();
        let cert = certs(&out.join("canteen-north.pem")).unwrap();
        assert_eq!(node_id_of(&cert[0]).as_deref(), Some("canteen-north"));
        assert!(enroll(&ca, "Bad Id", &out, &[]).is_err());
        assert!(enroll(&ca, "canteen-south", &out, &["not a name".into()]).is_err());
        https_server_config(
            &out.join("canteen-north-https.pem"),
            &out.join("canteen-north-https.key"),
        )
        .unwrap();
        let https = certs(&out.join("canteen-north-https.pem")).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(https[0].as_ref()).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            ["DNSName(north.canteen.local)", "IPAddress(0a:00:00:15)"],
            "the host name and 10.0.0.21"
        );
        server_config(&ca.join(CA_CERT), &ca.join(CLOUD_CERT), &ca.join(CLOUD_KEY)).unwrap();
        client_config(
            &out.join(CA_CERT),
            &out.join("canteen-north.pem"),
            &out.join("canteen-north.key"),
        )
        .unwrap();
    }

    /// Renewal re-issues the node certificate with a new validity and the staff
    /// HTTPS certificate for the same names, in place.
    #[test]
    fn renewal_keeps_the_names_and_moves_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        ca_init(&ca, DEFAULT_CLOUD_NAME).unwrap();
        let out = dir.path().join("box");
        let day = std::time::Duration::from_secs(86_400);
        let names = vec!["north.canteen.local".to_owned(), "10.0.0.21".to_owned()];
        enroll_for(&ca, "canteen-north", &out, &names, day).unwrap();
        let not_after = |path: &Path| {
            let c = certs(path).unwrap();
            let (_, parsed) = x509_parser::parse_x509_certificate(c[0].as_ref()).unwrap();
            parsed.validity().not_after.timestamp()
        };
        let before = not_after(&out.join("canteen-north.pem"));
        let renewed = renew(&ca, "canteen-north", &out, day * 365).unwrap();
        assert_eq!(renewed, names);
        let after = not_after(&out.join("canteen-north.pem"));
        assert!(after - before > 360 * 86_400, "{before} → {after}");
        let https = certs(&out.join("canteen-north-https.pem")).unwrap();
        assert_eq!(san_names(&https[0]), names);
        let node = certs(&out.join("canteen-north.pem")).unwrap();
        assert_eq!(node_id_of(&node[0]).as_deref(), Some("canteen-north"));
        // Nothing to renew where nothing was enrolled, or for another box.
        assert!(renew(&ca, "canteen-south", &out, day).is_err());
        assert!(renew(&ca, "canteen-north", &dir.path().join("none"), day).is_err());
    }
}
