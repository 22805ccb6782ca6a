//! Test certificates (rcgen): a CA, and certificates it issues, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA in a directory: `ca.pem`, and the certificates it issued (`<name>.pem`,
/// `<name>.key`).
pub struct TestPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// Paths of an issued certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, DER (to compare with what a server presents).
    pub der: Vec<u8>,
}

impl TestPki {
    /// A new CA (`CN=<cn>`), its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path, cn: &str) -> TestPki {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        TestPki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// `fjord serve` flags for TLS with `node`'s certificate and this CA, clients asked for a
    /// certificate as `client_auth` says (none, optional, required).
    pub fn serve_flags(&self, node: &Issued, client_auth: &str) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&node.cert),
            "--tls-key".into(),
            path(&node.key),
            "--tls-ca".into(),
            path(&self.ca()),
            "--tls-client-auth".into(),
            client_auth.into(),
        ]
    }

    /// Issues a certificate for `sans` (DNS names or IP addresses) with subject
    /// `O=<org>,CN=<cn>`, written to `<name>.pem` and `<name>.key` (replacing them: the key
    /// first, then the certificate, each by a rename).
    pub fn issue(&self, name: &str, cn: &str, org: &str, sans: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.ca).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        write_atomically(&issued.key, &key.serialize_pem());
        write_atomically(&issued.cert, &cert.pem());
        issued
    }
}

/// Replaces the file at `path` with `text` by a rename, so that a reader sees the old file
/// or the new one, never half of one.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
