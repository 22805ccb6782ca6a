//! TLS on both listeners and on the connections to the peers (rustls, aws-lc-rs provider).
//!
//! - One certificate per node (`--tls-cert`, `--tls-key`): served on the client listener
//!   and, without `--peer-tls-*`, on the peer listener too and presented as the client
//!   certificate on the connections this node opens to its peers. [`ReloadingKey`] holds it
//!   behind a lock, and [`reload_loop`] reads the files again every
//!   `--tls-reload-interval-ms`: a fresh handshake gets the new certificate without a
//!   restart; a file that does not load keeps the old one (logged).
//! - One CA bundle (`--tls-ca`): verifies the clients' certificates (`--tls-client-auth`)
//!   and, without `--peer-tls-*`, the peers' (both ways). [`reload_loop`] reads it again
//!   too: a new bundle rebuilds both listeners' acceptors and the outbound configuration
//!   ([`NodeTls`]), which new connections get; a bundle that does not load keeps the old one
//!   (logged). Rotating a CA without a restart needs that: old and new CA in the bundle on
//!   every node, then the new certificates, then the new CA alone.
//! - Optionally a second certificate, key and CA for the peers alone (`--peer-tls-cert`,
//!   `--peer-tls-key`, `--peer-tls-ca`, Kafka's per-listener trust stores): the peer listener
//!   and the outbound peer connections then present that certificate and trust that CA only,
//!   so no certificate the clients' CA issues is a node's, whatever it names. Reloaded the
//!   same way.
//! - Between nodes, mutual TLS always: the peer listener requires a certificate from the
//!   peers' CA (`--peer-tls-ca`, else `--tls-ca`) and then that it names ([`PeerNames`]: a
//!   DNS or IP subject alternative name) the host of one of the `--peers` addresses, or one
//!   of `--tls-peer-names`; any other certificate (a client's) is refused there.
//! - The incoming TCP connections are wrapped here ([`incoming`]), the handshakes run
//!   concurrently and bounded in number and time; [`Conn`] carries the verified client
//!   certificate to the handlers ([`client_cert_subject`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

/// How long a TLS handshake on a listener may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress on one listener, at most (one more waits to be accepted).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// How long opening a TLS connection to a peer (TCP and handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The range of `tls_reload_interval_ms`.
pub const RELOAD_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Bytes of a certificate, key or CA file read, at most.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// Whether the client listener asks clients for a certificate (`--tls-client-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present one (verified against the CA); clients without one are served.
    Optional,
    /// Every client must present a certificate from the CA.
    Required,
}

/// A node's TLS files and settings, from its configuration.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The peers' own certificate, key and CA; `None`: `cert`, `key` and `ca` serve both.
    pub peer: Option<PeerFiles>,
    pub client_auth: ClientAuth,
    /// Names a peer's certificate may carry; empty: the hosts of the peers' addresses.
    pub peer_names: Vec<String>,
    pub reload_every: Duration,
}

/// The files of a certificate, key and CA used between nodes only (`--peer-tls-*`).
#[derive(Debug, Clone)]
pub struct PeerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Why TLS could not be set up, or a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no usable PEM private key: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate {cert} and the key {key} do not go together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("the CA bundle {path} is unusable: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The crypto provider every TLS object here uses: aws-lc-rs, rustls' default (its AES-GCM
/// uses AVX-512 where the CPU has it: 10.5-10.9 GB/s for 16 KiB records on this machine's
/// EPYC, against ring's 6.4-8.3, docs/benchmarks.md), with post-quantum key exchange
/// (X25519MLKEM768) preferred. Its cipher suites, with the AES-128-GCM ones first
/// ([`prefer_aes_128`]).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    prefer_aes_128(&mut p.cipher_suites);
    Arc::new(p)
}

/// Moves the AES-128-GCM suites ahead of the others, keeping their order otherwise. The
/// default order puts AES-256-GCM first; AES-128-GCM has fewer rounds, is as much a TLS 1.3
/// mandatory suite, and is what Go's TLS and most browsers choose first. Every byte a
/// produce carries is encrypted three times and decrypted three times (client to leader,
/// leader to each follower), so the bulk cipher is most of what TLS costs a produce
/// (docs/benchmarks.md, "The cost of TLS and of metrics"). The listeners choose by this
/// order, not the client's (`ignore_client_order`), so that clients of any TLS library get it.
fn prefer_aes_128(suites: &mut [rustls::SupportedCipherSuite]) {
    use rustls::CipherSuite as C;
    suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |reason: String| TlsError::Read {
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| read(e.to_string()))?
        .len();
    if len > MAX_PEM_FILE_BYTES {
        return Err(read(format!(
            "{len} bytes, more than MAX_PEM_FILE_BYTES ({MAX_PEM_FILE_BYTES})"
        )));
    }
    std::fs::read(path).map_err(|e| read(e.to_string()))
}

