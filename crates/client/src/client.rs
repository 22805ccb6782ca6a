//! [`Client`]: connections to the nodes, leader-aware calls with bounded retries, the admin
//! operations and fetch.
//!
//! What must hold:
//! - every call has a deadline (`ClientConfig::request_timeout_ms`, plus the fetch wait);
//! - one lazily connected channel per node address, cached, at most [`MAX_CACHED_CHANNELS`];
//! - an operation is attempted at most `1 + max_retries` times (see [`crate::retry`]); a
//!   not-leader answer with a hint is retried at the hinted leader at once, anything else
//!   retryable after a metadata refresh and a backoff;
//! - metadata refreshes are single-flight: concurrent callers that find the cache stale
//!   wait for one refresh instead of each sending their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use fjord_proto::v1::{self, fjord_client::FjordClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::config::{ClientConfig, MAX_BROKERS};
use crate::error::ClientError;
use crate::metadata::{ClusterMetadata, MetadataCache, TopicDescription, TopicSettings};
use crate::retry::{RetryDecision, RetryState};

/// Most node channels a client keeps open.
pub const MAX_CACHED_CHANNELS: usize = 1_024;
/// Largest gRPC message the client sends or accepts: a maximal fetch (64 MiB) plus room for
/// the one oversized batch the server may return beyond `max_bytes`.
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;
/// Extra time the client gives the server beyond the ack timeout it asks for, so that the
/// server's own DEADLINE_EXCEEDED answer (with its detail) normally arrives first.
const DEADLINE_GRACE: Duration = Duration::from_millis(1_000);
/// HTTP/2 keep-alive pings notice a dead node before a request's deadline does.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the channel to a node from its endpoint (address, timeouts and keep-alives already
/// set). [`TcpConnect`] connects over TCP; a simulation dials through its simulated network
/// (`Endpoint::connect_with_connector_lazy`).
pub trait Connect: Send + Sync + 'static {
    /// A lazily connecting channel: nothing may be sent before the first request.
    fn connect(&self, endpoint: Endpoint) -> Channel;
}

/// Plain TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    fn connect(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_lazy()
    }
}

/// A handle to a fjord cluster. Cheap to clone; clones share connections and metadata.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// The addresses given to [`Client::connect`], tried first for any-node requests.
    bootstrap: Vec<String>,
    /// Node address → channel. A std mutex: held only to look up or insert (creating a lazy
    /// channel does no I/O), never across an await.
    channels: Mutex<HashMap<String, Channel>>,
    /// A std lock for the same reason: reads and updates are short and never await.
    metadata: RwLock<MetadataCache>,
    /// Makes metadata refreshes single-flight.
    refresh: tokio::sync::Mutex<()>,
    /// Rotates any-node requests over the known nodes.
    next_node: AtomicUsize,
    /// Makes the channels.
    connect: Arc<dyn Connect>,
    /// Sent with every request.
    credentials: Credentials,
    /// Retry jitter and partition choice. A std mutex: one draw at a time, never held across
    /// an await.
    rng: Mutex<StdRng>,
    /// Group heartbeats this client lets coordinators hold at once
    /// ([`MAX_HELD_HEARTBEATS`]).
    held_heartbeats: Arc<tokio::sync::Semaphore>,
}

/// Group heartbeats one client lets coordinators hold at once (long polls, see
/// [`crate::group`]); beyond, a member's heartbeat is answered at once and the member hears of
/// a rebalance at its next one. A held request takes one of the server's requests per
/// connection (256) until it is answered: this leaves most of them to other requests.
pub const MAX_HELD_HEARTBEATS: usize = 64;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.bootstrap)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How long a replica is asked to wait for a new leader of a partition whose leader could
/// not be reached. Longer than a failover takes with fjord's defaults (about 0.6 s with
/// the node-level failure detector, 2.4 s at most by Raft's own timers): the answer comes
/// as soon as the new leader is known.
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(3);

/// Which replicas may answer a partition request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Leader,
    AnyReplica,
}

impl Route {
    /// Where a read in `read` mode goes: CP to the leader, AP to any replica.
    pub(crate) fn for_read(read: crate::config::ReadMode) -> Route {
        match read {
            crate::config::ReadMode::Cp => Route::Leader,
            crate::config::ReadMode::Ap => Route::AnyReplica,
        }
    }
}

