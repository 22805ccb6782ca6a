//! `fjord bench produce|consume|e2e|group-consume|group-rebalance|group-idle`: load a
//! running cluster and measure it.
//!
//! - `produce`: producers send `--records` records as fast as the window allows (or one at
//!   a time with `--one-at-a-time`); latency is from the send call to the acknowledgement.
//! - `consume`: reads the topic's records from the beginning, every partition at once;
//!   latency is that of each fetch.
//! - `e2e`: producers and consumers run together; latency is from the producer's clock at
//!   the send call (carried in the value's first [`STAMP_BYTES`] bytes) to the consumer's
//!   receipt, so both ends must share a clock (same host, or synchronised clocks).
//! - `group-consume`: `consume` through a consumer group of `--members` members (each its own
//!   client and connections), committing as they go; measured once the group is settled
//!   (every partition owned once, fair shares), with `consume`'s read mode and fetch sizes so
//!   the two compare; latency is that of each member's poll.
//! - `group-rebalance`: the time from a member joining a settled group until it is settled
//!   again, `--repeats` times; min, median and max.
//! - `group-idle`: creates `--groups` groups with committed offsets and no members, then
//!   reports the CPU (% of one core) and RSS of the server processes given by `--pids`.
//!
//! (See `group` for what each group mode measures exactly.)
//!
//! A run stops at `--records` or `--duration-max-secs`, whichever comes first (or Ctrl-C),
//! then reports. Every latency sample is counted, in a bounded HdrHistogram (`histogram`), so
//! percentiles are exact to within 0.1%. The first failed record stops the run; the report
//! is printed and the command exits 1 with that error.
//!
//! # Layout
//! - `histogram`: the log-bucket latency histogram.
//! - `progress`: the progress line on standard error.
//! - `load`: producers and consumers, and what they count.
//! - `group`: the consumer group modes.
//! - `procfs`: CPU time and RSS of processes, from `/proc`.

mod group;
mod histogram;
mod load;
mod procfs;
mod progress;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fjord_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, ProducerConfig, ReadMode, StartFrom,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::consume::ReadArg;
use crate::output::{Output, to_json};
use crate::produce::AcksArg;
use crate::signals::shutdown_signal;

pub use load::STAMP_BYTES;

use self::histogram::Histogram;
use self::load::{Counters, ProduceLoad, Stamp};
use self::progress::Progress;

/// Topic the benchmarks use unless told otherwise.
const DEFAULT_TOPIC: &str = "fjord-bench";
/// How long `e2e` consumers may take to receive what was acknowledged once producers stop.
const E2E_DRAIN: Duration = Duration::from_secs(10);
/// Largest record value a benchmark sends (the server refuses what its topic limit does not
/// allow, 1 MiB by default).
const MAX_RECORD_SIZE: u64 = 16 * 1024 * 1024;
/// Most concurrent producers.
const MAX_PRODUCERS: u64 = 256;