/// The certificates of a PEM text.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its key, from PEM texts (`cert_path`, `key_path` name them in
/// errors); refused if the key is not the certificate's.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs = certificates(cert_pem, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The CA bundle `pem`, read from `path` (named in errors).
fn roots_of(pem: &[u8], path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The node's certificate and key, replaced when their files change ([`reload_loop`]).
pub struct ReloadingKey {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents last looked at (loaded or refused): a change is a difference.
    seen: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingKey")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl ReloadingKey {
    /// Loads the certificate and key; an error if they do not load.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ReloadingKey>, TlsError> {
        let (cert, key) = (read_file(cert_path)?, read_file(key_path)?);
        let loaded = certified_key(&cert, &key, cert_path, key_path)?;
        Ok(Arc::new(ReloadingKey {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
            seen: std::sync::Mutex::new((cert, key)),
        }))
    }

    /// The certificate and key in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files; if they changed, loads them, or keeps the old key and logs why not.
    /// `Ok(true)` when a new key is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert, key) = (read_file(&self.cert_path)?, read_file(&self.key_path)?);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0 == cert && seen.1 == key {
                return Ok(false);
            }
            *seen = (cert.clone(), key.clone());
        }
        let loaded = certified_key(&cert, &key, &self.cert_path, &self.key_path)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingKey {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingKey {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Reads the node's certificate, key and CA files every `every` until `tls` is dropped: a
/// new certificate is logged with its serial, a new CA bundle with its path, a file that does
/// not load as an error (the old certificate or bundle stays in use).
pub async fn reload_loop(tls: Weak<NodeTls>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(tls) = tls.upgrade() else { return };
        for key in tls.keys() {
            match key.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => tracing::info!(
                    cert = %key.cert_path.display(),
                    serial = %serial_of(&key.current()).unwrap_or_default(),
                    "TLS: loaded a new certificate; new connections get it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "TLS: the certificate files changed but do not load; the old certificate stays in use"
                ),
            }
        }
        let look = tls.reload_ca_if_changed();
        for e in &look.refused {
            tracing::error!(
                error = %e,
                "TLS: a CA bundle changed but does not load; that bundle's old contents stay in use"
            );
        }
        if look.loaded {
            tracing::info!(
                ca = %tls.trust.ca_path.display(),
                peer_ca = ?tls.trust.peer_ca_path.as_ref().map(|p| p.display().to_string()),
                "TLS: loaded a new CA bundle; new connections are verified against it"
            );
        }
    }
}

/// The serial number of a key's certificate, in hex.
fn serial_of(key: &CertifiedKey) -> Option<String> {
    let der = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.raw_serial_as_string())
}

/// The names a peer's certificate may carry (one is enough): DNS names (case-insensitive;
/// a `*.` wildcard in the certificate covers one leftmost label) or IP addresses.
#[derive(Debug, Clone)]
pub struct PeerNames(Vec<String>);

impl PeerNames {
    /// `names` if given, else the hosts of `peers` (`host:port`).
    pub fn new<'a>(names: &[String], peers: impl IntoIterator<Item = &'a String>) -> PeerNames {
        if !names.is_empty() {
            return PeerNames(names.to_vec());
        }
        PeerNames(
            peers
                .into_iter()
                .filter_map(|a| a.rsplit_once(':').map(|(h, _)| unbracket(h).to_string()))
                .collect(),
        )
    }

    /// Whether the end-entity certificate `der` names one of these.
    pub fn permit(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value.general_names.iter().any(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                self.0.iter().any(|n| dns_matches(dns, n))
            }
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                self.0.iter().any(|n| ip_matches(bytes, n))
            }
            _ => false,
        })
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A DNS name of a certificate against an expected peer name. A peer named by an IP address
/// matches only an IP address of the certificate ([`ip_matches`]): a DNS name `10.0.0.1`, or
/// a wildcard `*.0.0.1`, in a certificate is not that address.
fn dns_matches(in_cert: &str, name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return false;
    }
    if in_cert.eq_ignore_ascii_case(name) {
        return true;
    }
    match (in_cert.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

fn ip_matches(in_cert: &[u8], name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => in_cert == ip.octets(),
        Ok(IpAddr::V6(ip)) => in_cert == ip.octets(),
        Err(_) => false,
    }
}