/// Adds the configured bearer token to every request (see [`ClientConfig::token`]).
#[derive(Clone)]
pub struct Credentials {
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Credentials {
    /// From a token checked by [`ClientConfig::validate`].
    fn new(token: Option<&crate::config::Token>) -> Result<Self, ClientError> {
        let bearer = token
            .map(|t| {
                format!("Bearer {}", t.0).parse().map_err(|_| {
                    ClientError::Config("the token is not a valid header value".into())
                })
            })
            .transpose()?;
        Ok(Credentials { bearer })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    }
}

/// A client stub to one node, sending the credentials.
pub type Stub = FjordClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;

/// Wraps a message with the deadline the server should know about (`grpc-timeout`).
pub(crate) fn request<M>(message: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

/// Checks that `address` is `host:port` (or a URI with a scheme) and builds its endpoint:
/// `https://` when the config has TLS settings (a `host:port` is then dialed with TLS too).
pub(crate) fn endpoint(address: &str, config: &ClientConfig) -> Result<Endpoint, ClientError> {
    let invalid =
        |why: String| ClientError::Config(format!("broker address {address:?} is invalid: {why}"));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = if let Some(rest) = address.strip_prefix("http://") {
        if config.tls.is_some() {
            return Err(invalid(
                "http:// with TLS settings: give HOST:PORT or https://".into(),
            ));
        }
        format!("http://{rest}")
    } else if address.starts_with("https://") {
        if config.tls.is_none() {
            return Err(invalid(
                "https:// needs a CA to verify the node (--tls-ca, FJORD_TLS_CA)".into(),
            ));
        }
        address.to_string()
    } else if address.contains("://") {
        address.to_string()
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected HOST:PORT".into()))?;
        if host.is_empty() {
            return Err(invalid("the host is empty".into()));
        }
        port.parse::<u16>()
            .map_err(|_| invalid(format!("port {port:?} is not a number from 0 to 65535")))?;
        format!("{scheme}://{address}")
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
    if let Some(tls) = &config.tls {
        let mut t = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            t = t.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(t)
            .map_err(|e| invalid(format!("TLS settings: {e}")))?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

impl Client {
    /// A client for the cluster reachable at `brokers` (`host:port` each; any subset of the
    /// nodes will do, the others are learnt from metadata). Connects lazily: nothing is sent
    /// until the first request, so this only checks the addresses and the configuration.
    pub fn connect(brokers: Vec<String>, config: ClientConfig) -> Result<Client, ClientError> {
        Self::connect_with(brokers, config, Arc::new(TcpConnect))
    }

    /// Like [`Client::connect`], with the channels made by `connect` (a simulated network,
    /// for instance).
    pub fn connect_with(
        brokers: Vec<String>,
        config: ClientConfig,
        connect: Arc<dyn Connect>,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        let mut bootstrap: Vec<String> = Vec::new();
        for b in brokers {
            let b = b.trim();
            if b.is_empty() || bootstrap.iter().any(|x| x == b) {
                continue;
            }
            endpoint(b, &config)?;
            bootstrap.push(b.to_string());
        }
        if bootstrap.is_empty() {
            return Err(ClientError::Config(
                "no brokers given: pass at least one HOST:PORT".into(),
            ));
        }
        if bootstrap.len() > MAX_BROKERS {
            return Err(ClientError::Config(format!(
                "{} brokers given, at most {MAX_BROKERS} are accepted",
                bootstrap.len()
            )));
        }
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let credentials = Credentials::new(config.token.as_ref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                credentials,
                bootstrap,
                channels: Mutex::new(HashMap::new()),
                metadata: RwLock::new(MetadataCache::default()),
                refresh: tokio::sync::Mutex::new(()),
                next_node: AtomicUsize::new(0),
                connect,
                rng: Mutex::new(rng),
                held_heartbeats: Arc::new(tokio::sync::Semaphore::new(MAX_HELD_HEARTBEATS)),
            }),
        })
    }

    /// A permit to let a coordinator hold a heartbeat, if fewer than [`MAX_HELD_HEARTBEATS`]
    /// are held now.
    pub(crate) fn hold_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.held_heartbeats.clone().try_acquire_owned().ok()
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    // ---- admin ----------------------------------------------------------------------

    /// The cluster's nodes, metadata leader and topics, as the answering node sees them.
    /// Also refreshes the client's metadata cache.
    pub async fn metadata(&self) -> Result<ClusterMetadata, ClientError> {
        let answer = self
            .any_node(|mut c, t| async move {
                c.metadata(request(
                    v1::MetadataRequest {
                        topics: vec![],
                        leader_wait: None,
                    },
                    t,
                ))
                .await
            })
            .await?;
        let md = ClusterMetadata::from(answer);
        self.write_cache().apply(&md, true);
        Ok(md)
    }

    /// Creates a topic. `replication_factor` 0 means the server's default (3, or the node
    /// count when the cluster is smaller).
    ///
    /// A create whose first attempt timed out and was retried may fail with
    /// [`ClientError::AlreadyExists`] although it was this client that created the topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<TopicDescription, ClientError> {
        self.create_topic_with(
            name,
            partitions,
            replication_factor,
            &TopicSettings::default(),
        )
        .await
    }

    /// [`Client::create_topic`] with settings of its own (a value outside its limits is
    /// refused, [`ClientError::InvalidArgument`] naming the limit).
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: &TopicSettings,
    ) -> Result<TopicDescription, ClientError> {
        let req = v1::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: Some(config.to_wire()),
        };
        let answer = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.create_topic(request(req, t)).await }
            })
            .await?;
        answer
            .topic
            .map(TopicDescription::from)
            .ok_or_else(|| ClientError::Protocol("create topic answer carries no topic".into()))
    }

    /// Deletes a topic and its records. A retried delete whose first attempt timed out may
    /// fail with [`ClientError::NotFound`] although the topic is gone.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = v1::DeleteTopicRequest {
            name: name.to_string(),
        };
        let result = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.delete_topic(request(req, t)).await }
            })
            .await;
        self.write_cache().forget_topic(name);
        result.map(|_| ())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        let answer = self
            .any_node(|mut c, t| async move {
                c.list_topics(request(v1::ListTopicsRequest {}, t)).await
            })
            .await?;
        let mut topics: Vec<TopicDescription> = answer.topics.into_iter().map(Into::into).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic: its replication factor and each partition's replicas and leader.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let req = v1::DescribeTopicRequest {
            name: name.to_string(),
        };
        let answer = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.describe_topic(request(req, t)).await }
            })
            .await?;
        answer
            .topic
            .map(TopicDescription::from)
            .ok_or_else(|| ClientError::Protocol("describe topic answer carries no topic".into()))
    }

    /// Changes a topic's settings: sets each `(key, value)` of `set` (`("retention_ms",
    /// "60000")`), resets each key of `reset` to the cluster default, keeps the others; all or
    /// nothing. Keys are [`crate::TOPIC_CONFIG_KEYS`]; an unknown key, a value outside its
    /// limits, a key named twice or no key at all is [`ClientError::InvalidArgument`] (the
    /// message names the key and the limit). Returns the topic as changed, as the node that
    /// made the change describes it.
    pub async fn alter_topic_config<K, V, R>(
        &self,
        name: &str,
        set: &[(K, V)],
        reset: &[R],
    ) -> Result<TopicDescription, ClientError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
        R: AsRef<str>,
    {
        let mut map = std::collections::HashMap::new();
        for (k, v) in set {
            let k = k.as_ref();
            if map.insert(k.to_string(), v.as_ref().to_string()).is_some() {
                return Err(ClientError::InvalidArgument(format!(
                    "topic config key {k} is set twice: give each key once"
                )));
            }
        }
        let req = v1::AlterTopicConfigRequest {
            name: name.to_string(),
            set: map,
            reset: reset.iter().map(|k| k.as_ref().to_string()).collect(),
        };
        let answer = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.alter_topic_config(request(req, t)).await }
            })
            .await?;
        answer.topic.map(TopicDescription::from).ok_or_else(|| {
            ClientError::Protocol("alter topic config answer carries no topic".into())
        })
    }

    /// Allocates a cluster-unique producer id (never 0) for idempotent produce.
    pub async fn init_producer(&self) -> Result<u64, ClientError> {
        self.init_producer_as(None).await.map(|(id, _)| id)
    }

    /// A producer id and epoch: for `name`, the named producer's id at its next epoch, which
    /// fences every earlier instance of it (see `InitProducer` in `proto/fjord.proto`); for
    /// `None`, a fresh unnamed id at epoch 0.
    pub async fn init_producer_as(&self, name: Option<&str>) -> Result<(u64, u16), ClientError> {
        let producer_name = name.map(str::to_string);
        let answer = self
            .any_node(|mut c, t| {
                let producer_name = producer_name.clone();
                async move {
                    c.init_producer(request(v1::InitProducerRequest { producer_name }, t))
                        .await
                }
            })
            .await?;
        let epoch = u16::try_from(answer.producer_epoch).map_err(|_| {
            ClientError::Protocol(format!(
                "InitProducer answered epoch {}, over {}",
                answer.producer_epoch,
                u16::MAX
            ))
        })?;
        match answer.producer_id {
            0 => Err(ClientError::Protocol(
                "InitProducer answered producer id 0".into(),
            )),
            id => Ok((id, epoch)),
        }
    }

    /// The number of partitions of `topic`, from the cache or a metadata refresh.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let mut retry = RetryState::new(&self.inner.config);
        loop {
            if let Some(t) = self.read_cache().topic(topic) {
                return match t.partitions.len() {
                    0 => Err(ClientError::Protocol(format!(
                        "topic {topic:?} has no partitions"
                    ))),
                    n => Ok(n as u32),
                };
            }
            let err = match self.refresh_topic(topic).await {
                Ok(()) if self.read_cache().topic(topic).is_some() => continue,
                Ok(()) => {
                    return Err(ClientError::NotFound(format!(
                        "topic {topic:?} does not exist"
                    )));
                }
                Err(e) => e,
            };
            self.wait_or_give_up(&mut retry, err, false).await?;
        }
    }

    // ---- plumbing ------------------------------------------------------------------------

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// Deadline of a produce attempt whose server-side ack timeout is the request timeout.
    pub(crate) fn produce_deadline(&self) -> Duration {
        self.request_timeout() + DEADLINE_GRACE
    }

    fn read_cache(&self) -> RwLockReadGuard<'_, MetadataCache> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, MetadataCache> {
        self.inner
            .metadata
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        if channels.len() >= MAX_CACHED_CHANNELS {
            // Addresses come from metadata; this many means nodes were replaced over and
            // over. Starting afresh is cheaper than tracking use, and stays bounded.
            channels.clear();
        }
        let channel = self
            .inner
            .connect
            .connect(endpoint(address, &self.inner.config)?);
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// One attempt at `address` within `deadline`.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        address: &str,
        deadline: Duration,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: FnOnce(Stub) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client =
            FjordClient::with_interceptor(self.channel(address)?, self.inner.credentials.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        match tokio::time::timeout(deadline, f(client)).await {
            Err(_) => Err(ClientError::Timeout(format!(
                "no answer from {address} within {} ms",
                deadline.as_millis()
            ))),
            Ok(Err(status)) => Err(ClientError::from_status(&status, address)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// A uniform jitter sample in `[0, 1)`.
    fn jitter(&self) -> f64 {
        self.with_rng(|r| r.r#gen::<f64>())
    }

    pub(crate) fn random_u32(&self) -> u32 {
        self.with_rng(|r| r.r#gen::<u32>())
    }

    /// Applies a retry decision: returns the error when it is time to give up, else waits
    /// as decided.
    pub(crate) async fn wait_or_give_up(
        &self,
        retry: &mut RetryState,
        err: ClientError,
        can_follow_hint: bool,
    ) -> Result<(), ClientError> {
        match retry.decide(&err, can_follow_hint, self.jitter()) {
            RetryDecision::GiveUp => Err(err),
            RetryDecision::Now => {
                debug!(retry = retry.retries(), error = %err, "retrying at the hinted leader");
                Ok(())
            }
            RetryDecision::After(delay) => {
                debug!(retry = retry.retries(), delay_ms = delay.as_millis() as u64, error = %err, "retrying after backoff");
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }

    /// Bootstrap brokers first, then nodes learnt from metadata.
    fn node_candidates(&self) -> Vec<String> {
        let mut all = self.inner.bootstrap.clone();
        for a in self.read_cache().node_addresses() {
            if !all.contains(&a) {
                all.push(a);
            }
        }
        all
    }

    fn next_node_address(&self) -> String {
        let all = self.node_candidates();
        let i = self.inner.next_node.fetch_add(1, Ordering::Relaxed);
        all[i % all.len()].clone()
    }

    /// A request any node answers (it forwards to the metadata leader itself): rotates over
    /// the nodes, backing off between attempts.
    pub(crate) async fn any_node<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Stub, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.request_timeout();
        let mut retry = RetryState::new(&self.inner.config);
        loop {
            let address = self.next_node_address();
            match self.call(&address, timeout, |c| f(c, timeout)).await {
                Ok(v) => return Ok(v),
                Err(err) => self.wait_or_give_up(&mut retry, err, false).await?,
            }
        }
    }

    /// Asks each known node once, in rotation, until one answers.
    async fn metadata_once(&self, topics: Vec<String>) -> Result<ClusterMetadata, ClientError> {
        let candidates = self.node_candidates();
        let start = self.inner.next_node.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..candidates.len() {
            let address = &candidates[(start + i) % candidates.len()];
            let req = v1::MetadataRequest {
                topics: topics.clone(),
                leader_wait: None,
            };
            let timeout = self.request_timeout();
            match self
                .call(address, timeout, |mut c| async move {
                    c.metadata(request(req, timeout)).await
                })
                .await
            {
                Ok(answer) => return Ok(answer.into()),
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Config("no brokers known".into())))
    }

    /// Refreshes the cached metadata of `topic`, unless another caller refreshed it while
    /// this one waited for its turn. One attempt per node: callers retry.
    async fn refresh_topic(&self, topic: &str) -> Result<(), ClientError> {
        let seen = self.read_cache().generation();
        let _single_flight = self.inner.refresh.lock().await;
        {
            let cache = self.read_cache();
            if cache.generation() != seen && cache.topic(topic).is_some() {
                return Ok(());
            }
        }
        match self.metadata_once(vec![topic.to_string()]).await {
            Ok(md) => {
                self.apply_topic_answer(topic, &md);
                Ok(())
            }
            Err(ClientError::NotFound(_)) => {
                self.write_cache().forget_topic(topic);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Caches an answer about `topic` (which forgets the topic when the answer lacks it).
    fn apply_topic_answer(&self, topic: &str, md: &ClusterMetadata) {
        let mut cache = self.write_cache();
        if md.topics.iter().all(|t| t.name != topic) {
            cache.forget_topic(topic);
        }
        cache.apply(md, false);
    }

    /// After the leader of a partition could not be reached: asks the partition's other
    /// replicas, one at a time, for metadata that waits (at most [`LEADER_WAIT`]) until they
    /// know another leader, so the client learns of the new leader the moment it is elected
    /// instead of polling for it. Returns the new leader's address when one is known.
    async fn await_other_leader(
        &self,
        topic: &str,
        partition: u32,
        unreachable: u64,
    ) -> Option<String> {
        let candidates = self
            .read_cache()
            .other_replica_addresses(topic, partition, unreachable);
        for address in candidates {
            let req = v1::MetadataRequest {
                topics: vec![topic.to_string()],
                leader_wait: Some(v1::LeaderWait {
                    topic: topic.to_string(),
                    partition,
                    unreachable_leader: unreachable,
                    wait_ms: LEADER_WAIT.as_millis() as u32,
                }),
            };
            let timeout = self.request_timeout() + LEADER_WAIT;
            match self
                .call(&address, timeout, |mut c| async move {
                    c.metadata(request(req, timeout)).await
                })
                .await
            {
                Ok(answer) => {
                    self.apply_topic_answer(topic, &answer.into());
                    return self
                        .read_cache()
                        .leader(topic, partition)
                        .filter(|(id, _)| *id != unreachable)
                        .map(|(_, a)| a);
                }
                Err(e) => debug!(%address, error = %e, "leader wait failed"),
            }
        }
        None
    }

    /// Checks the cached topic has `partition`.
    fn check_partition(&self, topic: &str, partition: u32) -> Result<(), ClientError> {
        let cache = self.read_cache();
        let t = cache
            .topic(topic)
            .ok_or_else(|| ClientError::NotFound(format!("topic {topic:?} does not exist")))?;
        if t.partitions.iter().any(|p| p.partition == partition) {
            Ok(())
        } else {
            Err(ClientError::NotFound(format!(
                "topic {topic:?} has {} partitions; there is no partition {partition}",
                t.partitions.len()
            )))
        }
    }

    /// The partition leader's address, from the cache unless `refresh` (or unknown there).
    async fn leader_address(
        &self,
        topic: &str,
        partition: u32,
        refresh: bool,
    ) -> Result<String, ClientError> {
        if !refresh && let Some(a) = self.read_cache().leader_address(topic, partition) {
            return Ok(a);
        }
        self.refresh_topic(topic).await?;
        self.check_partition(topic, partition)?;
        self.read_cache()
            .leader_address(topic, partition)
            .ok_or_else(|| ClientError::Unavailable {
                message: format!(
                    "partition {partition} of topic {topic:?} has no known leader yet"
                ),
                leader: None,
            })
    }

    /// The `rotation`-th replica (leader first) of a partition. Refreshes metadata when the
    /// cache knows no replica, or when `refresh` is set and the rotation went all the way
    /// round.
    async fn replica_address(
        &self,
        topic: &str,
        partition: u32,
        refresh: bool,
        rotation: usize,
    ) -> Result<String, ClientError> {
        let mut replicas = self.read_cache().replica_addresses(topic, partition);
        if replicas.is_empty() || (refresh && rotation.is_multiple_of(replicas.len())) {
            self.refresh_topic(topic).await?;
            self.check_partition(topic, partition)?;
            replicas = self.read_cache().replica_addresses(topic, partition);
        }
        if replicas.is_empty() {
            return Err(ClientError::Unavailable {
                message: format!(
                    "no address is known for any replica of partition {partition} of topic {topic:?}"
                ),
                leader: None,
            });
        }
        Ok(replicas[rotation % replicas.len()].clone())
    }

    /// Where `route` sends a request about the partition when no leader is hinted: its
    /// leader, or the replica `rotation` picks.
    async fn route_address(
        &self,
        topic: &str,
        partition: u32,
        route: Route,
        refresh: bool,
        rotation: usize,
    ) -> Result<String, ClientError> {
        match route {
            Route::Leader => self.leader_address(topic, partition, refresh).await,
            Route::AnyReplica => {
                self.replica_address(topic, partition, refresh, rotation)
                    .await
            }
        }
    }

    /// What a failed attempt's error tells the cache: a topic not found is forgotten; a
    /// leader hint is noted, and returned as the address to try at once if it resolves.
    fn learn_from(&self, topic: &str, partition: u32, err: &ClientError) -> Option<String> {
        if matches!(err, ClientError::NotFound(_)) {
            // Deleted (or never there): later lookups must not trust the cache.
            self.write_cache().forget_topic(topic);
        }
        if let ClientError::Unavailable { leader, .. } = err {
            let mut cache = self.write_cache();
            cache.note_leader(topic, partition, leader.as_ref());
            return leader.as_ref().and_then(|h| cache.resolve_hint(h));
        }
        None
    }

    /// The leader whose node could not be reached (refused, reset) at `tried`, if the
    /// request went to the cached leader: the caller then waits, at another replica, for a
    /// new leader. Not after a timeout: a leader that is slow but alive stays leader, and the
    /// wait would only add to the retry.
    fn lost_leader(
        &self,
        topic: &str,
        partition: u32,
        route: Route,
        err: &ClientError,
        tried: &Option<String>,
    ) -> Option<u64> {
        match (err, route, tried) {
            (ClientError::Transport { .. }, Route::Leader, Some(a)) => self
                .read_cache()
                .leader(topic, partition)
                .filter(|(_, addr)| addr == a)
                .map(|(id, _)| id),
            _ => None,
        }
    }

    /// A request about one partition, routed to its leader or any replica, retried on
    /// retryable errors: at once at a hinted leader, else after a refresh and a backoff.
    /// `interpret` turns an answer into the result (and may find a per-partition error in
    /// it); `observe` sees every failed attempt's error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn partition_call<T, R, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        route: Route,
        deadline: Duration,
        attempt: F,
        interpret: impl FnMut(R) -> Result<T, ClientError>,
        observe: impl FnMut(&ClientError, bool),
    ) -> Result<T, ClientError>
    where
        F: FnMut(Stub) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let call = (route, deadline, None);
        self.partition_call_until(topic, partition, call, attempt, interpret, observe)
            .await
    }

    /// [`Client::partition_call`], with no retry begun after `give_up_at` (the last
    /// attempt's error is returned then): a producer's delivery timeout.
    pub(crate) async fn partition_call_until<T, R, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        (route, deadline, give_up_at): (Route, Duration, Option<tokio::time::Instant>),
        mut attempt: F,
        mut interpret: impl FnMut(R) -> Result<T, ClientError>,
        mut observe: impl FnMut(&ClientError, bool),
    ) -> Result<T, ClientError>
    where
        F: FnMut(Stub) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut retry = RetryState::new(&self.inner.config);
        let mut hinted: Option<String> = None;
        let mut refresh = false;
        let mut rotation = 0usize;
        loop {
            let target = match hinted.take() {
                Some(a) => Ok(a),
                None => {
                    self.route_address(topic, partition, route, refresh, rotation)
                        .await
                }
            };
            let mut tried = None;
            let result = match target {
                Ok(address) => {
                    let r = self
                        .call(&address, deadline, &mut attempt)
                        .await
                        .and_then(&mut interpret);
                    tried = Some(address);
                    r
                }
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            observe(&err, tried.is_some());
            hinted = self.learn_from(topic, partition, &err);
            if hinted.is_none()
                && let Some(lost) = self.lost_leader(topic, partition, route, &err, &tried)
            {
                hinted = self.await_other_leader(topic, partition, lost).await;
            }
            refresh = hinted.is_none();
            rotation = rotation.wrapping_add(1);
            if give_up_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                debug!(error = %err, "delivery timeout passed: no more retries");
                return Err(err);
            }
            self.wait_or_give_up(&mut retry, err, hinted.is_some())
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_are_checked() {
        let ok = |b: &[&str]| {
            Client::connect(
                b.iter().map(|s| s.to_string()).collect(),
                ClientConfig::default(),
            )
        };
        assert!(ok(&["127.0.0.1:7101", "localhost:7102"]).is_ok());
        assert!(ok(&["http://127.0.0.1:7101"]).is_ok());
        for bad in ["127.0.0.1", ":7101", "host:port", "host:70000"] {
            let e = ok(&[bad]).unwrap_err();
            assert!(matches!(e, ClientError::Config(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(matches!(ok(&[]).unwrap_err(), ClientError::Config(_)));
        assert!(matches!(
            ok(&[" ", ""]).unwrap_err(),
            ClientError::Config(_)
        ));
        // https:// needs a CA; with TLS settings, http:// is refused and HOST:PORT is https.
        let e = ok(&["https://127.0.0.1:7101"]).unwrap_err();
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        let tls = ClientConfig {
            tls: Some(crate::ClientTls {
                ca_pem: Vec::new(),
                identity: None,
            }),
            ..ClientConfig::default()
        };
        assert!(endpoint("127.0.0.1:7101", &tls).is_ok());
        assert!(endpoint("https://n1.example:7101", &tls).is_ok());
        assert!(endpoint("http://127.0.0.1:7101", &tls).is_err());
    }

    #[test]
    fn duplicate_brokers_are_dropped() {
        let c = Client::connect(
            vec!["a:1".into(), " a:1 ".into(), "b:2".into()],
            ClientConfig::default(),
        )
        .unwrap();
        assert_eq!(c.node_candidates(), ["a:1", "b:2"]);
    }

    #[test]
    fn bad_config_is_refused() {
        let config = ClientConfig {
            request_timeout_ms: 0,
            ..Default::default()
        };
        let e = Client::connect(vec!["a:1".into()], config).unwrap_err();
        assert!(e.to_string().contains("request_timeout_ms"), "{e}");
    }
}
