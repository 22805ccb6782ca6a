//! A fjord node.
//!
//! # Layout
//! - [`config`]: the node's one configuration struct (flags and TOML).
//! - [`boot`]: the data directory's identity, and the check with the peers that comes before
//!   the node takes part in any Raft group.
//! - [`node`]: the node itself: storage, Raft groups, the reconciler that starts the groups
//!   the metadata assigns to it, leader reports, and the controller (leader balancing);
//!   [`reconcile`]: what the reconciler does (start, initialize now or later, delete), pure.
//! - [`live`]: which nodes a CreateTopic proposes as alive (pure).
//! - [`service`]: the client gRPC API (`fjord.v1.Fjord`); [`wire`]: its produce and fetch
//!   messages as domain types and back; [`data`]: the produce and fetch paths, on those
//!   types; [`producer_ids`]: producer ids, named producers' epochs, and the check of a
//!   batch's producer before it is proposed; [`topic_wire`]: a topic's settings (config,
//!   settings in force, alters) as domain types and back.
//! - [`coordinator`]: consumer group coordinators, one runner per `__fjord_groups` partition
//!   this node leads, running [`fjord_groups`]' decisions; [`group_wire`]: the group
//!   messages as domain types and back; [`lag`]: a description's lag in time (one record
//!   read per partition, outside the runner).
//! - [`peer`]: what this node does with its peers' requests (the handler of the node-to-node
//!   protocol, [`fjord_raft::peer`], which owns the messages, their encoding, the client and
//!   the gRPC service); [`rebuild`]: `--rebuild`, taking back a node that lost its data;
//!   [`dir_lock`]: one process at a time on a data directory; [`disk`]: produces refused
//!   while the data directory's filesystem is low on space (a full disk is not a dead node).
//! - [`auth`]: a request's principal (bearer tokens, client certificates through
//!   [`principal_rules`]) and the ACL check every client RPC makes; [`auth_wire`]: users' and
//!   ACL entries' messages as domain types and back.
//! - [`metrics`]: the node's Prometheus metrics; [`metrics_http`]: their endpoint
//!   (`--metrics-listen`); [`probes`]: the gRPC health service and server reflection on the
//!   client port.
//! - [`error`]: typed errors and their mapping to gRPC statuses; [`edge`]: the layer every
//!   answer leaves through (deadlines, and tonic's own codec answers, given fjord's codes);
//!   [`connections`]: the bound on connections served at once.
//!
//! [`run_with`] takes its two listeners (clients, peers), its outbound connector and its
//! clock from the caller; [`run_on`] also takes the opened database, any two streams of
//! incoming connections and the
//! probe of free disk space, so a whole cluster can run under a simulated network, disk and
//! clock.

pub mod auth;
pub mod auth_wire;
pub mod boot;
pub mod config;
pub mod connections;
pub mod coordinator;
pub mod data;
pub mod dir_lock;
pub mod disk;
pub mod edge;
pub mod error;
pub mod group_wire;
pub mod lag;
pub mod live;
pub mod meta_gate;
pub mod metrics;
pub mod metrics_http;
pub mod node;
pub mod partition_read;
pub mod peer;
pub mod principal_rules;
pub mod probes;
pub mod producer_ids;
pub mod rebuild;
pub mod reconcile;
pub mod retention;
pub mod service;
pub mod tls;
pub mod topic_wire;
pub mod wire;

use std::sync::Arc;

pub use config::{ConfigError, Peers, ServeConfig};
use fjord_proto::v1::fjord_server::FjordServer;
use fjord_raft::peer::{Connector, PeerPool, PeerServer, SourceBoundTcpConnector, TcpConnector};
use fjord_storage::{Store, StoreOptions};
pub use node::{Clock, Node, SystemClock};
use tokio_util::sync::CancellationToken;

/// Concurrent client and peer connections served, at most ([`connections`]: one past it
/// waits until another closes).
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests per connection being handled at once (until their answer starts), at most.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// Open HTTP/2 streams per connection, at most. Higher than the requests: between two nodes,
/// every partition with traffic in the last second keeps a replication stream open
/// (`RaftTransport.StreamAppend`) for each of its followers there.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Streams a peer may cancel before the server has accepted them, per connection, before the
/// connection is closed.
pub const MAX_PENDING_RESET_STREAMS: usize = 1024;

