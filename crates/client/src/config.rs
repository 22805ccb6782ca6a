//! Settings of the client, of a producer and of a fetch, with their limits.
//!
//! Every setting has a unit in its name and an upper bound checked by `validate()`, so a
//! typo cannot ask for an unbounded queue or a day-long timeout. Defaults suit a local
//! three-node cluster and the `fjord` command-line tool.

use crate::error::ClientError;

/// Default deadline of one request attempt, in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Largest accepted `request_timeout_ms`.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;
/// Default time allowed to open a TCP connection to a node, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Default number of retries after the first attempt of an operation.
pub const DEFAULT_MAX_RETRIES: u32 = 60;
/// Largest accepted `max_retries`.
pub const MAX_RETRIES_LIMIT: u32 = 1_000;
/// Default first retry backoff, in milliseconds (it doubles per retry, with jitter).
pub const DEFAULT_RETRY_BACKOFF_MS_INITIAL: u64 = 50;
/// Default cap of the retry backoff, in milliseconds. Short, so that a client finds a new
/// leader soon after it is elected (a failover takes about one election timeout); the retry
/// count, not the backoff, gives an outage its time: with the defaults about 6 s of backoff
/// (every fourth retry backs off; three in a row may follow leader hints at once), enough to
/// ride out an election, or a leader transfer that stalls under load until one.
pub const DEFAULT_RETRY_BACKOFF_MS_MAX: u64 = 500;
/// Largest accepted `retry_backoff_ms_max`.
pub const MAX_RETRY_BACKOFF_MS: u64 = 60_000;
/// Most bootstrap brokers a client accepts.
pub const MAX_BROKERS: usize = 1_024;

/// Default time a partition's batch may wait for more records, in milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 5;
/// Largest accepted `linger_ms`.
pub const MAX_LINGER_MS: u64 = 60_000;
/// Default largest batch, in encoded bytes. Well under the server's 8 MiB of records per
/// produce request and a multiple of the 1 MiB default record limit's typical record.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 512 * 1024;
/// Largest accepted `max_batch_bytes`: the server takes at most 8 MiB of records in one
/// produce request (a larger batch would be refused every time it was sent).
pub const MAX_BATCH_BYTES_LIMIT: usize = 8 * 1024 * 1024;
/// Default largest batch, in records.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 10_000;
/// Largest accepted `max_batch_records`: the server takes at most 100,000 records in one
/// batch (`fjord_proto::prescan::MAX_RECORDS`).
pub const MAX_BATCH_RECORDS_LIMIT: usize = fjord_proto::prescan::MAX_RECORDS;
/// Default batches of one partition in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 5;
/// Largest accepted `max_in_flight_batches`: the server remembers the last 5 batches of each
/// producer per partition (`RETAINED_BATCHES_PER_PRODUCER`), and a retry is recognised as a
/// duplicate only while its batch is among them.
pub const MAX_IN_FLIGHT_BATCHES_LIMIT: usize = 5;
/// Default bound on records a producer holds (queued, batching or in flight).
pub const DEFAULT_MAX_PENDING_RECORDS: usize = 100_000;
/// Default bound on the bytes of records a producer holds.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Largest accepted `max_pending_records`.
pub const MAX_PENDING_RECORDS_LIMIT: usize = 10_000_000;
/// Largest accepted `max_pending_bytes`.
pub const MAX_PENDING_BYTES_LIMIT: usize = 4 * 1024 * 1024 * 1024;

/// Default `FetchOptions::max_bytes`.
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1024 * 1024;
/// Largest `max_bytes` the server accepts in a fetch.
pub const MAX_FETCH_BYTES: u32 = 64 * 1024 * 1024;
/// Default `FetchOptions::max_wait_ms`.
pub const DEFAULT_FETCH_MAX_WAIT_MS: u32 = 500;
/// Largest `max_wait_ms` the server accepts in a fetch.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// Settings of a [`Client`](crate::Client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of one attempt of a request, in milliseconds. A produce also asks the server
    /// to answer within this time; a fetch adds its `max_wait_ms`.
    pub request_timeout_ms: u64,
    /// Time allowed to open a TCP connection to a node, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Retries after the first attempt, for retryable errors only.
    pub max_retries: u32,
    /// Backoff before the first retry that does not follow a leader hint, in milliseconds.
    pub retry_backoff_ms_initial: u64,
    /// Cap of the backoff, which doubles with each retry, in milliseconds.
    pub retry_backoff_ms_max: u64,
    /// Seeds the client's randomness (retry jitter, a producer's first sticky partition), so
    /// that a simulation replays the same run; `None` draws it from the OS.
    pub rng_seed: Option<u64>,
    /// A bearer token (`fjord user create`), sent on every call as `authorization: Bearer
    /// <token>`; `None` sends none.
    pub token: Option<Token>,
    /// TLS to the nodes (every address is then dialed as `https://`); `None`: plaintext,
    /// unless an address is given as `https://`, which needs this.
    pub tls: Option<ClientTls>,
}

