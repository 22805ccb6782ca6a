//! `fjord consume`: prints records of one or all partitions of a topic, or (`--group`) of
//! the partitions a consumer group gives this member.
//!
//! Each partition has its own polling task (at most [`MAX_CONCURRENT_FETCHES`] fetches
//! outstanding at once), so a quiet partition's long poll never delays a busy one; records
//! reach the printer through a bounded queue. Within a partition records print in offset
//! order; partitions interleave. Retryable errors (an election, a node restarting) are
//! logged and polling goes on; a fatal one ends the command.

use std::sync::Arc;

use anyhow::Context;
use fjord_client::{
    Client, ClientError, ConsumedRecord, Consumer, FetchOptions, GroupConfig, OffsetReset,
    ReadMode, StartFrom,
};
use tokio::sync::{Semaphore, mpsc};

use crate::output::{Output, record_json};
use crate::signals::shutdown_signal;

/// Fetches in flight at once, whatever the partition count.
const MAX_CONCURRENT_FETCHES: usize = 16;
/// Fetched batches of records waiting to be printed.
const MAX_QUEUED_POLLS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadArg {
    /// From the partition leader, only records a majority has (never one that can vanish).
    Cp,
    /// From any replica (the leader first), up to what it knows is committed: may lag, but
    /// answers while the leader is unreachable.
    Ap,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Output: text prints each value as UTF-8 (invalid bytes shown as \u{FFFD}), \
    one per line. json prints one object per record: {\"partition\",\"offset\",\"key\",\"value\",\
    \"timestamp\",\"encoding\"}; key and value are strings when both are valid UTF-8 \
    (\"encoding\":\"utf8\"), otherwise both are base64 (\"encoding\":\"base64\"); key is null \
    when the record has none; timestamp is milliseconds since the Unix epoch.\n\n\
    Example:\n  fjord consume demo --from-beginning --count 10"
)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: all partitions of the topic).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the first stored record (default: only records produced from now on).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Start at the first record at or after this time, in every partition read (each
    /// partition's time index): RFC 3339 (2026-12-01T10:00:00Z), before now (-1h, -30m,
    /// -2d, -45s) or milliseconds since the epoch. A partition with no record that recent
    /// starts at its end.
    #[arg(long, value_parser = crate::time_arg::parse, allow_hyphen_values = true,
          conflicts_with_all = ["from_beginning", "offset", "group"])]
    pub from_time: Option<crate::time_arg::TimeArg>,
    /// Stop after this many records (default: run until Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Which replica answers.
    #[arg(long, value_enum, default_value_t = ReadArg::Cp)]
    pub read: ReadArg,
    /// How long the server holds a fetch open waiting for new records, in milliseconds
    /// (0 to 30000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=30_000))]
    pub max_wait_ms: u32,
    /// Upper bound on record bytes per fetch (at least one batch is always returned).
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..=64 * 1024 * 1024))]
    pub max_bytes: u32,
    /// Read as a member of this consumer group: the group shares the topic's partitions out
    /// among its members, and this member starts each at its committed offset and commits
    /// as it prints (at least once: a crash prints again what was printed since the last
    /// commit, never skips). Ctrl-C commits and leaves the group.
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// With --group: a static member's stable id; restarted with the same id, it gets its
    /// partitions back without a rebalance.
    #[arg(long, requires = "group")]
    pub instance_id: Option<String>,
}