/// Why a node stopped with an error. Each message holds its cause's (none is a `source`, so
/// that `{:#}` does not print the cause twice).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    #[error("cannot open the data directory {dir}: {reason}")]
    Storage { dir: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot start the node: {0}")]
    Start(node::StartError),
    /// The boot check refused this data directory, or could not read it.
    #[error("this node must not start on its data directory: {0}")]
    Boot(boot::BootError),
    #[error("the gRPC server failed: {0}")]
    Serve(String),
    #[error("TLS: {0}")]
    Tls(tls::TlsError),
}

impl From<ConfigError> for ServerError {
    fn from(e: ConfigError) -> Self {
        ServerError::Config(e)
    }
}

impl From<node::StartError> for ServerError {
    fn from(e: node::StartError) -> Self {
        ServerError::Start(e)
    }
}

impl From<boot::BootError> for ServerError {
    fn from(e: boot::BootError) -> Self {
        ServerError::Boot(e)
    }
}

impl From<tls::TlsError> for ServerError {
    fn from(e: tls::TlsError) -> Self {
        ServerError::Tls(e)
    }
}

/// Runs a node on TCP until `shutdown` completes, then stops it cleanly.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let listener = bind(config.listen).await?;
    let peer_listener = bind(config.peer_listen_address()?).await?;
    let tls = match config.tls_settings()? {
        Some(settings) => {
            let tls = tls::NodeTls::load(&settings, config.peers.0.values())?;
            tracing::info!(
                cert = %settings.cert.display(),
                ca = %settings.ca.display(),
                peer_ca = ?settings.peer.as_ref().map(|p| p.ca.display().to_string()),
                client_auth = ?settings.client_auth,
                reload_every_ms = settings.reload_every.as_millis() as u64,
                "TLS on both listeners; mutual TLS between nodes"
            );
            tokio::spawn(tls::reload_loop(
                Arc::downgrade(&tls),
                settings.reload_every,
            ));
            Some(tls)
        }
        None => None,
    };
    let connector: Arc<dyn Connector> = match (&tls, config.source_address) {
        (Some(tls), source) => Arc::new(tls.connector(source)),
        (None, Some(source)) => Arc::new(SourceBoundTcpConnector(source)),
        (None, None) => Arc::new(TcpConnector),
    };
    let listeners = Listeners {
        client: listener,
        peers: peer_listener,
        tls,
    };
    run_with(
        config,
        listeners,
        connector,
        Arc::new(SystemClock),
        shutdown,
    )
    .await
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

/// A node's two TCP listeners.
pub struct Listeners {
    /// The client API's (`--listen`).
    pub client: tokio::net::TcpListener,
    /// The node-to-node service's (`--peer-listen`).
    pub peers: tokio::net::TcpListener,
    /// TLS on both (`None`: plaintext); the caller's connector should match it.
    pub tls: Option<Arc<tls::NodeTls>>,
}