/// Longest bearer token the client sends, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// A bearer token; its `Debug` does not show it (a config is logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Most bytes of a CA, certificate or key file [`ClientTls::from_files`] reads.
pub const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// TLS settings of a client, as PEM texts: the CA bundle that verifies the nodes'
/// certificates (which must name the host dialed), and, for mutual TLS (a node with
/// `--tls-client-auth required`, or to be known by a certificate), the client's certificate
/// and key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    /// The client's certificate chain and private key, PEM; both or neither.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA bundle `ca` and, if given, the certificate `cert` and key `key` (both or
    /// neither).
    pub fn from_files(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<ClientTls, ClientError> {
        let read = |p: &std::path::Path| -> Result<Vec<u8>, ClientError> {
            let bad = |e: String| ClientError::Config(format!("cannot read {}: {e}", p.display()));
            let len = std::fs::metadata(p).map_err(|e| bad(e.to_string()))?.len();
            if len > MAX_TLS_FILE_BYTES {
                return Err(bad(format!(
                    "{len} bytes, more than MAX_TLS_FILE_BYTES ({MAX_TLS_FILE_BYTES})"
                )));
            }
            std::fs::read(p).map_err(|e| bad(e.to_string()))
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(ClientError::Config(
                    "a TLS client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity,
        })
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_backoff_ms_initial: DEFAULT_RETRY_BACKOFF_MS_INITIAL,
            retry_backoff_ms_max: DEFAULT_RETRY_BACKOFF_MS_MAX,
            rng_seed: None,
            token: None,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// Checks every setting against its limit.
    pub fn validate(&self) -> Result<(), ClientError> {
        check_range(
            "request_timeout_ms",
            self.request_timeout_ms,
            1,
            MAX_REQUEST_TIMEOUT_MS,
        )?;
        check_range(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            1,
            MAX_REQUEST_TIMEOUT_MS,
        )?;
        check_range(
            "max_retries",
            self.max_retries.into(),
            0,
            MAX_RETRIES_LIMIT.into(),
        )?;
        check_range(
            "retry_backoff_ms_initial",
            self.retry_backoff_ms_initial,
            1,
            MAX_RETRY_BACKOFF_MS,
        )?;
        check_range(
            "retry_backoff_ms_max",
            self.retry_backoff_ms_max,
            self.retry_backoff_ms_initial,
            MAX_RETRY_BACKOFF_MS,
        )?;
        if let Some(Token(t)) = &self.token
            && (t.is_empty()
                || t.len() > MAX_TOKEN_BYTES
                || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ClientError::Config(format!(
                "the token must be 1 to {MAX_TOKEN_BYTES} visible ASCII characters (got {} bytes)",
                t.len()
            )));
        }
        Ok(())
    }
}

/// When the server acknowledges a produce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Acks {
    /// Once a majority of the partition's replicas has the batch on disk: never lost while a
    /// majority survives.
    #[default]
    Cp,
    /// Once the leader has the batch on its own disk: lost if that leader fails before a
    /// follower copied it.
    Ap,
}

impl From<Acks> for fjord_proto::v1::Acks {
    fn from(a: Acks) -> Self {
        match a {
            Acks::Cp => fjord_proto::v1::Acks::Cp,
            Acks::Ap => fjord_proto::v1::Acks::Ap,
        }
    }
}

/// Settings of a [`Producer`](crate::Producer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// When a produce counts as acknowledged.
    pub acks: Acks,
    /// How long a partition's batch waits for more records before it is sent, in ms.
    pub linger_ms: u64,
    /// A batch is sent once it holds this many encoded bytes (a single larger record is sent
    /// alone).
    pub max_batch_bytes: usize,
    /// A batch is sent once it holds this many records.
    pub max_batch_records: usize,
    /// Number batches with a producer id and sequence numbers so that retries never
    /// duplicate records. Without it, a retry after a timeout may append a batch twice.
    pub idempotent: bool,
    /// Batches of one partition sent and not yet acknowledged, at most (1 to
    /// [`MAX_IN_FLIGHT_BATCHES_LIMIT`]). More hide the round trip; sequence numbers keep
    /// them in order. Without `idempotent`, always 1.
    pub max_in_flight_batches: usize,
    /// Most records the producer holds (queued, batching or in flight); `send` waits when
    /// the producer is full.
    pub max_pending_records: usize,
    /// Most encoded bytes of records the producer holds; `send` waits when the producer is
    /// full, and refuses a single record larger than this.
    pub max_pending_bytes: usize,
    /// A stable name for this producer (Kafka's `transactional.id`), or `None`. Creating a
    /// producer with a name fences every earlier producer created with it, in this process
    /// or any other: the cluster refuses their batches ([`ClientError::ProducerFenced`]), so
    /// a restarted service instance can be sure its predecessor (a "zombie" that was paused
    /// or cut off) no longer writes. Needs `idempotent`, and a metadata majority when the
    /// producer first sends. A named producer whose batch fails for good (out of order, a
    /// full disk, a batch the server refused) does not move its later batches to a fresh
    /// producer id (that would escape the fencing): every later batch to that partition fails
    /// too, for as long as this instance lives. Create the producer again (a new instance:
    /// InitProducer gives the name a newer epoch, whose sequences start again).
    pub producer_name: Option<String>,
    /// How long a batch's sending is retried, in milliseconds (Kafka's `delivery.timeout.ms`):
    /// no retry begins later than this after the sending's first attempt, and its records
    /// then fail with the last attempt's error (an unknown outcome if an attempt may have
    /// appended it). Without it, `max_retries` attempts against a leader that swallows
    /// requests could take many minutes.
    pub delivery_timeout_ms: u64,
}

