//! `fjord-jepsen run --tls`: two CAs made with rcgen into the run's directory
//! (`<out>/tls/`), the clients' and the nodes' own (`--peer-tls-*`, the setting
//! docs/operations.md recommends), a node certificate from each, the nodes started with TLS
//! on, the clients trusting the clients' CA; and the endpoint of the probes that dial one
//! node directly ([`endpoint`]), with the same trust.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A run's TLS files.
#[derive(Debug, Clone)]
pub struct RunTls {
    /// The clients' CA, and the node certificate the client port serves.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The nodes' own CA, and the node certificate of the peer port and the outbound
    /// peer connections.
    pub peer_ca: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
}

/// A CA named `cn`.
fn new_ca(cn: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// Writes `ca`'s certificate to `ca_path`, and a node certificate it issues for `names` to
/// `cert` and `key`.
fn write_node(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[String],
    (ca_path, cert, key): (&Path, &Path, &Path),
) -> Result<()> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "fjord-jepsen node");
    params.use_authority_key_identifier_extension = true;
    let pair = KeyPair::generate()?;
    let issued = params.signed_by(&pair, &**ca)?;
    std::fs::write(ca_path, ca.pem())?;
    std::fs::write(cert, issued.pem())?;
    std::fs::write(key, pair.serialize_pem())?;
    Ok(())
}

/// Makes the two CAs and their node certificates, each naming every address a node of
/// either network has (`10.77.0.<id>`, `127.0.0.<10+id>`, for ids up to `max_id`), in `dir`.
pub fn generate(dir: &Path, max_id: u64) -> Result<RunTls> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    for id in 1..=max_id {
        names.push(crate::net::ip(id));
        names.push(crate::proxy::node_ip(id).to_string());
    }
    let files = RunTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
        peer_ca: dir.join("peer-ca.pem"),
        peer_cert: dir.join("node-peer.pem"),
        peer_key: dir.join("node-peer.key"),
    };
    write_node(
        &new_ca("fjord-jepsen client CA")?,
        &names,
        (&files.ca, &files.cert, &files.key),
    )?;
    write_node(
        &new_ca("fjord-jepsen peer CA")?,
        &names,
        (&files.peer_ca, &files.peer_cert, &files.peer_key),
    )?;
    Ok(files)
}

impl RunTls {
    /// The flags of `fjord serve`.
    pub fn serve_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
            "--tls-ca".into(),
            path(&self.ca),
            "--peer-tls-cert".into(),
            path(&self.peer_cert),
            "--peer-tls-key".into(),
            path(&self.peer_key),
            "--peer-tls-ca".into(),
            path(&self.peer_ca),
        ]
    }

    /// The clients' settings: trusting the CA.
    pub fn client(&self) -> Result<fjord_client::ClientTls> {
        Ok(fjord_client::ClientTls::from_files(&self.ca, None, None)?)
    }
}

/// The endpoint of node `address` (`host:port`) alone, for the probes that dial one node
/// directly rather than through the cluster's client (a replica's own bounds): with the
/// run's client TLS settings (`tls`, those of [`RunTls::client`]) over https, else plain
/// http; at most `timeout` to connect and per request.
pub fn endpoint(
    address: &str,
    tls: Option<&fjord_client::ClientTls>,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .with_context(|| format!("node address {address:?}"))?;
    if let Some(tls) = tls {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(config).context("TLS settings")?;
    }
    Ok(endpoint.connect_timeout(timeout).timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_dials_https_with_the_runs_ca_and_http_without() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), 3).unwrap();
        let tls = files.client().unwrap();
        let timeout = std::time::Duration::from_secs(1);
        let secure = endpoint("10.77.0.1:7000", Some(&tls), timeout).unwrap();
        assert_eq!(secure.uri().scheme_str(), Some("https"));
        let plain = endpoint("10.77.0.1:7000", None, timeout).unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        assert!(endpoint("not an address", None, timeout).is_err());
    }
}