/// Runs a node on the given listeners, connector and clock, with its database in
/// `config.data_dir`.
pub async fn run_with(
    config: ServeConfig,
    listeners: Listeners,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    // Held until this function returns, after the database is closed.
    let _lock = dir_lock::DirLock::acquire(&config.data_dir).map_err(|e| ServerError::Storage {
        dir: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let aside = if config.rebuild {
        set_aside(&config.data_dir)?
    } else {
        None
    };
    let data_dir = config.data_dir.clone();
    let store = open_store(&config)?;
    let (client_accept, peer_accept) = match &listeners.tls {
        Some(t) => (
            tls::Accept::Tls(t.clone(), tls::Listener::Client),
            tls::Accept::Tls(t.clone(), tls::Listener::Peers),
        ),
        None => (tls::Accept::Plain, tls::Accept::Plain),
    };
    let client = tls::incoming(without_nagle(listeners.client), client_accept);
    let peers = tls::incoming(without_nagle(listeners.peers), peer_accept);
    let closed = store.closed();
    let dir = config.data_dir.display().to_string();
    let (shutdown, failure) = or_on_storage_failure(&store, shutdown);
    let space = Arc::new(disk::WithFreedPages {
        fs: disk::Statvfs::new(&config.data_dir),
        freed: store.reusable_counter(),
    });
    let result = run_on(
        config, store, client, peers, connector, clock, space, shutdown,
    )
    .await;
    // Close the database before the process exits: a database still open at exit needs a
    // repair pass at the next start (seconds per GiB held).
    let db_closed = closed.wait(DB_CLOSE_WAIT).await;
    if db_closed {
        tracing::info!("database closed");
    } else {
        tracing::warn!(
            "the database was not closed in time; the next start will check it (slower)"
        );
    }
    // A refused --rebuild changes nothing: the contents it set aside go back.
    if let (Err(ServerError::Boot(boot::BootError::RebuildRefused(_))), Some(aside)) =
        (&result, &aside)
    {
        let put = if db_closed {
            put_back(&data_dir, aside)
        } else {
            Err("the new store was still open".into())
        };
        match put {
            Ok(()) => tracing::warn!(
                dir = %data_dir.display(),
                "--rebuild refused: the data directory's old contents are back where they were"
            ),
            Err(e) => tracing::error!(
                dir = %data_dir.display(),
                aside = %aside.display(),
                error = %e,
                "--rebuild refused, and the old contents could not be put back: they are in the \
                 directory named here; move them back by hand before a start without --rebuild"
            ),
        }
    }
    if let Some(reason) = failure.lock().unwrap().take() {
        return Err(ServerError::Storage {
            dir,
            reason: format!("a write failed, so the node stopped (fail-stop): {reason}"),
        });
    }
    result
}

/// The node's database in `config.data_dir`; a corrupt one is refused with what to do.
fn open_store(config: &ServeConfig) -> Result<Store, ServerError> {
    Store::open(
        &config.data_dir,
        &StoreOptions {
            cache_size_bytes: (config.cache_size_mib as usize) << 20,
            ..Default::default()
        },
    )
    .map_err(|e| ServerError::Storage {
        dir: config.data_dir.display().to_string(),
        reason: if e.is_corruption() {
            format!(
                "{e}. The store is corrupt and its contents cannot be trusted: do not delete \
                 the directory by hand (a node started on an empty one is refused by its \
                 peers); start the node with the same arguments plus --rebuild, which rebuilds \
                 it from the other nodes"
            )
        } else {
            e.to_string()
        },
    })
}

/// The listener's connections, with Nagle off on each: the server's `tcp_nodelay` applies
/// only to listeners tonic opens itself. With it on, a response's last frame could wait for
/// the client's delayed ACK (40 ms): that was the p99 of one-at-a-time produces.
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            if let Ok(c) = &conn
                && let Err(e) = c.set_nodelay(true)
            {
                tracing::debug!(error = %e, "cannot turn Nagle off on a connection");
            }
            conn
        },
    )
}

/// Why a storage commit failed, once one did.
type StorageFailure = Arc<std::sync::Mutex<Option<String>>>;

/// `shutdown`, or a failed storage commit, whichever comes first; the failure's reason is
/// kept. Fail-stop: once a commit failed, redb refuses every later write, and every group on
/// this node fails with it. Staying up would leave failed leaders whose replication streams
/// keep their followers from electing; stopping lets the failure detector act.
fn or_on_storage_failure(
    store: &Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    StorageFailure,
) {
    let failure = StorageFailure::default();
    let storage = store.clone();
    let failed = failure.clone();
    let either = async move {
        tokio::select! {
            _ = shutdown => {}
            reason = storage.failed() => {
                tracing::error!(
                    %reason,
                    "a storage commit failed: this node can store nothing more and stops; restart it once the disk is writable"
                );
                *failed.lock().unwrap() = Some(reason.to_string());
            }
        }
    };
    (either, failure)
}

/// `--rebuild`: the data directory's old contents (lost, corrupt or an old copy) are moved
/// aside into `<dir>/replaced-<unix seconds>/`, never deleted, and the node starts on an empty
/// store (see [`rebuild`]). Moved inside the directory, not beside it: a data directory that is
/// a mount point cannot be renamed. The lock file stays: this process holds it
/// ([`dir_lock`]), so no other process runs on the directory.
fn set_aside(dir: &std::path::Path) -> Result<Option<std::path::PathBuf>, ServerError> {
    let storage = |reason: String| ServerError::Storage {
        dir: dir.display().to_string(),
        reason,
    };
    let entries: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !stays_in_place(p))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(e.to_string())),
    };
    if entries.is_empty() {
        return Ok(None);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("replaced-{secs}"));
    std::fs::create_dir_all(&aside).map_err(|e| {
        storage(format!(
            "cannot make {} for --rebuild: {e}",
            aside.display()
        ))
    })?;
    for p in &entries {
        let to = aside.join(p.file_name().unwrap_or_default());
        std::fs::rename(p, &to).map_err(|e| {
            storage(format!(
                "cannot move {} aside for --rebuild: {e}",
                p.display()
            ))
        })?;
    }
    tracing::warn!(
        dir = %dir.display(),
        aside = %aside.display(),
        "--rebuild: the old contents of the data directory are moved aside; this node starts on a new store"
    );
    Ok(Some(aside))
}