pub const AFTER_HELP: &str = "\
Every run prints one report: text, or with --format json one object:
  {\"mode\":\"produce|consume|e2e|group-consume\",\"topic\",\"partitions\",
   \"records_produced\",\"records_consumed\",\"errors\",
   \"stopped_by\":\"count|time|signal|error\",\"elapsed_secs\",
   \"records_per_sec\",\"mb_per_sec\",
   \"latency_of\":\"ack|fetch|end_to_end|poll\",\"latency_samples\",
   \"latency_ms_p50\",\"latency_ms_p99\",\"latency_ms_p999\",\"latency_ms_max\",
   \"settings\":{\"records\",\"record_size_bytes\",\"keys\",\"partition\",\"producers\",
     \"in_flight_batches\",\"batch_max_bytes\",\"linger_ms\",\"acks\",\"read\",
     \"one_at_a_time\",\"duration_max_secs\",\"members\",\"group\",\"include_join\"}}
records_per_sec and mb_per_sec count what was produced (produce) or consumed (consume,
e2e, group-consume); MB are 1,000,000 bytes of record values. latency_ms_* are milliseconds
(to the microsecond, within 0.4%), null without samples; settings that do not apply to the
mode are null. The exit status is 1 if a record failed (the report is printed first).

group-consume reads what `consume` reads (from the start, or from the group's committed
offsets, to the high watermarks at the start), each record counted once, with the same
--read and fetch sizes; its clock starts once the group is settled (every partition owned
by exactly one member, each holding its fair share) unless --include-join.
group-rebalance prints
  {\"mode\":\"group-rebalance\",\"topic\",\"partitions\",\"group\",\"members\",\"repeats\",
   \"heartbeat_interval_ms\",\"max_wait_ms\",\"initial_settle_ms\",\"rebalance_ms\":[..],
   \"rebalance_ms_min\",\"rebalance_ms_median\",\"rebalance_ms_max\",\"leave_settle_ms\":[..]}
rebalance_ms: from the last member's creation until every partition is owned by exactly
one member and each holds its fair share, as the members see it after their polls (a view
lags by at most one fetch wait, max_wait_ms). A member learns of a change on its next
heartbeat (heartbeat_interval_ms, the server's --group-heartbeat-interval-ms), so expect
one to two intervals.
group-idle prints
  {\"mode\":\"group-idle\",\"topic\",\"partitions\",\"groups\",\"group_prefix\",
   \"offsets_per_group\",\"create_secs\",\"groups_per_sec\",\"pids\":[..],
   \"baseline\":{\"secs\",\"core_pct\",\"core_pct_per_pid\":[..]}|null,
   \"idle\":{..the same..},\"core_pct_added\",\"rss_kib_before\":[..],\"rss_kib_after\":[..],
   \"rss_bytes_per_group\",\"settle_secs\"}
core_pct is % of one core (100 = one core busy), from utime+stime in /proc/PID/stat;
baseline is measured before the groups are created, idle after them and --settle-secs;
rss_bytes_per_group is the growth of all the processes' VmRSS together, per group. Each
group ends as Kafka's idle groups do: committed offsets (one per partition), no members.

Examples (against `fjord dev`):
  fjord bench produce --records 200000 --record-size 100
  fjord bench produce --one-at-a-time --records 2000
  fjord bench consume --records 200000
  fjord bench e2e --records 100000 --producers 2 --format json
  fjord bench group-consume --records 200000 --members 3
  fjord bench group-rebalance --partitions 100 --members 10 --repeats 5
  fjord bench group-idle --groups 10000 --pids 4242,4243,4244   (bench/groups.sh runs all three)";

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as possible; latency from send to acknowledgement.
    #[command(after_help = AFTER_HELP)]
    Produce {
        #[command(flatten)]
        topic: TopicArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        produce: ProduceArgs,
        /// Send one record, wait for its acknowledgement, then the next (per producer):
        /// measures latency rather than throughput.
        #[arg(long)]
        one_at_a_time: bool,
    },
    /// Read a topic's records from the beginning; throughput, and latency per fetch.
    #[command(after_help = AFTER_HELP)]
    Consume {
        /// Topic to read.
        #[arg(long, default_value = DEFAULT_TOPIC)]
        topic: String,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Produce and consume at once; latency from the producer's send to the consumer.
    #[command(name = "e2e", after_help = AFTER_HELP)]
    EndToEnd {
        #[command(flatten)]
        topic: TopicArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        produce: ProduceArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Read a topic's records from the beginning through a consumer group; throughput, and
    /// latency per poll.
    #[command(name = "group-consume", after_help = AFTER_HELP)]
    GroupConsume {
        /// Topic to read.
        #[arg(long, default_value = DEFAULT_TOPIC)]
        topic: String,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        read: ReadArgs,
        /// Members of the group (1 to 100), each with its own client and connections.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=group::MAX_MEMBERS as i64))]
        members: u32,
        /// Group to read as [default: a fresh one per run]; one with committed offsets
        /// reads on from them.
        #[arg(long)]
        group: Option<String>,
        /// Start the clock when the members are created, so that joining and the first
        /// rebalance count, rather than once the group is settled.
        #[arg(long)]
        include_join: bool,
    },
    /// Time a member joining a settled group until every partition is owned again.
    #[command(name = "group-rebalance", after_help = AFTER_HELP)]
    GroupRebalance(group::RebalanceArgs),
    /// Create groups with committed offsets and no members, then measure the servers' CPU
    /// and memory while they sit idle.
    #[command(name = "group-idle", after_help = AFTER_HELP)]
    GroupIdle(group::IdleArgs),
}

#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    /// Topic to use; created if missing.
    #[arg(long, default_value = DEFAULT_TOPIC)]
    pub topic: String,
    /// Partitions of the topic when it is created (1 to 1024).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Replicas per partition when the topic is created (1 to the node count).
    #[arg(long, visible_alias = "replication", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub replication_factor: u32,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Records to produce (or consume); the run stops when they are done.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// The run stops after this many seconds if the records are not done by then.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_max_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Bytes of each record's value (at least 16 for e2e, whose values carry a timestamp).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=MAX_RECORD_SIZE))]
    pub record_size: u64,
    /// Spread records over this many distinct keys (partition by key hash). Default: no
    /// key, records spread round robin (sticky per batch).
    #[arg(long, conflicts_with = "partition", value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: Option<u64>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start each value with the record's index in the run, as INDEX_VALUE_BYTES (20)
    /// decimal digits, the rest filler: a reader can then tell which write of a key it holds
    /// (bench/compaction.sh checks that compaction kept each key's last). With one producer
    /// the indexes of a partition are written in order. `produce` only; --record-size at
    /// least 20.
    #[arg(long)]
    pub index_values: bool,
    /// Number the run's records from this index on (their keys and, with --index-values,
    /// their values): a second run with --index-base N continues one of N records, as if
    /// it went on.
    #[arg(long, default_value_t = 0)]
    pub index_base: u64,
    /// Concurrent producers (each its own producer id, batches and window).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_PRODUCERS))]
    pub producers: u64,
    /// Batches in flight per partition and producer (1 to 5: the server recognises a retry
    /// among a producer's last 5 batches).
    #[arg(long, default_value_t = fjord_client::config::DEFAULT_MAX_IN_FLIGHT_BATCHES as u64,
          value_parser = clap::value_parser!(u64).range(1..=fjord_client::config::MAX_IN_FLIGHT_BATCHES_LIMIT as u64))]
    pub in_flight: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, default_value_t = fjord_client::config::DEFAULT_MAX_BATCH_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=fjord_client::config::MAX_BATCH_BYTES_LIMIT as u64))]
    pub batch_max_bytes: u64,
    /// How long a batch waits for more records, in milliseconds [default: the client's
    /// default, 5; 0 with --one-at-a-time, where a record never has company to wait for].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=fjord_client::config::MAX_LINGER_MS))]
    pub linger_ms: Option<u64>,
    /// When a record counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::Cp)]
    pub acks: AcksArg,
}

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Which replica answers fetches.
    #[arg(long, value_enum, default_value_t = ReadArg::Cp)]
    pub read: ReadArg,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoppedBy {
    Count,
    Time,
    Signal,
    Error,
}