pub async fn run(client: Client, out: Output, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = args.topic.clone();
    let options = FetchOptions {
        max_bytes: args.max_bytes,
        max_wait_ms: args.max_wait_ms,
        read: match args.read {
            ReadArg::Cp => ReadMode::Cp,
            ReadArg::Ap => ReadMode::Ap,
        },
    };
    if let Some(group) = args.group.clone() {
        return run_group(client, out, args, group, options).await;
    }
    let start = match (args.from_beginning, args.offset) {
        (true, _) => StartFrom::Beginning,
        (false, Some(o)) => StartFrom::Offset(o),
        (false, None) => StartFrom::End,
    };
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => {
            let n = client
                .partition_count(&topic)
                .await
                .with_context(|| format!("cannot consume topic {topic:?}"))?;
            (0..n).collect()
        }
    };

    let at = args.from_time.map(|t| t.resolve(crate::time_arg::now_ms()));
    let (tx, mut rx) = mpsc::channel(MAX_QUEUED_POLLS);
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES));
    for p in partitions {
        let start = match at {
            None => start,
            Some(t) => StartFrom::Offset(
                client
                    .list_offset(&topic, p, fjord_client::OffsetSpec::Time(t), options.read)
                    .await
                    .with_context(|| format!("cannot find time {t} in {topic}/{p}"))?
                    .or_end(),
            ),
        };
        let consumer = client.consumer(topic.clone(), p, start, options);
        tokio::spawn(poll_partition(consumer, tx.clone(), Arc::clone(&slots)));
    }
    drop(tx);

    let mut remaining = args.count;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let polled = tokio::select! {
            _ = &mut stop => return Ok(()),
            polled = rx.recv() => polled,
        };
        let records = match polled {
            // Every poller ended; only happens when each hit a fatal error it reported.
            None => return Ok(()),
            Some(Err((partition, e))) => {
                return Err(e).with_context(|| {
                    format!("cannot read partition {partition} of topic {topic:?}")
                });
            }
            Some(Ok(records)) => records,
        };
        for r in &records {
            out.emit(
                || String::from_utf8_lossy(&r.value).into_owned(),
                || record_json(r),
            )?;
            if let Some(n) = remaining.as_mut() {
                *n -= 1;
                if *n == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// `--group`: one group member, printing as it polls, committing as it goes.
async fn run_group(
    client: Client,
    out: Output,
    args: ConsumeArgs,
    group: String,
    fetch: FetchOptions,
) -> anyhow::Result<()> {
    let mut config = GroupConfig::new(group.clone(), vec![args.topic.clone()]);
    config.instance_id = args.instance_id.clone();
    config.fetch = fetch;
    config.client_id = "fjord-cli".into();
    config.reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut member = client.group_consumer(config)?;
    let mut remaining = args.count;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    'polling: loop {
        let polled = tokio::select! {
            _ = &mut stop => break 'polling,
            polled = member.poll() => polled,
        };
        let records = match polled {
            Ok(records) => records,
            Err(e) if e.is_retryable() => {
                eprintln!("warning: group {group:?}: {e}; retrying");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read as group {group:?}")),
        };
        for (i, r) in records.iter().enumerate() {
            out.emit(
                || String::from_utf8_lossy(&r.record.value).into_owned(),
                || record_json(&r.record),
            )?;
            if let Some(n) = remaining.as_mut() {
                *n -= 1;
                if *n == 0 {
                    // Whatever was fetched but not printed is not committed.
                    for rest in &records[i + 1..] {
                        member.unconsume(&rest.topic, rest.record.partition, rest.record.offset);
                    }
                    break 'polling;
                }
            }
        }
    }
    member
        .close()
        .await
        .with_context(|| format!("cannot commit and leave group {group:?}"))
}

type Polled = Result<Vec<ConsumedRecord>, (u32, ClientError)>;

/// Polls one partition until the printer goes away or a fatal error.
async fn poll_partition(mut consumer: Consumer, tx: mpsc::Sender<Polled>, slots: Arc<Semaphore>) {
    let partition = consumer.partition();
    loop {
        let polled = {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            consumer.poll().await
        };
        match polled {
            Ok(records) if records.is_empty() => {
                if tx.is_closed() {
                    return;
                }
            }
            Ok(records) => {
                if tx.send(Ok(records)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.is_retryable() => {
                // The client already retried with backoff; say so (a silent hang would
                // look like an empty topic) and keep following the partition.
                eprintln!("warning: cannot read partition {partition} yet, retrying: {e}");
                if tx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err((partition, e))).await;
                return;
            }
        }
    }
}