/// What `--rebuild` leaves where it is in a data directory: the lock file (this process holds
/// it) and the `replaced-*` directories of rebuilds.
fn stays_in_place(p: &std::path::Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("replaced-") || n == dir_lock::LOCK_FILE)
}

/// Undoes [`set_aside`] after a refused rebuild: removes what the start made in `dir` (the
/// new store), keeping what [`stays_in_place`] (`aside` among it), and moves the contents of
/// `aside` back.
fn put_back(dir: &std::path::Path, aside: &std::path::Path) -> Result<(), String> {
    let entries = |d: &std::path::Path| -> Result<Vec<std::path::PathBuf>, String> {
        std::fs::read_dir(d)
            .map_err(|e| format!("cannot read {}: {e}", d.display()))?
            .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
            .collect()
    };
    for p in entries(dir)?.into_iter().filter(|p| !stays_in_place(p)) {
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
    }
    for p in entries(aside)? {
        let to = dir.join(p.file_name().unwrap_or_default());
        std::fs::rename(&p, &to).map_err(|e| format!("cannot move {} back: {e}", p.display()))?;
    }
    std::fs::remove_dir(aside).map_err(|e| format!("cannot remove {}: {e}", aside.display()))
}

/// The node, once it runs: the gRPC services start before it (see [`run_on`]).
pub type NodeSlot = Arc<std::sync::OnceLock<Arc<Node>>>;

/// How long a stopping node waits for its groups to release the database.
const DB_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC server of the client API (`fjord.v1.Fjord`) on `incoming` (the client
/// listener), answering from `slot` once the node runs, until `cancel`. The node-to-node
/// service is not served here: see [`serve_peers`].
fn serve<I, IO, IE>(
    incoming: I,
    slot: NodeSlot,
    config: &ServeConfig,
    health: &tonic_health::server::HealthReporter,
    cancel: &CancellationToken,
) -> impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static
where
    I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let client_api = FjordServer::new(service::StartingClientService {
        slot: slot.clone(),
        id: config.id,
        gate: std::sync::Arc::new(config.gate().unwrap_or_else(|e| {
            // `validate` checked the settings before the node started: refuse everything
            // rather than serve without the checks asked for.
            tracing::error!(error = %e, "invalid security settings: refusing every client request");
            auth::Gate::closed()
        })),
    })
    .max_decoding_message_size(data::MAX_PRODUCE_REQUEST_BYTES + (1 << 20))
    .max_encoding_message_size(service::MAX_ANSWER_BYTES);
    let stop = cancel.clone();
    server_builder()
        .add_service(client_api)
        .add_service(probes::health_service(health))
        .add_service(probes::reflection_v1())
        .add_service(probes::reflection_v1alpha())
        .serve_with_incoming_shutdown(connections::limit(incoming, MAX_CONNECTIONS), async move {
            stop.cancelled().await
        })
}

/// The gRPC server of the node-to-node service ([`fjord_raft::peer`], with the boot
/// identity check) on `incoming` (the peer listener) only: a client that reaches the client
/// port cannot call Append, Vote or MetaWrite.
fn serve_peers<I, IO, IE>(
    incoming: I,
    slot: NodeSlot,
    identity: &Arc<boot::IdentityService>,
    cancel: &CancellationToken,
) -> impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static
where
    I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let transport = PeerServer::service(peer::PeerService::new(slot, identity.clone()));
    let stop = cancel.clone();
    server_builder()
        .add_service(transport)
        .serve_with_incoming_shutdown(connections::limit(incoming, MAX_CONNECTIONS), async move {
            stop.cancelled().await
        })
}

/// The settings both gRPC servers share.
fn server_builder() -> tonic::transport::Server<
    tower::layer::util::Stack<edge::EdgeLayer, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // A peer cancels the RPCs that outlive its timeout. Under a burst (thousands of
        // groups starting at once), more than h2's default 20 can be cancelled while still
        // queued, and h2 would then close the whole connection (its defence against rapid
        // resets), failing every group's RPC on it at once and feeding the burst.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
        .layer(edge::EdgeLayer)
}

