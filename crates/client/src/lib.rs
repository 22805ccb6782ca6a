//! fjord's Rust client: topic administration, an idempotent batching producer, and fetch
//! with a simple single-partition consumer, all leader-aware.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fjord_client::ClientError> {
//! use fjord_client::{Client, ClientConfig, FetchOptions, ProducerConfig, ProducerRecord, StartFrom};
//!
//! let client = Client::connect(vec!["127.0.0.1:7101".into()], ClientConfig::default())?;
//! client.create_topic("demo", 3, 3).await?;
//! let producer = client.producer("demo", ProducerConfig::default())?;
//! let at = producer.send(ProducerRecord::new("hello").with_key("k")).await?;
//! let mut consumer = client.consumer("demo", at.partition, StartFrom::Beginning, FetchOptions::default());
//! let records = consumer.poll().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`ClientConfig`], [`ProducerConfig`], [`FetchOptions`] and their limits.
//! - [`error`]: [`ClientError`], retryable or fatal, and the classification of gRPC statuses.
//! - `retry`: the pure retry decision (bounded attempts, jittered exponential backoff,
//!   immediate retries at a hinted leader).
//! - [`metadata`]: plain views of the cluster ([`TopicDescription`], [`ClusterMetadata`],
//!   a topic's settings: [`TopicSettings`], [`EffectiveSettings`]), converted from the wire
//!   types in one place, and the client's metadata cache.
//! - `client`: [`Client`]: channels, leader-aware calls, admin operations. It imports no
//!   other module below: `producer` and `consumer` add their own `impl Client` blocks
//!   ([`Client::producer`], [`Client::fetch`], [`Client::consumer`]), so dependencies run one
//!   way.
//! - [`producer`]: [`Producer`]: partition choice, per-partition batching, idempotence, named
//!   producers and their fencing.
//! - `sequencer`: the pure rules of a partition's window of batches in flight: sequences,
//!   retries, sequence gaps, moving to a new producer id.
//! - [`consumer`]: fetch, decoding of fetched batches, and [`Consumer`].
//! - [`group`]: [`GroupConsumer`], a consumer group member (server-side assignment, commits
//!   fenced by member epoch, at-least-once auto-commit), and the group admin calls.
//!
//! # Guarantees
//! - Every call has a deadline, every retry loop a bound, every queue a size.
//! - A [`ClientError::Timeout`] means the outcome is unknown, not that nothing happened.
//! - With `ProducerConfig::idempotent` (the default) retried batches are never appended
//!   twice; batches of a partition are appended in enqueue order, with up to
//!   `ProducerConfig::max_in_flight_batches` of them in flight at once.
//! - Fetched records passed their batch's CRC-32C check; corruption is an error.

mod client;
pub mod config;
pub mod consumer;
pub mod error;
pub mod group;
pub mod health;
pub mod metadata;
pub mod offsets;
pub mod producer;
mod retry;
pub mod security;
mod sequencer;

pub use client::{
    Client, Connect, MAX_CACHED_CHANNELS, MAX_HELD_HEARTBEATS, MAX_MESSAGE_BYTES, TcpConnect,
};
pub use config::{Acks, ClientConfig, ClientTls, FetchOptions, ProducerConfig, ReadMode, Token};
pub use consumer::{ConsumedRecord, Consumer, FetchResult, StartFrom};
pub use error::{ClientError, LeaderHint};
pub use group::{
    GroupConfig, GroupConfigChange, GroupConsumer, GroupDescription, GroupListing, GroupRecord,
    GroupSettings, OffsetReset, ResetSpec, SettingChange,
};
pub use metadata::{
    ClusterMetadata, ConfigEntry, EffectiveSettings, PartitionDescription, TOPIC_CONFIG_KEYS,
    TopicDescription, TopicSettings,
};
pub use offsets::{ListedOffset, OffsetSpec};
pub use producer::{Delivery, Producer, ProducerRecord, RecordMetadata};
pub use security::{AclEntry, CreatedUser};