/// What the latencies measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyOf {
    Ack,
    Fetch,
    EndToEnd,
    /// A group member's poll: a fetch of each partition it owns, and any heartbeat or
    /// commit due.
    Poll,
}

#[derive(Debug, Serialize)]
struct Settings {
    records: u64,
    record_size_bytes: Option<u64>,
    keys: Option<u64>,
    partition: Option<u32>,
    producers: Option<u64>,
    in_flight_batches: Option<u64>,
    batch_max_bytes: Option<u64>,
    linger_ms: Option<u64>,
    acks: Option<&'static str>,
    read: Option<&'static str>,
    one_at_a_time: bool,
    duration_max_secs: u64,
    members: Option<u64>,
    group: Option<String>,
    include_join: Option<bool>,
}

/// The report: the documented JSON shape, field for field.
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    topic: String,
    partitions: u32,
    records_produced: u64,
    records_consumed: u64,
    errors: u64,
    stopped_by: StoppedBy,
    elapsed_secs: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    latency_of: LatencyOf,
    latency_samples: u64,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    latency_ms_p999: Option<f64>,
    latency_ms_max: Option<f64>,
    settings: Settings,
}

fn acks_name(a: AcksArg) -> &'static str {
    match a {
        AcksArg::Cp => "cp",
        AcksArg::Ap => "ap",
    }
}