/// Checks the data directory with the peers (with `--rebuild`, has the metadata leader
/// take this node back as a learner). `Some(form)` to start, `form` if this node forms the
/// cluster; `None` if `shutdown` came first.
async fn check_directory(
    config: &ServeConfig,
    identity: &boot::IdentityService,
    pool: &PeerPool,
    shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Option<bool>, ServerError> {
    let checked = async {
        if config.rebuild {
            identity.rebuild(config, pool).await.map(|()| false)
        } else {
            identity.check(config, pool).await
        }
    };
    tokio::select! {
        checked = checked => match checked {
            Ok(form) => Ok(Some(form)),
            Err(e) => {
                tracing::error!(error = %e, "refusing to start");
                Err(e.into())
            }
        },
        _ = shutdown => {
            tracing::info!(node = config.id, "stopped while checking the data directory");
            Ok(None)
        }
    }
}

/// Runs a node on everything the caller supplies: its opened database, its incoming
/// connections (`client`: the client API's; `peers`: the node-to-node service's), its
/// outbound connector, its clock and the probe of its disk's free space (`config.listen`,
/// `config.peer_listen` and `config.data_dir` are not used, except to name the directory in
/// messages; `config.metrics_listen`, when set, is bound on the host's network). A simulation passes a database on a simulated disk and connections from a
/// simulated network.
#[allow(clippy::too_many_arguments)]
pub async fn run_on<C, P, IO, PIO, IE, PIE>(
    config: ServeConfig,
    store: Store,
    client: C,
    peers: P,
    connector: Arc<dyn Connector>,
    clock: Arc<dyn Clock>,
    space: Arc<dyn disk::SpaceProbe>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    C: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    P: futures::Stream<Item = Result<PIO, PIE>> + Send + 'static,
    PIO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    PIE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    config.validate()?;
    let pool = PeerPool::new(connector);
    let cancel = CancellationToken::new();
    // The server runs from the start: peers starting at the same time ask this node about
    // their directories while it checks its own. Until the node runs, every other RPC is
    // refused as unavailable.
    let slot = NodeSlot::default();
    let identity = boot::IdentityService::open(store.clone(), config.id).await?;
    let health = probes::starting().await;
    if let Some(addr) = config.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServerError::Listen {
                    addr: format!("{addr} (--metrics-listen)"),
                    reason: e.to_string(),
                })?;
        tokio::spawn(metrics_http::serve(listener, slot.clone(), cancel.clone()));
    }

    let server = tokio::spawn(serve(client, slot.clone(), &config, &health, &cancel));
    let peer_server = tokio::spawn(serve_peers(peers, slot.clone(), &identity, &cancel));
    let mut shutdown = std::pin::pin!(shutdown);
    let form = match check_directory(&config, &identity, &pool, shutdown.as_mut()).await {
        Ok(Some(form)) => form,
        stopped => {
            cancel.cancel();
            let _ = server.await;
            let _ = peer_server.await;
            return stopped.map(|_| ());
        }
    };
    let node = Node::start(&config, store, pool, clock, cancel.clone(), identity)
        .await
        .map_err(ServerError::Start)?;
    let _ = slot.set(node.clone());
    // A node that formed the cluster but stopped before it initialized the metadata group
    // does it now (its roster says it was a former; initializing an initialized group is a
    // no-op).
    let form = form || !node.identity().identity().roster.is_empty();

    node.run_background(form).await;
    if node.disk().enabled() {
        tokio::spawn(disk::watch_space(
            node.disk().clone(),
            space,
            std::time::Duration::from_millis(config.disk_check_interval_ms),
            cancel.clone(),
        ));
    }
    tokio::spawn(rebuild::promote_until_voter(node.clone(), config.rebuild));
    let draining = CancellationToken::new();
    let ready = tokio::spawn(probes::serving_when_ready(
        health.clone(),
        node.clone(),
        draining.clone(),
    ));
    tracing::info!(node = node.id(), address = %node.address(), "fjord node started");

    shutdown.await;
    tracing::info!(node = node.id(), "stopping");
    // Health says NOT_SERVING before anything stops, so that probes take the node out first.
    draining.cancel();
    let _ = ready.await;
    probes::set(&health, tonic_health::ServingStatus::NotServing).await;
    node.stop().await;
    probes::stopped(&health).await;
    let served = server.await;
    let peers_served = peer_server.await;
    tracing::info!(node = node.id(), "stopped");
    for served in [served, peers_served] {
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::Serve(e.to_string())),
            Err(e) => return Err(ServerError::Serve(e.to_string())),
        }
    }
    Ok(())
}