/// What a node's CA bundles decide: the acceptors of its two listeners (which clients and
/// peers they verify) and the configuration of its outbound peer connections, built together
/// and replaced together when a bundle changes ([`NodeTls::reload_ca_if_changed`]).
struct Verifying {
    client: tokio_rustls::TlsAcceptor,
    peers: tokio_rustls::TlsAcceptor,
    outbound: Arc<ClientConfig>,
}

impl Verifying {
    /// The configurations: the client listener verifies against `roots` and presents
    /// `key`'s certificate; the peer listener and the outbound connections against
    /// `peer_roots`, presenting `peer_key`'s.
    fn build(
        roots: &Arc<RootCertStore>,
        client_auth: ClientAuth,
        key: &Arc<ReloadingKey>,
        peer_roots: &Arc<RootCertStore>,
        peer_key: &Arc<ReloadingKey>,
    ) -> Result<Verifying, TlsError> {
        let setup = |e: &dyn std::fmt::Display| TlsError::Setup(e.to_string());
        let verifier = |roots: &Arc<RootCertStore>, optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| setup(&e))
        };
        let client_verifier = match client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::Optional => verifier(roots, true)?,
            ClientAuth::Required => verifier(roots, false)?,
        };
        let server = |v, key: &Arc<ReloadingKey>| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| setup(&e))?
                .with_client_cert_verifier(v)
                .with_cert_resolver(key.clone());
            c.alpn_protocols = vec![b"h2".to_vec()];
            c.ignore_client_order = true;
            Ok(Arc::new(c))
        };
        let mut outbound = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_root_certificates(peer_roots.clone())
            .with_client_cert_resolver(peer_key.clone());
        outbound.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Verifying {
            client: server(client_verifier, key)?.into(),
            peers: server(verifier(peer_roots, false)?, peer_key)?.into(),
            outbound: Arc::new(outbound),
        })
    }
}

/// Where a node's CA bundles are, and how its client listener asks for certificates.
struct Trust {
    ca_path: PathBuf,
    /// The peers' own CA bundle; `None`: `ca_path` verifies peers too.
    peer_ca_path: Option<PathBuf>,
    client_auth: ClientAuth,
}

/// The contents of a node's CA bundles: `--tls-ca`'s, and the peers' own (empty without one).
type CaFiles = [Vec<u8>; 2];

/// What a node knows of its CA files.
struct CaState {
    /// The contents last looked at (loaded or refused): a change is a difference.
    seen: CaFiles,
    /// The contents the configuration in use was built from.
    in_use: CaFiles,
}

/// What a look at the CA files found ([`NodeTls::reload_ca_if_changed`]).
#[derive(Debug, Default)]
pub struct CaReload {
    /// A new configuration is in use.
    pub loaded: bool,
    /// Why a bundle that changed (or could not be read) was not taken; the other bundle's
    /// change is taken all the same.
    pub refused: Vec<TlsError>,
}

impl Trust {
    /// The CA files, by their place in [`CaFiles`].
    fn paths(&self) -> impl Iterator<Item = (usize, &Path)> {
        [Some(&self.ca_path), self.peer_ca_path.as_ref()]
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p?.as_path())))
    }

    /// The contents of the CA files.
    fn read(&self) -> Result<CaFiles, TlsError> {
        let mut files = CaFiles::default();
        for (i, path) in self.paths() {
            files[i] = read_file(path)?;
        }
        Ok(files)
    }

    /// The configurations the CA files' contents `files` decide, presenting `key` to
    /// clients and `peer_key` to peers.
    fn build(
        &self,
        files: &CaFiles,
        key: &Arc<ReloadingKey>,
        peer_key: &Arc<ReloadingKey>,
    ) -> Result<Verifying, TlsError> {
        let roots = roots_of(&files[0], &self.ca_path)?;
        let peer_roots = match &self.peer_ca_path {
            Some(p) => roots_of(&files[1], p)?,
            None => roots.clone(),
        };
        Verifying::build(&roots, self.client_auth, key, &peer_roots, peer_key)
    }
}