fn read_name(r: ReadArg) -> &'static str {
    match r {
        ReadArg::Cp => "cp",
        ReadArg::Ap => "ap",
    }
}

fn read_mode(r: ReadArg) -> ReadMode {
    match r {
        ReadArg::Cp => ReadMode::Cp,
        ReadArg::Ap => ReadMode::Ap,
    }
}

/// The linger of a run: as given, else none for one record at a time, else the client's.
fn linger_ms(p: &ProduceArgs, one_at_a_time: bool) -> u64 {
    match (p.linger_ms, one_at_a_time) {
        (Some(ms), _) => ms,
        (None, true) => 0,
        (None, false) => fjord_client::config::DEFAULT_LINGER_MS,
    }
}

fn producer_config(p: &ProduceArgs, one_at_a_time: bool) -> ProducerConfig {
    ProducerConfig {
        acks: match p.acks {
            AcksArg::Cp => Acks::Cp,
            AcksArg::Ap => Acks::Ap,
        },
        linger_ms: linger_ms(p, one_at_a_time),
        max_batch_bytes: p.batch_max_bytes as usize,
        max_in_flight_batches: p.in_flight as usize,
        ..Default::default()
    }
}

fn settings(
    run: &RunArgs,
    produce: Option<&ProduceArgs>,
    read: Option<&ReadArgs>,
    one_at_a_time: bool,
) -> Settings {
    Settings {
        records: run.records,
        record_size_bytes: produce.map(|p| p.record_size),
        keys: produce.and_then(|p| p.keys),
        partition: produce.and_then(|p| p.partition),
        producers: produce.map(|p| p.producers),
        in_flight_batches: produce.map(|p| p.in_flight),
        batch_max_bytes: produce.map(|p| p.batch_max_bytes),
        linger_ms: produce.map(|p| linger_ms(p, one_at_a_time)),
        acks: produce.map(|p| acks_name(p.acks)),
        read: read.map(|r| read_name(r.read)),
        one_at_a_time,
        duration_max_secs: run.duration_max_secs,
        members: None,
        group: None,
        include_join: None,
    }
}

/// Checks what clap cannot, before anything is sent: `e2e` values carry a stamp.
fn check_record_size(produce: &ProduceArgs) -> anyhow::Result<()> {
    if produce.record_size < STAMP_BYTES as u64 {
        anyhow::bail!(
            "--record-size must be at least {STAMP_BYTES} for e2e: each value starts with a \
             {STAMP_BYTES}-byte send timestamp, got {}",
            produce.record_size
        );
    }
    Ok(())
}

/// Checks `--index-values` against the mode and the record size.
fn check_index_values(produce: &ProduceArgs, e2e: bool) -> anyhow::Result<()> {
    if !produce.index_values {
        return Ok(());
    }
    if e2e {
        anyhow::bail!("--index-values is for produce: e2e values start with a send timestamp");
    }
    if produce.record_size < load::INDEX_VALUE_BYTES as u64 {
        anyhow::bail!(
            "--record-size must be at least {} with --index-values: each value starts with \
             its record's index, got {}",
            load::INDEX_VALUE_BYTES,
            produce.record_size
        );
    }
    Ok(())
}

/// Checks `--partition` against the topic.
fn check_partition(produce: &ProduceArgs, topic: &str, partitions: u32) -> anyhow::Result<()> {
    match produce.partition {
        Some(p) if p >= partitions => anyhow::bail!(
            "--partition {p} does not exist: topic {topic:?} has {partitions} partitions"
        ),
        _ => Ok(()),
    }
}

