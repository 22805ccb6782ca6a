//! The one configuration struct of a node: command-line flags (clap) and a TOML file (serde)
//! map onto it, and [`ServeConfig::validate`] checks it before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use fjord_meta::{CleanupPolicy, LogDefaults};
use serde::Deserialize;

/// Settings of one `fjord serve` process.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// This node's id: a positive integer, unique in the cluster and listed in `peers`.
    #[arg(long)]
    pub id: u64,
    /// Address to listen on for clients (the client API, `fjord.v1.Fjord`, only), e.g.
    /// 127.0.0.1:7101.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address to listen on for the other nodes (the node-to-node service only, never the
    /// client API): default `listen`'s IP with the port of this node's own entry in `peers`.
    /// Must differ from `listen`.
    #[arg(long)]
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// The client address this node registers in the metadata, which clients are sent to
    /// (leader hints). Default: `listen`, or, when `listen`'s IP is unspecified (0.0.0.0 or
    /// ::), the host of this node's own entry in `peers` with `listen`'s port.
    #[arg(long)]
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding this node's data (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The initial voters of the metadata group and where the nodes reach each other: their
    /// *peer* addresses (`peer_listen`), as `ID=HOST:PORT` pairs separated by commas, this
    /// node included: `1=10.0.0.1:7201,2=10.0.0.2:7201,3=10.0.0.3:7201`. Node-to-node traffic
    /// only ever goes to these addresses: list every node, the same line on each.
    #[arg(long, value_parser = parse_peers)]
    #[serde(deserialize_with = "de_peers")]
    pub peers: Peers,
    /// Raft heartbeat interval of the partition groups, in milliseconds.
    #[arg(long, default_value_t = defaults::HEARTBEAT_INTERVAL_MS)]
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the partition groups' randomized Raft election timeout, in
    /// milliseconds (the upper bound is twice this). Lower values fail over faster (with
    /// `--heartbeat-interval-ms 50 --election-timeout-ms 200`, a partition whose leader dies
    /// under load has a new leader within a second) but cost more while partitions are
    /// awake: on 2 cores, 1,000 partitions starting at 50/200 never settle.
    #[arg(long, default_value_t = defaults::ELECTION_TIMEOUT_MS)]
    #[serde(default = "default_election_ms")]
    pub election_timeout_ms: u64,
    /// Raft heartbeat interval of the metadata group, in milliseconds. The node-level
    /// heartbeats (the failure detector of quiet partitions) go out at most every third of
    /// the metadata election timeout.
    #[arg(long, default_value_t = defaults::META_HEARTBEAT_INTERVAL_MS)]
    #[serde(default = "default_meta_heartbeat_ms")]
    pub meta_heartbeat_interval_ms: u64,
    /// Lower bound of the metadata group's randomized election timeout, in milliseconds; also
    /// how long a peer node stays silent before it is suspected.
    #[arg(long, default_value_t = defaults::META_ELECTION_TIMEOUT_MS)]
    #[serde(default = "default_meta_election_ms")]
    pub meta_election_timeout_ms: u64,
    /// A partition whose leader appended nothing for this long goes quiet: no Raft ticks and
    /// no per-group heartbeats until traffic or a failure wakes it. 0 keeps every group awake.
    #[arg(long, default_value_t = defaults::QUIESCE_AFTER_MS)]
    #[serde(default = "default_quiesce_ms")]
    pub quiesce_after_ms: u64,
    /// A partition replica quiet for this long hibernates: its Raft instance stops, which
    /// frees most of its memory, and starts again, in a few milliseconds, on the first message,
    /// produce, read or failure that needs it. 0 keeps every instance running.
    #[arg(long, default_value_t = defaults::HIBERNATE_AFTER_MS)]
    #[serde(default = "default_hibernate_ms")]
    pub hibernate_after_ms: u64,
    /// redb page cache of this node's database, in MiB.
    #[arg(long, default_value_t = defaults::CACHE_SIZE_MIB)]
    #[serde(default = "default_cache_mib")]
    pub cache_size_mib: u64,
    /// Local address this node's connections to its peers are made from (default: chosen
    /// by the OS). Lets a fault proxy tell nodes apart on one host.
    #[arg(long)]
    #[serde(default)]
    pub source_address: Option<std::net::IpAddr>,
    /// Rebuild this node's data from the other nodes: for a node whose data directory was
    /// lost, found corrupt, or restored from an older copy (the node refuses to start then,
    /// and says so). The old contents are moved aside, the node rejoins every group it held as
    /// a learner, and becomes a voter again once it has caught up; refused (exit with a
    /// message, the old contents put back) where a group would lose its majority without
    /// it; waits while a node with this id still answers heartbeats (a duplicate --id).
    #[arg(long)]
    #[serde(default)]
    pub rebuild: bool,
    /// A consumer group member silent for this long is removed and its partitions go to
    /// the others (Kafka's `group.consumer.session.timeout.ms`).
    #[arg(long, default_value_t = defaults::GROUP_SESSION_TIMEOUT_MS)]
    #[serde(default = "default_group_session_ms")]
    pub group_session_timeout_ms: u32,
    /// How often consumer group members heartbeat (told to them in each answer).
    #[arg(long, default_value_t = defaults::GROUP_HEARTBEAT_INTERVAL_MS)]
    #[serde(default = "default_group_heartbeat_ms")]
    pub group_heartbeat_interval_ms: u32,
    /// Partitions of the consumer groups' topic, when the cluster creates it (on its first
    /// group request); fixed from then on.
    #[arg(long, default_value_t = defaults::GROUP_PARTITIONS)]
    #[serde(default = "default_group_partitions")]
    pub group_partitions: u32,
    /// How long the committed offsets of a consumer group with no members are kept, in
    /// milliseconds (Kafka's `offsets.retention.minutes`): from the later of the group becoming
    /// empty and the commit. A group whose offsets all expired is deleted, unless it has a config
    /// of its own. 1,000 (MIN_OFFSET_RETENTION_MS) to 31,536,000,000 (a year,
    /// MAX_OFFSET_RETENTION_MS); checked a quarter of it apart, every 250 ms to 60 s.
    #[arg(long, default_value_t = defaults::GROUP_OFFSET_RETENTION_MS)]
    #[serde(default = "default_group_retention_ms")]
    pub group_offset_retention_ms: u64,
    /// Threads of the node's async runtime, 1 to 1024. Default: one per core. Nodes that
    /// share a machine should share its cores (`fjord dev` gives each of its nodes cores /
    /// nodes, at least 1): more runnable threads than cores make every hand-off between
    /// tasks a wake-up on another thread, which one-at-a-time produces wait for.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    #[serde(default)]
    pub worker_threads: Option<u16>,
    /// How often retention looks at the partitions, in milliseconds: the leader of each
    /// deletes what expired by its topic's `retention_ms` and `retention_bytes`, and every
    /// replica purges its log behind the log start offset. 10 to 300,000 (Kafka's
    /// `log.retention.check.interval.ms`, 5 minutes by default; a round here costs a few
    /// reads per partition with retention by size, and one per expiry with retention by time).
    #[arg(long, default_value_t = defaults::RETENTION_CHECK_INTERVAL_MS)]
    #[serde(default = "default_retention_check_ms")]
    pub retention_check_interval_ms: u64,
    /// Free space, in bytes, below which this node refuses produces to the partitions it
    /// leads (RESOURCE_EXHAUSTED, reason DISK_FULL), before a write could fail for lack of
    /// space (a failed write stops the node). Fetches, replication, metadata and consumer
    /// groups go on; produces resume by themselves once free space is an eighth of this
    /// (64 MiB at most) above it. Default: 1 GiB, or 5% of the data directory's filesystem
    /// if that is smaller (room for what continues while produces are refused). 0 turns
    /// the check off.
    #[arg(long)]
    #[serde(default)]
    pub min_free_disk_bytes: Option<u64>,
    /// How often the free space of the data directory's filesystem is read, in
    /// milliseconds (10 to 60,000).
    #[arg(long, default_value_t = defaults::DISK_CHECK_INTERVAL_MS)]
    #[serde(default = "default_disk_check_ms")]
    pub disk_check_interval_ms: u64,
    /// `retention_ms` of topics that do not set their own (Kafka's `log.retention.ms`): how
    /// long records are kept, in ms. -1 (unlimited) or 1 to 3,153,600,000,000
    /// (MAX_CONFIG_DURATION_MS, 100 years). Each node resolves defaults with its own flags:
    /// give every node the same.
    #[arg(long, default_value_t = defaults::RETENTION_MS, allow_negative_numbers = true)]
    #[serde(default = "default_retention_ms")]
    pub default_retention_ms: i64,
    /// `retention_bytes` of topics that do not set their own (Kafka's `log.retention.bytes`):
    /// the bytes a partition keeps. -1 (unlimited) or 1,048,576 (MIN_RETENTION_BYTES) to 2^50
    /// (MAX_RETENTION_BYTES).
    #[arg(long, default_value_t = defaults::RETENTION_BYTES, allow_negative_numbers = true)]
    #[serde(default = "default_retention_bytes")]
    pub default_retention_bytes: i64,
    /// `cleanup_policy` of topics that do not set their own (Kafka's `log.cleanup.policy`):
    /// `delete`, `compact` or `compact,delete`.
    #[arg(long, default_value_t = defaults::CLEANUP_POLICY)]
    #[serde(
        default = "default_cleanup_policy",
        deserialize_with = "de_cleanup_policy"
    )]
    pub default_cleanup_policy: CleanupPolicy,
    /// `delete_retention_ms` of topics that do not set their own (Kafka's
    /// `log.cleaner.delete.retention.ms`): how long a tombstone survives compaction, in ms.
    /// 0 to 3,153,600,000,000 (MAX_CONFIG_DURATION_MS).
    #[arg(long, default_value_t = defaults::DELETE_RETENTION_MS)]
    #[serde(default = "default_delete_retention_ms")]
    pub default_delete_retention_ms: i64,
    /// `min_compaction_lag_ms` of topics that do not set their own (Kafka's
    /// `log.cleaner.min.compaction.lag.ms`): how long a record stays uncompacted at least, in
    /// ms. 0 to 3,153,600,000,000 (MAX_CONFIG_DURATION_MS).
    #[arg(long, default_value_t = defaults::MIN_COMPACTION_LAG_MS)]
    #[serde(default = "default_min_compaction_lag_ms")]
    pub default_min_compaction_lag_ms: i64,
    /// `none` (default): a request without a bearer token or client certificate is
    /// `User:ANONYMOUS`; `required`: it is refused (UNAUTHENTICATED). A bad token is refused
    /// either way.
    #[arg(long, value_enum, default_value_t = crate::auth::Authentication::None)]
    #[serde(default)]
    pub authentication: crate::auth::Authentication,
    /// `none` (default): everyone may do everything; `acl`: every client RPC checks its
    /// permission against the ACL entries (`fjord acl add`). Name `--superusers` first.
    #[arg(long, value_enum, default_value_t = crate::auth::Authorization::None)]
    #[serde(default)]
    pub authorization: crate::auth::Authorization,
    /// Principals that pass every ACL check, so turning authorization on cannot lock the
    /// operator out: `User:admin;User:ops`, or the flag repeated. Separated by `;` (not `,`:
    /// a name mapped from a certificate's subject, `User:CN=admin,O=acme`, holds commas).
    /// `User:*` and `User:ANONYMOUS` are refused.
    #[arg(long, value_delimiter = ';')]
    #[serde(default)]
    pub superusers: Vec<String>,
    /// How a client certificate's subject becomes a principal, in Kafka's
    /// `ssl.principal.mapping.rules` form: `RULE:^CN=([^,]+),O=acme$/$1/L,DEFAULT` (see
    /// `fjord_server::principal_rules`). Default `DEFAULT`: the whole subject.
    #[arg(long, default_value = crate::principal_rules::DEFAULT_RULES)]
    #[serde(default = "default_principal_rules")]
    pub tls_principal_rules: String,
    /// Address of an HTTP endpoint serving this node's Prometheus metrics at `/metrics`
    /// (text format), e.g. 0.0.0.0:9101. Off by default.
    #[arg(long)]
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// TLS: this node's certificate chain, PEM. Given with `tls_key` and `tls_ca`, TLS is on
    /// for both listeners and for the connections to the peers: it is served to clients,
    /// and (without `peer_tls_*`) to peers too and presented to them as this node's client
    /// certificate (mutual TLS between nodes). It must name (DNS or IP subject alternative
    /// name) the host of this node's client address (`advertise`) and, when it serves the
    /// peers, of its `peers` entry (or one of `tls_peer_names`). Read again every
    /// `tls_reload_interval_ms`: a replaced file is served without a restart.
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of `tls_cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA bundle, PEM, that verifies the clients' certificates and, without
    /// `peer_tls_ca`, the peers'. A peer's certificate must also name the host of one of the
    /// `peers` addresses (or one of `tls_peer_names`): any other certificate, a client's, is
    /// refused on the peer port.
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// TLS: whether the client listener asks clients for a certificate from the CA: `none`,
    /// `optional` (the default with TLS) or `required`.
    #[arg(long, value_enum, value_name = "none|optional|required")]
    #[serde(default)]
    pub tls_client_auth: Option<crate::tls::ClientAuth>,
    /// TLS between nodes only: this node's certificate chain, PEM, for the peer listener and
    /// the connections to the peers, issued by `peer_tls_ca`. It must name (DNS or IP
    /// subject alternative name) the host of this node's `peers` entry (or one of
    /// `tls_peer_names`): the peers check both. Given with `peer_tls_key` and
    /// `peer_tls_ca` (all three or none, and only with TLS on), the nodes trust each other by
    /// a CA of their own: no certificate the clients' CA (`tls_ca`) issues, whatever it
    /// names, is accepted on the peer port, and `tls_cert` serves the client listener alone.
    /// Without them, `tls_cert` and `tls_ca` serve both listeners, and a client certificate
    /// that names a node's peer host is that node on the peer port (docs/operations.md).
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub peer_tls_cert: Option<PathBuf>,
    /// TLS between nodes only: the private key of `peer_tls_cert`, PEM.
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub peer_tls_key: Option<PathBuf>,
    /// TLS between nodes only: the CA bundle, PEM, that verifies the peers' certificates (in
    /// place of `tls_ca`, which then verifies clients only).
    #[arg(long, value_name = "PEM")]
    #[serde(default)]
    pub peer_tls_ca: Option<PathBuf>,
    /// TLS: the names (DNS names or IP addresses, separated by commas) one of which a peer's
    /// certificate must carry, instead of the hosts of the `peers` addresses.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    #[serde(default)]
    pub tls_peer_names: Vec<String>,
    /// TLS: how often the certificate, key and CA files are read again, in milliseconds (100
    /// to 3,600,000). A new pair, or a new CA bundle, is used for every handshake from then
    /// on; a file that does not load (unreadable, mismatched) is logged as an error and the
    /// old one stays.
    #[arg(long, default_value_t = defaults::TLS_RELOAD_INTERVAL_MS)]
    #[serde(default = "default_tls_reload_ms")]
    pub tls_reload_interval_ms: u64,
}

/// Three settings given together or not at all: `Ok(None)` for none, all three, or the name
/// of the first one missing.
fn all_or_none<'a>(
    named: [(&'a Option<PathBuf>, &'static str); 3],
) -> Result<Option<[&'a PathBuf; 3]>, &'static str> {
    match named.map(|(value, _)| value.as_ref()) {
        [None, None, None] => Ok(None),
        [Some(a), Some(b), Some(c)] => Ok(Some([a, b, c])),
        given => Err(named[given.iter().position(Option::is_none).unwrap_or(0)].1),
    }
}

/// Every default, written once (the flags and the TOML file both take them from here).
pub mod defaults {
    pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
    pub const ELECTION_TIMEOUT_MS: u64 = 600;
    pub const META_HEARTBEAT_INTERVAL_MS: u64 = 100;
    pub const META_ELECTION_TIMEOUT_MS: u64 = 600;
    pub const QUIESCE_AFTER_MS: u64 = 1000;
    pub const HIBERNATE_AFTER_MS: u64 = 10_000;
    pub const CACHE_SIZE_MIB: u64 = 64;
    pub const GROUP_SESSION_TIMEOUT_MS: u32 = fjord_groups::limits::DEFAULT_SESSION_TIMEOUT_MS;
    pub const GROUP_HEARTBEAT_INTERVAL_MS: u32 =
        fjord_groups::limits::DEFAULT_HEARTBEAT_INTERVAL_MS;
    pub const GROUP_PARTITIONS: u32 = fjord_groups::DEFAULT_COORDINATOR_PARTITIONS;
    pub const GROUP_OFFSET_RETENTION_MS: u64 =
        fjord_groups::limits::DEFAULT_OFFSET_RETENTION_MS as u64;
    pub const RETENTION_CHECK_INTERVAL_MS: u64 = 1000;
    pub const DISK_CHECK_INTERVAL_MS: u64 = 500;
    pub const RETENTION_MS: i64 = fjord_meta::DEFAULT_RETENTION_MS;
    pub const RETENTION_BYTES: i64 = fjord_meta::DEFAULT_RETENTION_BYTES;
    pub const CLEANUP_POLICY: fjord_meta::CleanupPolicy = fjord_meta::CleanupPolicy::Delete;
    pub const DELETE_RETENTION_MS: i64 = fjord_meta::DEFAULT_DELETE_RETENTION_MS;
    pub const MIN_COMPACTION_LAG_MS: i64 = fjord_meta::DEFAULT_MIN_COMPACTION_LAG_MS;
    pub const TLS_RELOAD_INTERVAL_MS: u64 = 10_000;
}

/// The range of `disk_check_interval_ms`.
pub const DISK_CHECK_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=60_000;

/// One `--superusers` principal: an identity ([`fjord_meta::acl::validate_identity`]: not
/// `User:*` nor `User:ANONYMOUS`), and not a list written with the old `,` separator.
fn check_superuser(s: &str) -> Result<(), ConfigError> {
    if s.contains(",User:") {
        return Err(ConfigError::Superuser(format!(
            "{:?} looks like a list separated by ','; separate superusers with ';' or repeat \
             --superusers (a certificate's name may hold commas)",
            fjord_meta::error::clip(s)
        )));
    }
    fjord_meta::acl::validate_identity(s).map_err(|e| ConfigError::Superuser(e.to_string()))
}

fn default_principal_rules() -> String {
    crate::principal_rules::DEFAULT_RULES.to_string()
}
fn default_heartbeat_ms() -> u64 {
    defaults::HEARTBEAT_INTERVAL_MS
}
fn default_meta_heartbeat_ms() -> u64 {
    defaults::META_HEARTBEAT_INTERVAL_MS
}
fn default_meta_election_ms() -> u64 {
    defaults::META_ELECTION_TIMEOUT_MS
}
fn default_election_ms() -> u64 {
    defaults::ELECTION_TIMEOUT_MS
}
fn default_quiesce_ms() -> u64 {
    defaults::QUIESCE_AFTER_MS
}
fn default_hibernate_ms() -> u64 {
    defaults::HIBERNATE_AFTER_MS
}
fn default_cache_mib() -> u64 {
    defaults::CACHE_SIZE_MIB
}
fn default_group_session_ms() -> u32 {
    defaults::GROUP_SESSION_TIMEOUT_MS
}
fn default_group_retention_ms() -> u64 {
    defaults::GROUP_OFFSET_RETENTION_MS
}
fn default_retention_check_ms() -> u64 {
    defaults::RETENTION_CHECK_INTERVAL_MS
}
fn default_group_heartbeat_ms() -> u32 {
    defaults::GROUP_HEARTBEAT_INTERVAL_MS
}
fn default_group_partitions() -> u32 {
    defaults::GROUP_PARTITIONS
}
fn default_disk_check_ms() -> u64 {
    defaults::DISK_CHECK_INTERVAL_MS
}
fn default_tls_reload_ms() -> u64 {
    defaults::TLS_RELOAD_INTERVAL_MS
}
fn default_retention_ms() -> i64 {
    defaults::RETENTION_MS
}
fn default_retention_bytes() -> i64 {
    defaults::RETENTION_BYTES
}
fn default_cleanup_policy() -> CleanupPolicy {
    defaults::CLEANUP_POLICY
}
fn default_delete_retention_ms() -> i64 {
    defaults::DELETE_RETENTION_MS
}
fn default_min_compaction_lag_ms() -> i64 {
    defaults::MIN_COMPACTION_LAG_MS
}

/// A cleanup policy in a TOML file, spelt as on the command line (`compact,delete`).
fn de_cleanup_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CleanupPolicy, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// Initial metadata voters: node id → address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

/// Why a peer list does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("peer {part:?} is not ID=HOST:PORT")]
    NotIdAndAddress { part: String },
    #[error("peer id {id:?} in {part:?} is not a positive integer")]
    BadId { id: String, part: String },
    #[error("peer id 0 in {part:?}: node ids start at 1")]
    ZeroId { part: String },
    #[error(transparent)]
    Address(#[from] fjord_meta::MetaError),
    #[error("peer id {0} is listed twice")]
    Twice(u64),
    #[error("no peers given: list at least this node as ID=HOST:PORT")]
    None,
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<Peers, PeersError> {
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| PeersError::NotIdAndAddress { part: part.into() })?;
        let id: u64 = id.trim().parse().map_err(|_| PeersError::BadId {
            id: id.into(),
            part: part.into(),
        })?;
        if id == 0 {
            return Err(PeersError::ZeroId { part: part.into() });
        }
        let addr = addr.trim();
        fjord_meta::validate_address(addr)?;
        if map.insert(id, addr.to_string()).is_some() {
            return Err(PeersError::Twice(id));
        }
    }
    if map.is_empty() {
        return Err(PeersError::None);
    }
    Ok(Peers(map))
}

fn de_peers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Peers, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        Table(BTreeMap<String, String>),
    }
    match Form::deserialize(d)? {
        Form::Text(s) => parse_peers(&s).map_err(serde::de::Error::custom),
        Form::Table(t) => {
            let s = t
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            parse_peers(&s).map_err(serde::de::Error::custom)
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    PrincipalRules(#[from] crate::principal_rules::RulesError),
    #[error("--superusers: {0}")]
    Superuser(String),
    #[error("node id must be a positive integer, got 0")]
    ZeroId,
    #[error("retention_check_interval_ms must be 10 to 300000, got {0}")]
    RetentionCheckInterval(u64),
    #[error(
        "node {id} is not listed in peers ({peers}): list every initial node, this one included"
    )]
    NotInPeers { id: u64, peers: String },
    #[error("advertise address {0:?} is invalid: {1}")]
    Advertise(String, String),
    #[error(
        "the client address (listen, {0}) and the peer address (peer_listen, {0}) are the same: \
         the client API and the node-to-node service need a port each. The peers list \
         (--peers) names the nodes' peer addresses: give this node's entry there another port \
         than --listen, or set --peer-listen"
    )]
    SameListen(SocketAddr),
    #[error(
        "this node's own entry in peers ({0:?}) has no valid port; --peer-listen cannot default to it"
    )]
    OwnPeerPort(String),
    #[error(
        "{prefix}election_timeout_ms ({election}) must be at least 3 x {prefix}heartbeat_interval_ms ({heartbeat}) so that heartbeats keep a leader in place"
    )]
    Timeouts {
        prefix: &'static str,
        heartbeat: u64,
        election: u64,
    },
    #[error("{prefix}heartbeat_interval_ms must be between 10 and 10000, got {value}")]
    Heartbeat { prefix: &'static str, value: u64 },
    #[error(
        "quiesce_after_ms ({quiesce}) must be 0 (never) or at least heartbeat_interval_ms ({heartbeat})"
    )]
    Quiesce { heartbeat: u64, quiesce: u64 },
    #[error("cache_size_mib must be between 1 and 65536, got {0}")]
    Cache(u64),
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "group_session_timeout_ms ({session}) must be {min} to {max}, and group_heartbeat_interval_ms \
         ({heartbeat}) {hmin} to {hmax} and below it"
    )]
    GroupTiming {
        session: u32,
        heartbeat: u32,
        min: u32,
        max: u32,
        hmin: u32,
        hmax: u32,
    },
    #[error("group_partitions must be 1 to {max}, got {value}")]
    GroupPartitions { value: u32, max: u32 },
    #[error(
        "group_offset_retention_ms must be {min} to {max} (MIN_OFFSET_RETENTION_MS to \
         MAX_OFFSET_RETENTION_MS), got {value}"
    )]
    GroupRetention { value: u64, min: i64, max: i64 },
    #[error("disk_check_interval_ms must be {} to {}, got {value}", DISK_CHECK_INTERVAL_MS_RANGE.start(), DISK_CHECK_INTERVAL_MS_RANGE.end())]
    DiskCheckInterval { value: u64 },
    #[error(
        "TLS needs tls_cert, tls_key and tls_ca together (mutual TLS between nodes needs the CA); missing: {0}"
    )]
    TlsIncomplete(&'static str),
    #[error("{0} is a TLS setting: give tls_cert, tls_key and tls_ca to turn TLS on")]
    TlsOff(&'static str),
    #[error(
        "the peers' own TLS needs peer_tls_cert, peer_tls_key and peer_tls_ca together; missing: {0}"
    )]
    PeerTlsIncomplete(&'static str),
    #[error("tls_reload_interval_ms must be 100 to 3600000, got {0}")]
    TlsReloadInterval(u64),
    /// A `default_*` log setting outside the limits a topic's own value has. (The error is
    /// in the message, not a source: printed as a chain it would say it twice.)
    #[error("the default log settings (--default-*, default_* in a file): {0}")]
    LogDefault(fjord_meta::MetaError),
}

impl ServeConfig {
    /// Reads a TOML file with the same keys as the flags (`id`, `listen`, `data_dir`, `peers`, ...).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let cfg: ServeConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every setting; the error says which one and which limit applies.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if !self.peers.0.contains_key(&self.id) {
            let peers = self
                .peers
                .0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            return Err(ConfigError::NotInPeers { id: self.id, peers });
        }
        if let Some(a) = &self.advertise {
            fjord_meta::validate_address(a)
                .map_err(|e| ConfigError::Advertise(a.clone(), e.to_string()))?;
        }
        let peer_listen = self.peer_listen_address()?;
        if peer_listen == self.listen {
            return Err(ConfigError::SameListen(self.listen));
        }
        self.tls_settings()?;
        for (prefix, heartbeat, election) in [
            ("", self.heartbeat_interval_ms, self.election_timeout_ms),
            (
                "meta_",
                self.meta_heartbeat_interval_ms,
                self.meta_election_timeout_ms,
            ),
        ] {
            if !(10..=10_000).contains(&heartbeat) {
                return Err(ConfigError::Heartbeat {
                    prefix,
                    value: heartbeat,
                });
            }
            if election < 3 * heartbeat {
                return Err(ConfigError::Timeouts {
                    prefix,
                    heartbeat,
                    election,
                });
            }
        }
        if self.quiesce_after_ms != 0 && self.quiesce_after_ms < self.heartbeat_interval_ms {
            return Err(ConfigError::Quiesce {
                heartbeat: self.heartbeat_interval_ms,
                quiesce: self.quiesce_after_ms,
            });
        }
        if !(1..=65_536).contains(&self.cache_size_mib) {
            return Err(ConfigError::Cache(self.cache_size_mib));
        }
        self.validate_retention()?;
        self.gate()?;
        if !DISK_CHECK_INTERVAL_MS_RANGE.contains(&self.disk_check_interval_ms) {
            return Err(ConfigError::DiskCheckInterval {
                value: self.disk_check_interval_ms,
            });
        }
        self.log_defaults()
            .validate()
            .map_err(ConfigError::LogDefault)?;
        self.validate_groups()
    }

    /// The authentication and authorization settings, checked.
    pub fn gate(&self) -> Result<crate::auth::Gate, ConfigError> {
        for s in &self.superusers {
            check_superuser(s)?;
        }
        Ok(crate::auth::Gate {
            authentication: self.authentication,
            authorization: self.authorization,
            superusers: self.superusers.clone(),
            rules: crate::principal_rules::PrincipalRules::parse(&self.tls_principal_rules)?,
        })
    }

    /// The log settings of topics that do not set their own (`default_*`).
    pub fn log_defaults(&self) -> LogDefaults {
        LogDefaults {
            retention_ms: self.default_retention_ms,
            retention_bytes: self.default_retention_bytes,
            cleanup_policy: self.default_cleanup_policy,
            delete_retention_ms: self.default_delete_retention_ms,
            min_compaction_lag_ms: self.default_min_compaction_lag_ms,
        }
    }

    /// The consumer group settings.
    fn validate_retention(&self) -> Result<(), ConfigError> {
        let ms = self.retention_check_interval_ms;
        if !(10..=300_000).contains(&ms) {
            return Err(ConfigError::RetentionCheckInterval(ms));
        }
        Ok(())
    }

    fn validate_groups(&self) -> Result<(), ConfigError> {
        use fjord_groups::limits::*;
        let (session, heartbeat) = (
            self.group_session_timeout_ms,
            self.group_heartbeat_interval_ms,
        );
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&session)
            || !(MIN_HEARTBEAT_INTERVAL_MS..=MAX_HEARTBEAT_INTERVAL_MS).contains(&heartbeat)
            || heartbeat >= session
        {
            return Err(ConfigError::GroupTiming {
                session,
                heartbeat,
                min: MIN_SESSION_TIMEOUT_MS,
                max: MAX_SESSION_TIMEOUT_MS,
                hmin: MIN_HEARTBEAT_INTERVAL_MS,
                hmax: MAX_HEARTBEAT_INTERVAL_MS,
            });
        }
        let max = fjord_meta::MAX_PARTITIONS_PER_TOPIC;
        if !(1..=max).contains(&self.group_partitions) {
            return Err(ConfigError::GroupPartitions {
                value: self.group_partitions,
                max,
            });
        }
        let retention = i64::try_from(self.group_offset_retention_ms).unwrap_or(i64::MAX);
        if !(MIN_OFFSET_RETENTION_MS..=MAX_OFFSET_RETENTION_MS).contains(&retention) {
            return Err(ConfigError::GroupRetention {
                value: self.group_offset_retention_ms,
                min: MIN_OFFSET_RETENTION_MS,
                max: MAX_OFFSET_RETENTION_MS,
            });
        }
        Ok(())
    }

    /// The client address this node registers in the metadata and clients are sent to:
    /// `advertise`, else `listen` when its IP is specified, else the host of this node's own
    /// `peers` entry with `listen`'s port.
    pub fn advertised_address(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        if !self.listen.ip().is_unspecified() {
            return self.listen.to_string();
        }
        match self.own_peer_address().and_then(|a| a.rsplit_once(':')) {
            Some((host, _)) => format!("{host}:{}", self.listen.port()),
            None => self.listen.to_string(),
        }
    }

    /// This node's own entry in `peers`: the address the other nodes dial.
    pub fn own_peer_address(&self) -> Option<&str> {
        self.peers.0.get(&self.id).map(String::as_str)
    }

    /// The TLS settings (`None`: TLS off), checked: the certificate, key and CA come
    /// together, and the other TLS settings only with them.
    pub fn tls_settings(&self) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
        if !crate::tls::RELOAD_INTERVAL_MS_RANGE.contains(&self.tls_reload_interval_ms) {
            return Err(ConfigError::TlsReloadInterval(self.tls_reload_interval_ms));
        }
        let files = all_or_none([
            (&self.tls_cert, "tls_cert"),
            (&self.tls_key, "tls_key"),
            (&self.tls_ca, "tls_ca"),
        ])
        .map_err(ConfigError::TlsIncomplete)?;
        let Some([cert, key, ca]) = files else {
            // TLS off: no other TLS setting may be given.
            let stray = [
                (self.tls_client_auth.is_some(), "tls_client_auth"),
                (!self.tls_peer_names.is_empty(), "tls_peer_names"),
                (self.peer_tls_cert.is_some(), "peer_tls_cert"),
                (self.peer_tls_key.is_some(), "peer_tls_key"),
                (self.peer_tls_ca.is_some(), "peer_tls_ca"),
            ];
            return match stray.into_iter().find(|(set, _)| *set) {
                Some((_, name)) => Err(ConfigError::TlsOff(name)),
                None => Ok(None),
            };
        };
        let peer = all_or_none([
            (&self.peer_tls_cert, "peer_tls_cert"),
            (&self.peer_tls_key, "peer_tls_key"),
            (&self.peer_tls_ca, "peer_tls_ca"),
        ])
        .map_err(ConfigError::PeerTlsIncomplete)?
        .map(|[cert, key, ca]| crate::tls::PeerFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        });
        Ok(Some(crate::tls::TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            peer,
            client_auth: self
                .tls_client_auth
                .unwrap_or(crate::tls::ClientAuth::Optional),
            peer_names: self.tls_peer_names.clone(),
            reload_every: std::time::Duration::from_millis(self.tls_reload_interval_ms),
        }))
    }

    /// Where the node-to-node service listens: `peer_listen`, else `listen`'s IP with the
    /// port of this node's own `peers` entry.
    pub fn peer_listen_address(&self) -> Result<SocketAddr, ConfigError> {
        if let Some(a) = self.peer_listen {
            return Ok(a);
        }
        let own = self.own_peer_address().unwrap_or_default();
        let port = own
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| ConfigError::OwnPeerPort(own.to_string()))?;
        Ok(SocketAddr::new(self.listen.ip(), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<ServeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, text).unwrap();
        ServeConfig::from_toml_file(&path)
    }

    /// The example in the README.
    #[test]
    fn readme_example_parses() {
        let cfg = from_toml(
            r#"
id = 1
listen = "0.0.0.0:7101"
data_dir = "/var/lib/fjord"
peers = "1=10.0.0.1:7201,2=10.0.0.2:7201,3=10.0.0.3:7201"
"#,
        )
        .unwrap();
        assert_eq!(cfg.id, 1);
        assert_eq!(cfg.peers.0.len(), 3);
        assert_eq!(cfg.heartbeat_interval_ms, 100);
        assert_eq!(cfg.election_timeout_ms, 600);
        assert_eq!(cfg.meta_heartbeat_interval_ms, 100);
        assert_eq!(cfg.meta_election_timeout_ms, 600);
        assert_eq!(cfg.cache_size_mib, 64);
        assert_eq!(cfg.quiesce_after_ms, 1000);
        assert_eq!(cfg.hibernate_after_ms, 10_000);
        assert_eq!(cfg.min_free_disk_bytes, None);
        assert_eq!(cfg.disk_check_interval_ms, 500);
        assert_eq!(cfg.advertised_address(), "10.0.0.1:7101");
        assert_eq!(
            cfg.peer_listen_address().unwrap(),
            "0.0.0.0:7201".parse().unwrap()
        );
        assert_eq!(cfg.log_defaults(), LogDefaults::default());
    }

    /// The per-node configs in `deploy/config`, every key written out.
    #[test]
    fn deploy_configs_parse() {
        for (id, text) in [
            (1, include_str!("../../../deploy/config/node1.toml")),
            (2, include_str!("../../../deploy/config/node2.toml")),
            (3, include_str!("../../../deploy/config/node3.toml")),
        ] {
            let cfg = from_toml(text).unwrap_or_else(|e| panic!("node{id}.toml: {e}"));
            assert_eq!(cfg.id, id);
            assert_eq!(cfg.log_defaults(), LogDefaults::default());
        }
    }

    #[test]
    fn log_defaults_take_the_limits_of_a_topics_own_values() {
        let base = "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\npeers = \"1=a:2\"\n";
        let cfg = from_toml(&format!(
            "{base}default_retention_ms = -1\ndefault_retention_bytes = 1073741824\n\
             default_cleanup_policy = \"compact,delete\"\ndefault_delete_retention_ms = 0\n\
             default_min_compaction_lag_ms = 5000"
        ))
        .unwrap();
        assert_eq!(
            cfg.log_defaults(),
            LogDefaults {
                retention_ms: -1,
                retention_bytes: 1 << 30,
                cleanup_policy: CleanupPolicy::CompactDelete,
                delete_retention_ms: 0,
                min_compaction_lag_ms: 5000,
            }
        );
        for (bad, says) in [
            ("default_retention_ms = 0", "retention_ms = \"0\""),
            ("default_retention_bytes = 100", "MIN_RETENTION_BYTES"),
            ("default_delete_retention_ms = -5", "delete_retention_ms"),
            (
                "default_min_compaction_lag_ms = 3153600000001",
                "MAX_CONFIG_DURATION_MS",
            ),
        ] {
            let e = from_toml(&format!("{base}{bad}")).unwrap_err();
            assert!(matches!(e, ConfigError::LogDefault(_)), "{bad}: {e}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let e = from_toml(&format!("{base}default_cleanup_policy = \"shred\"")).unwrap_err();
        assert!(e.to_string().contains("\"compact,delete\""), "{e}");
    }

    #[test]
    fn peers_as_a_table_and_every_setting() {
        let cfg = from_toml(
            r#"
id = 2
listen = "127.0.0.1:7102"
advertise = "node2.example:7102"
data_dir = "d"
heartbeat_interval_ms = 50
election_timeout_ms = 300
quiesce_after_ms = 0
cache_size_mib = 16
[peers]
1 = "127.0.0.1:7201"
2 = "127.0.0.1:7202"
"#,
        )
        .unwrap();
        assert_eq!(cfg.peers.0[&2], "127.0.0.1:7202");
        assert_eq!(cfg.advertised_address(), "node2.example:7102");
    }

    /// The client and peer addresses: defaults, and the same port twice refused.
    #[test]
    fn client_and_peer_addresses() {
        let base = "id = 1\ndata_dir = \"d\"\npeers = \"1=node1.example:7201\"\n";
        let cfg = from_toml(&format!("{base}listen = \"127.0.0.1:7101\"")).unwrap();
        assert_eq!(cfg.advertised_address(), "127.0.0.1:7101");
        assert_eq!(
            cfg.peer_listen_address().unwrap(),
            "127.0.0.1:7201".parse().unwrap()
        );
        let cfg = from_toml(&format!("{base}listen = \"0.0.0.0:7101\"")).unwrap();
        assert_eq!(cfg.advertised_address(), "node1.example:7101");
        let cfg = from_toml(&format!(
            "{base}listen = \"0.0.0.0:7101\"\npeer_listen = \"10.1.1.1:7301\""
        ))
        .unwrap();
        assert_eq!(
            cfg.peer_listen_address().unwrap(),
            "10.1.1.1:7301".parse().unwrap()
        );
        let e = from_toml(&format!("{base}listen = \"127.0.0.1:7201\"")).unwrap_err();
        assert!(matches!(e, ConfigError::SameListen(_)), "{e}");
        assert!(e.to_string().contains("--peer-listen"), "{e}");
        let e = from_toml(&format!(
            "{base}listen = \"127.0.0.1:7101\"\npeer_listen = \"127.0.0.1:7101\""
        ))
        .unwrap_err();
        assert!(matches!(e, ConfigError::SameListen(_)), "{e}");
    }

    /// TLS: all three files or none; the other TLS keys only with them; the reload bound.
    #[test]
    fn tls_settings() {
        let base = "id = 1\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"d\"\npeers = \"1=a:7201\"\n";
        let files = "tls_cert = \"n.pem\"\ntls_key = \"n.key\"\ntls_ca = \"ca.pem\"\n";
        assert!(from_toml(base).unwrap().tls_settings().unwrap().is_none());
        let cfg = from_toml(&format!(
            "{base}{files}tls_client_auth = \"required\"\ntls_peer_names = [\"n1.example\"]"
        ))
        .unwrap();
        let tls = cfg.tls_settings().unwrap().unwrap();
        assert_eq!(tls.client_auth, crate::tls::ClientAuth::Required);
        assert_eq!(tls.peer_names, ["n1.example"]);
        assert_eq!(tls.reload_every, std::time::Duration::from_secs(10));
        let defaults = from_toml(&format!("{base}{files}")).unwrap();
        let tls = defaults.tls_settings().unwrap().unwrap();
        assert_eq!(tls.client_auth, crate::tls::ClientAuth::Optional);
        let e = from_toml(&format!("{base}tls_cert = \"n.pem\"\ntls_key = \"n.key\"")).unwrap_err();
        assert!(e.to_string().contains("missing: tls_ca"), "{e}");
        assert!(tls.peer.is_none());
        let peer_files =
            "peer_tls_cert = \"p.pem\"\npeer_tls_key = \"p.key\"\npeer_tls_ca = \"peer-ca.pem\"\n";
        let cfg = from_toml(&format!("{base}{files}{peer_files}")).unwrap();
        let peer = cfg.tls_settings().unwrap().unwrap().peer.unwrap();
        assert_eq!(peer.ca, std::path::Path::new("peer-ca.pem"));
        let e = from_toml(&format!("{base}{files}peer_tls_cert = \"p.pem\"")).unwrap_err();
        assert!(e.to_string().contains("missing: peer_tls_key"), "{e}");
        let e = from_toml(&format!("{base}{peer_files}")).unwrap_err();
        assert!(matches!(e, ConfigError::TlsOff("peer_tls_cert")), "{e}");
        let e = from_toml(&format!("{base}tls_client_auth = \"optional\"")).unwrap_err();
        assert!(matches!(e, ConfigError::TlsOff("tls_client_auth")), "{e}");
        let e = from_toml(&format!("{base}{files}tls_reload_interval_ms = 50")).unwrap_err();
        assert!(matches!(e, ConfigError::TlsReloadInterval(50)), "{e}");
    }

    #[test]
    fn superusers_flags_split_on_semicolons_and_repeat() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeConfig,
        }
        use clap::Parser;
        let base = [
            "fjord",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "d",
            "--peers",
            "1=a:1",
        ];
        let parse = |extra: &[&str]| {
            Flags::try_parse_from(base.iter().chain(extra))
                .map(|f| f.serve.superusers)
                .unwrap()
        };
        assert_eq!(
            parse(&["--superusers", "User:CN=a,O=x;User:ops"]),
            ["User:CN=a,O=x", "User:ops"]
        );
        assert_eq!(
            parse(&["--superusers", "User:a", "--superusers", "User:b"]),
            ["User:a", "User:b"]
        );
    }

    #[test]
    fn security_settings_parse_and_bad_ones_are_refused() {
        let base = "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\npeers = \"1=a:2\"\n";
        let open = from_toml(base).unwrap();
        assert_eq!(open.authentication, crate::auth::Authentication::None);
        assert_eq!(open.authorization, crate::auth::Authorization::None);
        assert_eq!(open.tls_principal_rules, "DEFAULT");
        let secure = from_toml(&format!(
            "{base}authentication = \"required\"\nauthorization = \"acl\"\n\
             superusers = [\"User:admin\", \"User:ops\"]\n\
             tls_principal_rules = 'RULE:^CN=([^,]+),O=acme$/$1/L,DEFAULT'\n"
        ))
        .unwrap();
        let gate = secure.gate().unwrap();
        assert_eq!(gate.superusers, ["User:admin", "User:ops"]);
        assert_eq!(gate.rules.map("CN=Bob,O=acme").as_deref(), Some("bob"));
        for bad in ["User:*", "User:ANONYMOUS", "User:a,User:b"] {
            let e = from_toml(&format!("{base}superusers = [{bad:?}]\n")).unwrap_err();
            assert!(e.to_string().contains("--superusers"), "{bad}: {e}");
        }
        let ok = from_toml(&format!("{base}superusers = [\"User:CN=admin,O=acme\"]\n"))
            .unwrap()
            .gate()
            .unwrap();
        assert_eq!(ok.superusers, ["User:CN=admin,O=acme"]);
        let e = from_toml(&format!("{base}superusers = [\"admin\"]\n")).unwrap_err();
        assert!(matches!(e, ConfigError::Superuser(_)), "{e}");
        assert!(e.to_string().contains("User:NAME"), "{e}");
        let e = from_toml(&format!("{base}tls_principal_rules = \"RULE:x\"\n")).unwrap_err();
        assert!(e.to_string().contains("--tls-principal-rules"), "{e}");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\n";
        let e = from_toml(&format!("id = 1\n{base}peers = \"1=nohost\"")).unwrap_err();
        assert!(e.to_string().contains("nohost"), "{e}");
        let e = from_toml(&format!("id = 1\n{base}peers = \"1=a:2\"\ncolour = 3")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = from_toml(&format!("id = 9\n{base}peers = \"1=a:2\"")).unwrap_err();
        assert!(matches!(e, ConfigError::NotInPeers { .. }), "{e}");
        let e = from_toml(&format!(
            "id = 1\n{base}peers = \"1=a:2\"\nelection_timeout_ms = 100"
        ))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Timeouts { .. }), "{e}");
        let e = from_toml(&format!(
            "id = 1\n{base}peers = \"1=a:2\"\nquiesce_after_ms = 20"
        ))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Quiesce { .. }), "{e}");
        for bad in [999, 31_536_000_001u64] {
            let e = from_toml(&format!(
                "id = 1\n{base}peers = \"1=a:2\"\ngroup_offset_retention_ms = {bad}"
            ))
            .unwrap_err();
            assert!(matches!(e, ConfigError::GroupRetention { .. }), "{e}");
            assert!(e.to_string().contains("MIN_OFFSET_RETENTION_MS"), "{e}");
        }
        let ok = from_toml(&format!(
            "id = 1\n{base}peers = \"1=a:2\"\ngroup_offset_retention_ms = 2000"
        ))
        .unwrap();
        assert_eq!(ok.group_offset_retention_ms, 2_000);
        let e = from_toml(&format!(
            "id = 1\n{base}peers = \"1=a:2\"\ndisk_check_interval_ms = 5"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("disk_check_interval_ms must be 10 to 60000"),
            "{e}"
        );
        let ok = from_toml(&format!(
            "id = 1\n{base}peers = \"1=a:2\"\nmin_free_disk_bytes = 0"
        ))
        .unwrap();
        assert_eq!(ok.min_free_disk_bytes, Some(0));
    }
}