/// Which of a node's listeners a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The client API's: client certificates as `--tls-client-auth` says.
    Client,
    /// The node-to-node service's: a certificate naming a peer, always.
    Peers,
}

/// A node's TLS: its certificate and key ([`ReloadingKey`]), the peers' own if given, and
/// what its CA bundles decide, all read again from their files every
/// `--tls-reload-interval-ms` ([`reload_loop`]). Each new connection, accepted or dialled,
/// takes the configuration current at its start; open connections keep theirs.
pub struct NodeTls {
    pub peer_names: Arc<PeerNames>,
    pub key: Arc<ReloadingKey>,
    /// What the peer listener serves and outbound peer connections present: `key` itself
    /// without `--peer-tls-*`.
    pub peer_key: Arc<ReloadingKey>,
    trust: Trust,
    verifying: RwLock<Arc<Verifying>>,
    cas: std::sync::Mutex<CaState>,
}

impl NodeTls {
    /// Loads the files of `settings`; the peer listener accepts certificates naming one of
    /// `peer_addresses`' hosts (or `settings.peer_names`).
    pub fn load<'a>(
        settings: &TlsSettings,
        peer_addresses: impl IntoIterator<Item = &'a String>,
    ) -> Result<Arc<NodeTls>, TlsError> {
        let key = ReloadingKey::load(&settings.cert, &settings.key)?;
        let peer_key = match &settings.peer {
            Some(p) => ReloadingKey::load(&p.cert, &p.key)?,
            None => key.clone(),
        };
        let trust = Trust {
            ca_path: settings.ca.clone(),
            peer_ca_path: settings.peer.as_ref().map(|p| p.ca.clone()),
            client_auth: settings.client_auth,
        };
        let files = trust.read()?;
        let verifying = trust.build(&files, &key, &peer_key)?;
        Ok(Arc::new(NodeTls {
            peer_names: Arc::new(PeerNames::new(&settings.peer_names, peer_addresses)),
            key,
            peer_key,
            trust,
            verifying: RwLock::new(Arc::new(verifying)),
            cas: std::sync::Mutex::new(CaState {
                seen: files.clone(),
                in_use: files,
            }),
        }))
    }

    /// The certificates this node presents: one, or the clients' and the peers'.
    fn keys(&self) -> Vec<&Arc<ReloadingKey>> {
        if Arc::ptr_eq(&self.key, &self.peer_key) {
            vec![&self.key]
        } else {
            vec![&self.key, &self.peer_key]
        }
    }

    fn verifying(&self) -> Arc<Verifying> {
        self.verifying
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The acceptor a new connection to `listener` gets.
    pub fn acceptor(&self, listener: Listener) -> tokio_rustls::TlsAcceptor {
        let v = self.verifying();
        match listener {
            Listener::Client => v.client.clone(),
            Listener::Peers => v.peers.clone(),
        }
    }

    /// The configuration a new outbound peer connection gets.
    pub fn outbound(&self) -> Arc<ClientConfig> {
        self.verifying().outbound.clone()
    }

    /// Reads the CA bundles; if one changed, verifies new connections against it from now
    /// on, or keeps that bundle's old contents when it does not load (each bundle on its
    /// own: a bad peers' bundle does not hold back a good change of the clients'). The same
    /// bad contents are refused once, not at every look. (Rotating a CA: a bundle with the
    /// old and the new CA on every node first, then the new certificates, then the new CA
    /// alone: docs/operations.md.)
    pub fn reload_ca_if_changed(&self) -> CaReload {
        let mut state = self.cas.lock().unwrap_or_else(|e| e.into_inner());
        let mut look = CaReload::default();
        let mut next = state.in_use.clone();
        for (i, path) in self.trust.paths() {
            let bytes = match read_file(path) {
                Ok(b) => b,
                Err(e) => {
                    look.refused.push(e);
                    continue;
                }
            };
            if bytes == state.seen[i] {
                continue;
            }
            state.seen[i].clone_from(&bytes);
            match roots_of(&bytes, path) {
                Ok(_) => next[i] = bytes,
                Err(e) => look.refused.push(e),
            }
        }
        if next != state.in_use {
            match self.trust.build(&next, &self.key, &self.peer_key) {
                Ok(verifying) => {
                    *self
                        .verifying
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(verifying);
                    state.in_use = next;
                    look.loaded = true;
                }
                Err(e) => {
                    // Tried again at the next look, rather than taken as seen.
                    state.seen = state.in_use.clone();
                    look.refused.push(e);
                }
            }
        }
        look
    }

    /// The connector of this node's peer connections, from `source` if given.
    pub fn connector(self: &Arc<Self>, source: Option<IpAddr>) -> TlsPeerConnector {
        TlsPeerConnector {
            tls: self.clone(),
            source,
        }
    }
}

