//! `fjord produce`: one record per line of standard input, printing where each landed.
//!
//! Lines are read and enqueued as fast as the producer's budgets allow, so batches fill up;
//! acknowledgements are printed in input order by a second task. The first record that fails
//! fatally stops the command with its error.

use anyhow::Context;
use bytes::Bytes;
use fjord_client::{Acks, Client, Delivery, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::output::{Output, to_json};

/// Longest accepted input line, in bytes (the server's default record limit is 1 MiB).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;
/// Records enqueued but not yet printed; the producer's own budgets bound memory too.
const MAX_UNPRINTED_RECORDS: usize = 10_000;

/// The JSON line printed per acknowledged record.
#[derive(serde::Serialize)]
struct Ack {
    partition: u32,
    offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcksArg {
    /// Acknowledged once a majority of replicas has the record on disk.
    Cp,
    /// Acknowledged once the leader has it on disk (lost if the leader fails before a
    /// follower copies it).
    Ap,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each line of standard input becomes one record (the line without its \
    newline is the value). Prints the partition and offset of each record as it is \
    acknowledged (json: {\"partition\",\"offset\"}).\n\n\
    Example:\n  printf 'a\\nb\\n' | fjord produce demo --key user-1"
)]
pub struct ProduceArgs {
    /// Topic to produce to.
    pub topic: String,
    /// When a record counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::Cp)]
    pub acks: AcksArg,
    /// Key of every record (records with the same key go to the same partition).
    #[arg(long)]
    pub key: Option<String>,
    /// Send every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<u32>,
    /// How long a batch waits for more lines before it is sent, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// A stable name for this producer (Kafka's transactional.id): starting a producer with
    /// a name fences every earlier one started with it, whose writes are then refused.
    #[arg(long)]
    pub producer_name: Option<String>,
}

pub async fn run(client: Client, out: Output, args: ProduceArgs) -> anyhow::Result<()> {
    let producer = start_producer(&client, &args).await?;
    let (deliveries, acknowledged) = mpsc::channel::<(u64, Delivery)>(MAX_UNPRINTED_RECORDS);
    let printer = tokio::spawn(print_acks(out, acknowledged));
    let key = args.key.map(Bytes::from);
    let read = enqueue_lines(&producer, key, args.partition, &deliveries).await;
    drop(deliveries);
    // Send the last partial batches now rather than after their linger.
    producer.flush().await;
    printer.await.context("the output task failed")??;
    read
}

/// The producer for `args`, once the topic is known to exist (checked before any input is
/// read) and, for a named producer, its earlier instances fenced.
async fn start_producer(client: &Client, args: &ProduceArgs) -> anyhow::Result<Producer> {
    client
        .partition_count(&args.topic)
        .await
        .with_context(|| format!("cannot produce to topic {:?}", args.topic))?;
    let producer = client.producer(
        args.topic.clone(),
        ProducerConfig {
            acks: match args.acks {
                AcksArg::Cp => Acks::Cp,
                AcksArg::Ap => Acks::Ap,
            },
            linger_ms: args.linger_ms,
            producer_name: args.producer_name.clone(),
            ..Default::default()
        },
    )?;
    if args.producer_name.is_some() {
        // Fence the earlier instances now, before the first line is read.
        producer
            .init()
            .await
            .context("cannot initialise the named producer")?;
    }
    Ok(producer)
}

/// Prints each record's partition and offset once acknowledged, in input order; stops at
/// the first record that was not written, with its error.
async fn print_acks(
    out: Output,
    mut acknowledged: mpsc::Receiver<(u64, Delivery)>,
) -> anyhow::Result<()> {
    while let Some((line, delivery)) = acknowledged.recv().await {
        let at = delivery
            .await
            .with_context(|| format!("the record from input line {line} was not written"))?;
        out.emit(
            || format!("partition {} offset {}", at.partition, at.offset),
            || {
                to_json(&Ack {
                    partition: at.partition,
                    offset: at.offset,
                })
            },
        )?;
    }
    Ok(())
}

/// Enqueues one record per line of standard input (without its line ending), until the
/// input ends or the printer stops.
async fn enqueue_lines(
    producer: &Producer,
    key: Option<Bytes>,
    partition: Option<u32>,
    deliveries: &mpsc::Sender<(u64, Delivery)>,
) -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = (&mut stdin)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .await
            .context("cannot read standard input")?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if n as u64 > MAX_LINE_BYTES {
            anyhow::bail!("input line {line_no} is longer than {MAX_LINE_BYTES} bytes");
        }
        let mut record = ProducerRecord::new(Bytes::copy_from_slice(&buf));
        record.key = key.clone();
        record.partition = partition;
        let delivery = producer
            .enqueue(record)
            .await
            .with_context(|| format!("cannot send input line {line_no}"))?;
        if deliveries.send((line_no, delivery)).await.is_err() {
            // The printer stopped at a failed record; its error is the one to report.
            return Ok(());
        }
    }
}