/// The topic's partition count, creating the topic when it does not exist.
async fn ensure_topic(client: &Client, t: &TopicArgs) -> anyhow::Result<u32> {
    match client.partition_count(&t.topic).await {
        Ok(n) => Ok(n),
        Err(ClientError::NotFound(_)) => {
            match client
                .create_topic(&t.topic, t.partitions, t.replication_factor)
                .await
            {
                Ok(d) => Ok(d.partitions.len() as u32),
                // Created meanwhile (another bench, or a retried create that had worked).
                Err(ClientError::AlreadyExists(_)) => Ok(client.partition_count(&t.topic).await?),
                Err(e) => Err(e)
                    .with_context(|| format!("cannot create the benchmark topic {:?}", t.topic)),
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot look up topic {:?}", t.topic)),
    }
}

/// Stops the run at the time limit or on Ctrl-C, whichever comes first. With `drain`, the
/// time limit stops only the producers: consumers go on to receive what was acknowledged.
fn spawn_limits(
    counters: &Arc<Counters>,
    duration_max: Duration,
    drain: bool,
) -> tokio::task::JoinHandle<()> {
    let counters = Arc::clone(counters);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(duration_max) => {
                if drain {
                    counters.stop_producing(StoppedBy::Time)
                } else {
                    counters.stop(StoppedBy::Time)
                }
            }
            _ = shutdown_signal() => counters.stop(StoppedBy::Signal),
        }
    })
}

/// What one run measured, before it is reported.
struct Measured {
    mode: &'static str,
    topic: String,
    partitions: u32,
    latency_of: LatencyOf,
    settings: Settings,
    elapsed: Duration,
    /// Latencies in microseconds, or the error that stopped the run.
    latencies: anyhow::Result<Histogram>,
}

/// Runs a benchmark against the cluster at `brokers` (group members make clients of their
/// own there).
pub async fn run(
    brokers: Vec<String>,
    config: ClientConfig,
    out: Output,
    command: BenchCommand,
) -> anyhow::Result<()> {
    let client = Client::connect(brokers.clone(), config)?;
    let show_progress = std::io::stderr().is_terminal() && !out.is_json();
    let counters = Arc::new(Counters::default());
    let measured = match command {
        BenchCommand::Produce {
            topic,
            run,
            produce,
            one_at_a_time,
        } => {
            bench_produce(
                &client,
                &counters,
                &topic,
                &run,
                &produce,
                one_at_a_time,
                show_progress,
            )
            .await?
        }
        BenchCommand::Consume { topic, run, read } => {
            bench_consume(&client, &counters, topic, &run, &read, show_progress).await?
        }
        BenchCommand::EndToEnd {
            topic,
            run,
            produce,
            read,
        } => {
            bench_end_to_end(
                &client,
                &counters,
                &topic,
                &run,
                &produce,
                &read,
                show_progress,
            )
            .await?
        }
        BenchCommand::GroupConsume {
            topic,
            run,
            read,
            members,
            group,
            include_join,
        } => {
            let args = group::GroupConsumeArgs {
                topic,
                run: &run,
                read: &read,
                members,
                group,
                include_join,
            };
            group::bench_group_consume(&client, &brokers, &counters, args, show_progress).await?
        }
        BenchCommand::GroupRebalance(args) => {
            return group::bench_group_rebalance(&client, &brokers, out, args).await;
        }
        BenchCommand::GroupIdle(args) => {
            check_pids(&args.pids)?;
            return group::bench_group_idle(client, out, args, show_progress).await;
        }
    };
    let (report, error) = report(&counters, measured);
    out.emit(|| report_text(&report), || to_json(&report))?;
    error.map_or(Ok(()), Err)
}

/// Checks `--pids`: 1 to [`procfs::MAX_PIDS`] distinct positive pids.
fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    let distinct: std::collections::BTreeSet<u32> = pids.iter().copied().collect();
    anyhow::ensure!(
        !pids.is_empty() && pids.len() <= procfs::MAX_PIDS,
        "--pids takes 1 to {} processes (MAX_PIDS), got {}",
        procfs::MAX_PIDS,
        pids.len()
    );
    anyhow::ensure!(
        distinct.len() == pids.len() && !distinct.contains(&0),
        "--pids must be distinct positive process ids, got {pids:?}"
    );
    Ok(())
}