/// Default `delivery_timeout_ms` (Kafka's default).
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 120_000;
/// Largest accepted `delivery_timeout_ms`.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 3_600_000;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Cp,
            linger_ms: DEFAULT_LINGER_MS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            idempotent: true,
            max_in_flight_batches: DEFAULT_MAX_IN_FLIGHT_BATCHES,
            max_pending_records: DEFAULT_MAX_PENDING_RECORDS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            producer_name: None,
            delivery_timeout_ms: DEFAULT_DELIVERY_TIMEOUT_MS,
        }
    }
}

impl ProducerConfig {
    /// Checks every setting against its limit.
    pub fn validate(&self) -> Result<(), ClientError> {
        check_range("linger_ms", self.linger_ms, 0, MAX_LINGER_MS)?;
        check_range(
            "max_batch_bytes",
            self.max_batch_bytes as u64,
            1,
            MAX_BATCH_BYTES_LIMIT as u64,
        )?;
        check_range(
            "max_batch_records",
            self.max_batch_records as u64,
            1,
            MAX_BATCH_RECORDS_LIMIT as u64,
        )?;
        check_range(
            "max_in_flight_batches",
            self.max_in_flight_batches as u64,
            1,
            MAX_IN_FLIGHT_BATCHES_LIMIT as u64,
        )?;
        check_range(
            "max_pending_records",
            self.max_pending_records as u64,
            1,
            MAX_PENDING_RECORDS_LIMIT as u64,
        )?;
        check_range(
            "max_pending_bytes",
            self.max_pending_bytes as u64,
            1,
            MAX_PENDING_BYTES_LIMIT as u64,
        )?;
        check_range(
            "delivery_timeout_ms",
            self.delivery_timeout_ms,
            1,
            MAX_DELIVERY_TIMEOUT_MS,
        )?;
        if self.producer_name.is_some() && !self.idempotent {
            return Err(ClientError::InvalidArgument(
                "producer_name needs idempotent: a named producer is fenced by its epoch, which \
                 only idempotent batches carry"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Which replica answers a fetch, and how far it reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// The leader only, and only records a majority has: never a record that can vanish.
    #[default]
    Cp,
    /// Any replica (the leader first when known), up to what that replica knows to be
    /// committed: may lag, but answers while the leader is unreachable.
    Ap,
}

impl From<ReadMode> for fjord_proto::v1::ReadMode {
    fn from(r: ReadMode) -> Self {
        match r {
            ReadMode::Cp => fjord_proto::v1::ReadMode::ReadCp,
            ReadMode::Ap => fjord_proto::v1::ReadMode::ReadAp,
        }
    }
}

/// Settings of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Upper bound on record bytes returned (at least one batch comes back when one is
    /// available). 1 to [`MAX_FETCH_BYTES`].
    pub max_bytes: u32,
    /// How long the server waits when nothing at or after the offset is available yet;
    /// 0 answers at once. At most [`MAX_FETCH_WAIT_MS`].
    pub max_wait_ms: u32,
    /// Which replica answers.
    pub read: ReadMode,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
            max_wait_ms: DEFAULT_FETCH_MAX_WAIT_MS,
            read: ReadMode::Cp,
        }
    }
}

impl FetchOptions {
    /// Checks every setting against the server's limits.
    pub fn validate(&self) -> Result<(), ClientError> {
        check_range(
            "max_bytes",
            self.max_bytes.into(),
            1,
            MAX_FETCH_BYTES.into(),
        )?;
        check_range(
            "max_wait_ms",
            self.max_wait_ms.into(),
            0,
            MAX_FETCH_WAIT_MS.into(),
        )?;
        Ok(())
    }
}

fn check_range(name: &str, value: u64, min: u64, max: u64) -> Result<(), ClientError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ClientError::Config(format!(
            "{name} must be between {min} and {max}, got {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClientConfig::default().validate().unwrap();
        ProducerConfig::default().validate().unwrap();
        FetchOptions::default().validate().unwrap();
    }

    #[test]
    fn limits_are_enforced_and_named() {
        let c = ClientConfig {
            retry_backoff_ms_initial: 500,
            retry_backoff_ms_max: 100,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("retry_backoff_ms_max"), "{e}");

        let p = ProducerConfig {
            max_batch_records: 0,
            ..Default::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("max_batch_records")
        );

        let p = ProducerConfig {
            max_in_flight_batches: MAX_IN_FLIGHT_BATCHES_LIMIT + 1,
            ..Default::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("max_in_flight_batches")
        );

        let f = FetchOptions {
            max_bytes: MAX_FETCH_BYTES + 1,
            ..Default::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("max_bytes"));
    }
}