/// What a handler learns of its connection ([`Connected`]).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, verified against the CA (end-entity first); `None`
    /// without TLS or without a client certificate.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection: plain TCP, or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo {
                remote_addr: s.peer_addr().ok(),
                peer_certs: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    peer_certs: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How one listener's connections are accepted.
#[derive(Clone)]
pub enum Accept {
    /// Plaintext.
    Plain,
    /// TLS, with the node's configuration for that listener current when each connection
    /// comes; on the peer listener a client certificate must name a peer
    /// ([`NodeTls::peer_names`]), or the connection is dropped after the handshake.
    Tls(Arc<NodeTls>, Listener),
}

/// The connections of `tcp`, accepted as `accept` says. TLS handshakes run concurrently (at
/// most [`MAX_PENDING_HANDSHAKES`], each within [`HANDSHAKE_TIMEOUT`]); a failed one is
/// logged and dropped, never handed on.
pub fn incoming<S>(
    tcp: S,
    accept: Accept,
) -> Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>>
where
    S: Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
{
    let (tls, listener) = match accept {
        Accept::Plain => {
            return Box::pin(tokio_stream::StreamExt::map(tcp, |c| c.map(Conn::Plain)));
        }
        Accept::Tls(tls, listener) => (tls, listener),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_PENDING_HANDSHAKES);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let mut tcp = std::pin::pin!(tcp);
        loop {
            let conn = tokio::select! {
                c = futures::StreamExt::next(&mut tcp) => c,
                _ = tx.closed() => return,
            };
            let conn = match conn {
                None => return,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accepting a connection failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let acceptor = tls.acceptor(listener);
            let names = (listener == Listener::Peers).then(|| tls.peer_names.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(tls) = handshake(&acceptor, conn, names.as_deref()).await {
                    let _ = tx.send(Ok(Conn::Tls(Box::new(tls)))).await;
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// How often a failed handshake on the peer port is logged as a warning, at most (the
/// others at debug level): a misconfigured node retries its connections many times a second.
const PEER_HANDSHAKE_WARN_EVERY: Duration = Duration::from_secs(10);

/// When a failed peer handshake was last logged as a warning.
static PEER_HANDSHAKE_WARNINGS: Every = Every::new(PEER_HANDSHAKE_WARN_EVERY);

/// A gate that opens at most once per interval (process-wide).
struct Every {
    every: Duration,
    /// When it last opened.
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Every {
    const fn new(every: Duration) -> Every {
        Every {
            every,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Whether the gate opens now (and then not again for the interval).
    fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The server side of one handshake; `None` (logged) if it fails, times out, or the
/// client's certificate names none of `names`.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    conn: TcpStream,
    names: Option<&PeerNames>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let from = conn.peer_addr().ok();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            if names.is_some() && PEER_HANDSHAKE_WARNINGS.allow() {
                // On the peer port only nodes should come: a failure there is a node with
                // the wrong certificate or CA (a rotation or a move to a peer CA gone
                // wrong), or someone probing.
                tracing::warn!(
                    ?from,
                    error = %e,
                    "TLS handshake failed on the peer port (a node whose certificate is not from \
                     the peers' CA or that does not trust this node's, or a connection that is \
                     not a node's; at most one warning per {} s)",
                    PEER_HANDSHAKE_WARN_EVERY.as_secs()
                );
            } else {
                tracing::debug!(?from, error = %e, "TLS handshake failed");
            }
            return None;
        }
        Err(_) => {
            tracing::debug!(?from, "TLS handshake timed out");
            return None;
        }
    };
    if let Some(names) = names {
        let named = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .is_some_and(|c| names.permit(c.as_ref()));
        if !named {
            tracing::warn!(
                ?from,
                subject = ?tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| subject_of(c.as_ref())),
                "refused a connection on the peer port: its certificate names no peer (--peers hosts or --tls-peer-names)"
            );
            return None;
        }
    }
    Some(tls)
}

/// The subject of the verified client certificate of `req`'s connection, RFC 4514-style
/// (`CN=alice,O=acme`: the most specific attribute first, special characters escaped);
/// `None` without TLS or without a client certificate.
pub fn client_cert_subject<T>(req: &tonic::Request<T>) -> Option<String> {
    let info = req.extensions().get::<ConnInfo>()?;
    subject_of(info.peer_certs.as_ref()?.first()?.as_ref())
}

/// The remote address of `req`'s connection (tonic's own `remote_addr` does not know
/// [`Conn`]).
pub fn remote_addr<T>(req: &tonic::Request<T>) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|i| i.remote_addr)
        .or_else(|| req.remote_addr())
}

/// The RFC 4514 subject of the certificate `der`.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = match attr.as_str() {
                        Ok(s) => escape_rfc4514(s),
                        Err(_) => format!("#{}", hex(attr.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // RFC 4514: the last RDN of the sequence first.
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value escaped as RFC 4514 section 2.4 says. The two separators of the rendered subject,
/// `,` (between attributes) and `+` (within one), are escaped as hex pairs (`\2C`, `\2B`, as
/// RFC 4514 allows): a value never holds a bare separator, so a mapping rule that splits
/// at commas (`[^,]+`) cannot be fooled by a common name such as `x,OU=admins`.
fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, '"' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else if c == ',' {
            out.push_str("\\2C");
        } else if c == '+' {
            out.push_str("\\2B");
        } else {
            if special {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Outbound peer connections over TLS: the CA verifies the peer's certificate (which must
/// name the host dialed), and this node's certificate is its client certificate.
pub struct TlsPeerConnector {
    tls: Arc<NodeTls>,
    source: Option<IpAddr>,
}

impl fjord_raft::peer::Connector for TlsPeerConnector {
    fn connect(
        &self,
        addr: &str,
    ) -> Result<tonic::transport::Channel, fjord_raft::peer::ConnectError> {
        let dial = Dial {
            tls: self.tls.clone(),
            source: self.source,
        };
        Ok(fjord_raft::peer::tcp_endpoint(addr)?.connect_with_connector_lazy(dial))
    }
}

/// Dials `host:port` and makes a TLS connection over it: tonic's connector.
#[derive(Clone)]
struct Dial {
    tls: Arc<NodeTls>,
    source: Option<IpAddr>,
}

type DialFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = std::io::Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                >,
            > + Send,
    >,
>;

impl tower::Service<http::Uri> for Dial {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let dial = this.dial(uri);
            match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
                Ok(r) => r.map(hyper_util::rt::TokioIo::new),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS connection to a peer timed out (CONNECT_TIMEOUT)",
                )),
            }
        })
    }
}

impl Dial {
    async fn dial(
        &self,
        uri: http::Uri,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        let host = unbracket(
            uri.host()
                .ok_or_else(|| invalid("no host in the address"))?,
        );
        let port = uri
            .port_u16()
            .ok_or_else(|| invalid("no port in the address"))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| invalid("the host is not a valid DNS name or IP address"))?;
        let tcp = self.tcp(host, port).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.tls.outbound())
            .connect(name, tcp)
            .await
    }

    async fn tcp(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect((host, port)).await;
        };
        let mut last = None;
        for addr in tokio::net::lookup_host((host, port)).await? {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            match socket.connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("the host resolves to no address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_and_no_suite_is_dropped() {
        use rustls::CipherSuite as C;
        let all = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
        let p = provider();
        assert_eq!(p.cipher_suites.len(), all.len());
        assert_eq!(p.cipher_suites[0].suite(), C::TLS13_AES_128_GCM_SHA256);
        let tls13: Vec<C> = p
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .filter(|s| format!("{s:?}").starts_with("TLS13"))
            .collect();
        assert_eq!(
            tls13,
            vec![
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
    }

    #[test]
    fn dns_names_and_wildcards() {
        assert!(dns_matches("Node1.Example", "node1.example"));
        assert!(dns_matches("*.fjord.svc", "fjord-0.fjord.svc"));
        assert!(!dns_matches("*.fjord.svc", "a.b.fjord.svc"));
        assert!(!dns_matches("*.fjord.svc", "fjord.svc"));
        assert!(ip_matches(&[127, 0, 0, 1], "127.0.0.1"));
        // A peer named by its address is matched by an IP address only.
        assert!(!dns_matches("10.0.0.1", "10.0.0.1"));
        assert!(!dns_matches("*.0.0.1", "10.0.0.1"));
        assert!(!dns_matches("::1", "::1"));
        assert!(!ip_matches(&[127, 0, 0, 1], "127.0.0.2"));
        assert!(!ip_matches(&[127, 0, 0, 1], "localhost"));
    }

    #[test]
    fn rfc4514_escapes() {
        assert_eq!(escape_rfc4514("a,b"), "a\\2Cb");
        assert_eq!(escape_rfc4514("x,OU=admins"), "x\\2COU=admins");
        assert_eq!(escape_rfc4514("a+b"), "a\\2Bb");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc4514("#1"), "\\#1");
    }

    fn cert(cn: &str, sans: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn subject_and_peer_names_of_a_certificate() {
        let (c, _) = cert("alice", &["node1.example", "127.0.0.1"]);
        assert_eq!(subject_of(c.der()).as_deref(), Some("CN=alice,O=acme"));
        let peers = ["node1.example:7201".to_string()];
        assert!(PeerNames::new(&[], &peers).permit(c.der()));
        let peers = ["127.0.0.1:7201".to_string()];
        assert!(PeerNames::new(&[], &peers).permit(c.der()));
        let peers = ["node2.example:7201".to_string()];
        assert!(!PeerNames::new(&[], &peers).permit(c.der()));
        assert!(PeerNames::new(&["node1.example".into()], &peers).permit(c.der()));
    }

    #[test]
    fn a_new_ca_bundle_is_used_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let (node, node_key) = cert("node", &["127.0.0.1"]);
        let (ca1, _) = cert("ca one", &["ca1"]);
        let (ca2, _) = cert("ca two", &["ca2"]);
        std::fs::write(path("node.pem"), node.pem()).unwrap();
        std::fs::write(path("node.key"), node_key.serialize_pem()).unwrap();
        std::fs::write(path("ca.pem"), ca1.pem()).unwrap();
        let settings = TlsSettings {
            cert: path("node.pem"),
            key: path("node.key"),
            ca: path("ca.pem"),
            peer: None,
            client_auth: ClientAuth::Optional,
            peer_names: vec![],
            reload_every: Duration::from_millis(100),
        };
        let tls = NodeTls::load(&settings, &["127.0.0.1:1".to_string()]).unwrap();
        let first = tls.outbound();
        let look = tls.reload_ca_if_changed();
        assert!(!look.loaded && look.refused.is_empty(), "{look:?}");
        assert!(
            Arc::ptr_eq(&first, &tls.outbound()),
            "unchanged file, same config"
        );
        // Both CAs: a new configuration for new connections.
        std::fs::write(path("ca.pem"), format!("{}{}", ca1.pem(), ca2.pem())).unwrap();
        assert!(tls.reload_ca_if_changed().loaded);
        let second = tls.outbound();
        assert!(!Arc::ptr_eq(&first, &second));
        // A bundle without a certificate is refused, and the last good one stays in use,
        // also at the next look (the same bad contents are not tried again).
        std::fs::write(path("ca.pem"), "garbage").unwrap();
        let look = tls.reload_ca_if_changed();
        assert!(!look.loaded);
        assert!(
            matches!(look.refused[..], [TlsError::NoCertificate { .. }]),
            "{look:?}"
        );
        let look = tls.reload_ca_if_changed();
        assert!(!look.loaded && look.refused.is_empty(), "{look:?}");
        assert!(Arc::ptr_eq(&second, &tls.outbound()));
        std::fs::write(path("ca.pem"), ca2.pem()).unwrap();
        assert!(tls.reload_ca_if_changed().loaded);
        assert!(!Arc::ptr_eq(&second, &tls.outbound()));
    }

    /// With the peers' own files, the peer certificate is a key of its own, reloaded beside
    /// the client one, and a change of the peers' CA alone is a change.
    #[test]
    fn the_peers_own_certificate_and_ca_are_kept_and_reloaded_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let (node, node_key) = cert("node", &["127.0.0.1"]);
        let (peer, peer_key) = cert("node peer", &["127.0.0.1"]);
        let (ca1, _) = cert("ca one", &["ca1"]);
        let (ca2, _) = cert("ca two", &["ca2"]);
        for (name, text) in [
            ("node.pem", node.pem()),
            ("node.key", node_key.serialize_pem()),
            ("peer.pem", peer.pem()),
            ("peer.key", peer_key.serialize_pem()),
            ("ca.pem", ca1.pem()),
            ("peer-ca.pem", ca2.pem()),
        ] {
            std::fs::write(path(name), text).unwrap();
        }
        let settings = TlsSettings {
            cert: path("node.pem"),
            key: path("node.key"),
            ca: path("ca.pem"),
            peer: Some(PeerFiles {
                cert: path("peer.pem"),
                key: path("peer.key"),
                ca: path("peer-ca.pem"),
            }),
            client_auth: ClientAuth::Optional,
            peer_names: vec![],
            reload_every: Duration::from_millis(100),
        };
        let tls = NodeTls::load(&settings, &["127.0.0.1:1".to_string()]).unwrap();
        assert_eq!(tls.keys().len(), 2);
        assert_eq!(tls.key.current().cert[0].as_ref(), node.der().as_ref());
        assert_eq!(tls.peer_key.current().cert[0].as_ref(), peer.der().as_ref());
        let first = tls.outbound();
        assert!(!tls.reload_ca_if_changed().loaded);
        std::fs::write(path("peer-ca.pem"), format!("{}{}", ca2.pem(), ca1.pem())).unwrap();
        assert!(tls.reload_ca_if_changed().loaded);
        let second = tls.outbound();
        assert!(!Arc::ptr_eq(&first, &second));
        // A peers' CA that does not load keeps its old contents, and does not hold back a
        // change of the clients' CA made at the same time.
        std::fs::write(path("peer-ca.pem"), "garbage").unwrap();
        std::fs::write(path("ca.pem"), format!("{}{}", ca1.pem(), ca2.pem())).unwrap();
        let look = tls.reload_ca_if_changed();
        assert!(look.loaded, "{look:?}");
        assert_eq!(look.refused.len(), 1, "{look:?}");
        let state = tls.cas.lock().unwrap();
        assert_eq!(
            state.in_use[0],
            format!("{}{}", ca1.pem(), ca2.pem()).into_bytes()
        );
        assert_eq!(
            state.in_use[1],
            format!("{}{}", ca2.pem(), ca1.pem()).into_bytes()
        );
        drop(state);
        // Without the peers' files, one key serves both.
        let one = NodeTls::load(
            &TlsSettings {
                peer: None,
                ..settings
            },
            &["127.0.0.1:1".to_string()],
        )
        .unwrap();
        assert_eq!(one.keys().len(), 1);
        assert!(Arc::ptr_eq(&one.key, &one.peer_key));
    }

    #[test]
    fn a_gate_opens_once_per_interval() {
        let gate = Every::new(Duration::from_secs(3600));
        assert!(gate.allow());
        assert!(!gate.allow());
        let always = Every::new(Duration::ZERO);
        assert!(always.allow());
        assert!(always.allow());
    }

    #[test]
    fn a_bad_new_file_keeps_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = cert("one", &["a"]);
        std::fs::write(&cert_path, c1.pem()).unwrap();
        std::fs::write(&key_path, k1.serialize_pem()).unwrap();
        let key = ReloadingKey::load(&cert_path, &key_path).unwrap();
        assert!(!key.reload_if_changed().unwrap());
        // A new certificate without its key: refused, the old one stays.
        let (c2, k2) = cert("two", &["a"]);
        std::fs::write(&cert_path, c2.pem()).unwrap();
        assert!(matches!(
            key.reload_if_changed(),
            Err(TlsError::Mismatch { .. })
        ));
        assert_eq!(key.current().cert[0].as_ref(), c1.der().as_ref());
        std::fs::write(&key_path, k2.serialize_pem()).unwrap();
        assert!(key.reload_if_changed().unwrap());
        assert_eq!(key.current().cert[0].as_ref(), c2.der().as_ref());
        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(key.reload_if_changed().is_err());
        assert_eq!(key.current().cert[0].as_ref(), c2.der().as_ref());
    }
}