async fn bench_produce(
    client: &Client,
    counters: &Arc<Counters>,
    t: &TopicArgs,
    run: &RunArgs,
    produce: &ProduceArgs,
    one_at_a_time: bool,
    show_progress: bool,
) -> anyhow::Result<Measured> {
    check_index_values(produce, false)?;
    let partitions = ensure_topic(client, t).await?;
    check_partition(produce, &t.topic, partitions)?;
    let load = ProduceLoad::new(
        client,
        &t.topic,
        produce,
        producer_config(produce, one_at_a_time),
        run.records,
        one_at_a_time,
        None,
    );
    let limits = spawn_limits(counters, Duration::from_secs(run.duration_max_secs), false);
    let progress = Progress::start(
        "produce",
        run.records,
        counters.produced_handle(),
        show_progress,
    );
    let started = Instant::now();
    let latencies = load.run(Arc::clone(counters)).await;
    let elapsed = started.elapsed();
    progress.finish().await;
    limits.abort();
    Ok(Measured {
        mode: "produce",
        topic: t.topic.clone(),
        partitions,
        latency_of: LatencyOf::Ack,
        settings: settings(run, Some(produce), None, one_at_a_time),
        elapsed,
        latencies,
    })
}

async fn bench_consume(
    client: &Client,
    counters: &Arc<Counters>,
    topic: String,
    run: &RunArgs,
    read: &ReadArgs,
    show_progress: bool,
) -> anyhow::Result<Measured> {
    let partitions = client.partition_count(&topic).await.with_context(|| {
        format!("cannot read topic {topic:?} (`fjord bench produce --topic {topic}` fills it)")
    })?;
    let bounds = load::partition_bounds(client, &topic, partitions).await?;
    let available: u64 = bounds.iter().map(|(_, start, end)| end - start).sum();
    if available == 0 {
        anyhow::bail!(
            "topic {topic:?} has no records to read: `fjord bench produce --topic {topic}` writes some"
        );
    }
    let target = run.records.min(available);
    counters.set_target(target);
    let from_start = bounds
        .iter()
        .map(|(p, start, end)| (*p, StartFrom::Offset(*start), Some(*end)))
        .collect();
    let limits = spawn_limits(counters, Duration::from_secs(run.duration_max_secs), false);
    let progress = Progress::start("consume", target, counters.consumed_handle(), show_progress);
    let started = Instant::now();
    let latencies = load::consume(
        client,
        &topic,
        from_start,
        fetch_options(read_mode(read.read)),
        None,
        Arc::clone(counters),
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish().await;
    limits.abort();
    Ok(Measured {
        mode: "consume",
        topic,
        partitions,
        latency_of: LatencyOf::Fetch,
        settings: settings(run, None, Some(read), false),
        elapsed,
        latencies,
    })
}

async fn bench_end_to_end(
    client: &Client,
    counters: &Arc<Counters>,
    t: &TopicArgs,
    run: &RunArgs,
    produce: &ProduceArgs,
    read: &ReadArgs,
    show_progress: bool,
) -> anyhow::Result<Measured> {
    check_record_size(produce)?;
    check_index_values(produce, true)?;
    let partitions = ensure_topic(client, t).await?;
    check_partition(produce, &t.topic, partitions)?;
    // Consumers start at each partition's current end, before anything is produced.
    let from_end = load::partition_bounds(client, &t.topic, partitions)
        .await?
        .into_iter()
        .map(|(p, _, end)| (p, StartFrom::Offset(end), None))
        .collect();
    let stamp = Stamp::new();
    counters.set_target(run.records);
    let load = ProduceLoad::new(
        client,
        &t.topic,
        produce,
        producer_config(produce, false),
        run.records,
        false,
        Some(stamp),
    );
    let limits = spawn_limits(counters, Duration::from_secs(run.duration_max_secs), true);
    let progress = Progress::start(
        "e2e",
        run.records,
        counters.consumed_handle(),
        show_progress,
    );
    let started = Instant::now();
    let consumers = tokio::spawn({
        let (client, topic, counters) = (client.clone(), t.topic.clone(), Arc::clone(counters));
        let options = fetch_options(read_mode(read.read));
        async move { load::consume(&client, &topic, from_end, options, Some(stamp), counters).await }
    });
    let produced = load.run(Arc::clone(counters)).await;
    // Consumers now wait only for what was acknowledged, for a while.
    counters.set_target(counters.produced());
    let drain = tokio::spawn({
        let counters = Arc::clone(counters);
        async move {
            tokio::time::sleep(E2E_DRAIN).await;
            counters.stop(StoppedBy::Time);
        }
    });
    let consumed = consumers
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the consumers failed: {e}")));
    drain.abort();
    let elapsed = started.elapsed();
    progress.finish().await;
    limits.abort();
    Ok(Measured {
        mode: "e2e",
        topic: t.topic.clone(),
        partitions,
        latency_of: LatencyOf::EndToEnd,
        settings: settings(run, Some(produce), Some(read), false),
        elapsed,
        latencies: produced.and(consumed),
    })
}

/// The report of a run, and the error that stopped it, if any.
fn report(counters: &Counters, m: Measured) -> (Report, Option<anyhow::Error>) {
    let (latencies, error) = match m.latencies {
        Ok(h) => (h, None),
        Err(e) => (Histogram::default(), Some(e)),
    };
    let (count, bytes) = if m.mode == "produce" {
        (counters.produced(), counters.produced_bytes())
    } else {
        (counters.consumed(), counters.consumed_bytes())
    };
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let report = Report {
        mode: m.mode,
        topic: m.topic,
        partitions: m.partitions,
        records_produced: counters.produced(),
        records_consumed: counters.consumed(),
        errors: counters.errors(),
        stopped_by: counters.stopped_by().unwrap_or(StoppedBy::Count),
        elapsed_secs: round(secs, 3),
        records_per_sec: round(count as f64 / secs, 1),
        mb_per_sec: round(bytes as f64 / 1e6 / secs, 3),
        latency_of: m.latency_of,
        latency_samples: latencies.count(),
        latency_ms_p50: ms(latencies.quantile(0.5)),
        latency_ms_p99: ms(latencies.quantile(0.99)),
        latency_ms_p999: ms(latencies.quantile(0.999)),
        latency_ms_max: ms(latencies.max()),
        settings: m.settings,
    };
    (report, error)
}

/// Microseconds as milliseconds, to the microsecond.
fn ms(micros: Option<u64>) -> Option<f64> {
    micros.map(|us| us as f64 / 1_000.0)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

fn fetch_options(read: ReadMode) -> FetchOptions {
    FetchOptions {
        // Long polls end early when records arrive; short enough that a stopped run ends.
        max_wait_ms: 200,
        read,
        ..Default::default()
    }
}

fn report_text(r: &Report) -> String {
    let count = if r.mode == "produce" {
        r.records_produced
    } else {
        r.records_consumed
    };
    let stopped_by = match r.stopped_by {
        StoppedBy::Count => "count",
        StoppedBy::Time => "time limit",
        StoppedBy::Signal => "signal",
        StoppedBy::Error => "error",
    };
    let mut s = format!(
        "{}: {count} records in {:.2} s: {:.0} records/s, {:.2} MB/s (topic {}, {} partitions; stopped by {stopped_by})",
        r.mode, r.elapsed_secs, r.records_per_sec, r.mb_per_sec, r.topic, r.partitions,
    );
    if r.mode == "e2e" && r.records_produced != r.records_consumed {
        s.push_str(&format!(
            "\nconsumers received {} of the {} acknowledged records",
            r.records_consumed, r.records_produced
        ));
    }
    let what = match r.latency_of {
        LatencyOf::Ack => "send to acknowledgement",
        LatencyOf::Fetch => "per fetch",
        LatencyOf::EndToEnd => "send to receipt",
        LatencyOf::Poll => "per member poll",
    };
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    s.push_str(&format!(
        "\nlatency ({what}, ms): p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        f(r.latency_ms_p50),
        f(r.latency_ms_p99),
        f(r.latency_ms_p999),
        f(r.latency_ms_max),
        r.latency_samples
    ));
    if r.errors > 0 {
        s.push_str(&format!("\nerrors: {}", r.errors));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_distinct_positive_and_bounded() {
        assert!(check_pids(&[11, 12, 13]).is_ok());
        assert!(check_pids(&[]).is_err());
        assert!(check_pids(&[11, 11]).is_err());
        assert!(check_pids(&[0]).is_err());
        let many: Vec<u32> = (1..=procfs::MAX_PIDS as u32 + 1).collect();
        assert!(check_pids(&many).is_err());
        assert!(check_pids(&many[..procfs::MAX_PIDS]).is_ok());
    }
}
