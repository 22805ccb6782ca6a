//! `fjord-jepsen`: runs fjord clusters under faults and says what each mode lost.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use fjord_harness::fault::{FaultKind, parse_faults};
use fjord_jepsen::compaction::CompactionOptions;
use fjord_jepsen::report::{RunSummary, cap_table};
use fjord_jepsen::run::{RetentionOptions, RunOptions, RunOutput, analyse, run};

#[derive(Parser)]
#[command(name = "fjord-jepsen", about = "Fault-injection harness for fjord")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run in one mode (`--acks`, `--read`).
    Run(Common),
    /// A CP run and an AP run on the same seed and fault schedule, and the table comparing
    /// them (`cap.md`).
    Cap(Common),
    /// Prints the CP/AP comparison table of finished runs (their `report.json`).
    Table {
        /// Run directories.
        dirs: Vec<PathBuf>,
    },
    /// Checks a recorded run directory again and prints its report.
    Check {
        /// A run directory (holding `run.json` and `history.jsonl`).
        dir: PathBuf,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Seed of the fault schedule and of the workload's choices (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes in the cluster (3 to 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Seconds of workload under faults (the last `--recovery-secs` are fault-free).
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    #[arg(long, default_value_t = 8)]
    recovery_secs: u64,
    /// Faults: comma-separated kinds or groups (all, none, partition or network, process, clock,
    /// disk).
    #[arg(long, default_value = "partition,process,clock")]
    faults: String,
    /// Acknowledgement mode: cp or ap.
    #[arg(long, default_value = "cp")]
    acks: String,
    /// Read mode: cp or ap.
    #[arg(long, default_value = "cp")]
    read: String,
    /// Concurrent producing processes.
    #[arg(long, default_value_t = 6)]
    producers: u32,
    #[arg(long, default_value_t = 1)]
    consumers_per_partition: u32,
    /// Processes writing as named producers that fence their own earlier instances and let
    /// the fenced one go on writing (checked by the `zombie` rule).
    #[arg(long, default_value_t = 1)]
    fencing_writers: u32,
    /// Members of the consumer group that reads the topic beside the consumers, crashing and
    /// pausing on a seeded plan (checked by the group rules: poll-skip, nonmonotonic-poll,
    /// duplicate-delivery, committed-too-far, fenced-commit, lost-write); 0 runs none.
    #[arg(long, default_value_t = fjord_harness::group::GROUP_MEMBERS)]
    group_members: u32,
    /// An operation without an answer after this long is recorded as unknown (info).
    #[arg(long, default_value_t = 5_000)]
    op_timeout_ms: u64,
    /// The log lifecycle: a short retention on the run's topic (`--retention-ms`), a process
    /// issuing DeleteRecords below acknowledged offsets, readers moving to the log start,
    /// the nemesis deleting across a follower held down (`follower-behind-purge`) and as a
    /// power loss strikes, and every replica's log start compared once quiet (checked by
    /// expired/lost, below-log-start, log-start-regressed, diverged-start). Runs no
    /// consumer group.
    #[arg(long)]
    retention: bool,
    /// The topic's retention_ms with `--retention`.
    #[arg(long, default_value_t = fjord_harness::retention::DEFAULT_RETENTION_MS)]
    retention_ms: u64,
    /// The topic's retention_bytes with `--retention` (per partition; 0: none by size).
    #[arg(long, default_value_t = fjord_harness::retention::DEFAULT_RETENTION_BYTES)]
    retention_bytes: u64,
    /// With `--retention`: no deleter process, so that partitions fill up to their
    /// retention_bytes (with a long `--retention-ms`, retention by size does the deleting).
    #[arg(long)]
    no_deleter: bool,
    /// TLS on: a CA and a node certificate are made for the run (in `<out>/tls/`), every
    /// node serves TLS on both ports (mutual TLS between nodes) and the clients trust the CA.
    /// The probes that dial one node directly (`--retention`'s replica bounds) trust it too.
    #[arg(long)]
    tls: bool,
    /// Compaction: the run's topic gets cleanup_policy=compact (compact,delete with
    /// `--retention`) and a short `--min-compaction-lag-ms`; every record carries a key from
    /// a small key space (50 per partition); power losses strike right after a node starts
    /// a compaction pass (checked by compacted / compacted-latest: a record missing from the
    /// final read must be superseded by a later one of its key). Runs no consumer group.
    #[arg(long)]
    compaction: bool,
    /// The topic's min_compaction_lag_ms with `--compaction`.
    #[arg(long, default_value_t = fjord_harness::compaction::MIN_COMPACTION_LAG_MS)]
    min_compaction_lag_ms: u64,
    /// Where the run's files go (default: jepsen/runs/<time>-<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The test network: auto (namespaces when possible, else the loopback fault proxy),
    /// netns or proxy.
    #[arg(long, default_value = "auto")]
    network: String,
    /// The fjord binary (default: next to this one).
    #[arg(long)]
    fjord_bin: Option<PathBuf>,
    /// The fjord-lazyfs binary (default: next to this one), needed by disk faults.
    #[arg(long)]
    lazyfs_bin: Option<PathBuf>,
}

fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(name);
    p.exists().then_some(p)
}

impl Common {
    fn options(&self, label: &str) -> Result<RunOptions> {
        let mut faults = parse_faults(&self.faults).map_err(anyhow::Error::msg)?;
        if self.retention {
            // Under clock faults the rule by time must allow for a node's clock minutes
            // ahead, which excuses nearly every deletion: retention runs leave them out, so
            // that the rule stays sharp (the runs without retention have them).
            let dropped: Vec<String> = [FaultKind::ClockJump, FaultKind::ClockSkew]
                .into_iter()
                .filter(|k| faults.remove(k))
                .map(|k| k.to_string())
                .collect();
            if !dropped.is_empty() {
                eprintln!(
                    "note: --retention leaves out {} (the rule by time would excuse any deletion)",
                    dropped.join(", ")
                );
            }
        }
        if !(3..=5).contains(&self.nodes) {
            bail!("--nodes must be 3, 4 or 5, not {}", self.nodes);
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        let fjord_bin = match &self.fjord_bin {
            Some(p) => p.clone(),
            None => sibling("fjord").context(
                "no fjord binary next to fjord-jepsen: build it (cargo build -p fjord-cli) or pass --fjord-bin",
            )?,
        };
        let needs_lazy = faults.iter().any(|k: &FaultKind| k.needs_lazy_disk());
        let lazyfs_bin =
            match &self.lazyfs_bin {
                Some(p) => Some(p.clone()),
                None if needs_lazy => Some(sibling("fjord-lazyfs").context(
                    "disk faults need fjord-lazyfs next to fjord-jepsen, or --lazyfs-bin",
                )?),
                None => None,
            };
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| default_out(seed))
            .join(label);
        Ok(RunOptions {
            seed,
            nodes: self.nodes,
            partitions: self.partitions,
            replication_factor: self.nodes.min(3) as u32,
            duration_secs: self.duration_secs,
            faults,
            acks: self.acks.clone(),
            read: self.read.clone(),
            producers: self.producers,
            consumers_per_partition: self.consumers_per_partition,
            fencing_writers: self.fencing_writers,
            group_members: self.group_members,
            op_timeout_ms: self.op_timeout_ms,
            recovery_secs: self.recovery_secs,
            out_dir: out,
            fjord_bin,
            lazyfs_bin,
            netns_prefix: fjord_jepsen::net::unique_prefix(),
            network: self.network.clone(),
            retention: self.retention.then_some(RetentionOptions {
                retention_ms: self.retention_ms,
                retention_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
                no_deleter: self.no_deleter,
            }),
            tls: self.tls,
            compaction: self.compaction.then_some(CompactionOptions {
                min_compaction_lag_ms: self.min_compaction_lag_ms,
            }),
        })
    }
}

/// Where a run's (or a `cap`'s runs') directory goes without `--out`: `jepsen/runs/<time>-<seed>`.
fn default_out(seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("jepsen/runs/{stamp}-{seed}"))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let valid = match cli.command {
        Cmd::Run(common) => {
            let label = format!("{}-{}", common.acks, common.read);
            let options = common.options(&label)?;
            let summary = one_run(options)?;
            summary.is_valid()
        }
        Cmd::Cap(common) => {
            let mut summaries = Vec::new();
            let seed = common.seed.unwrap_or_else(rand::random);
            // Both modes' runs in one directory, with the table beside them.
            let root = common.out.clone().unwrap_or_else(|| default_out(seed));
            for mode in ["cp", "ap"] {
                let mut c = common.clone();
                c.acks = mode.into();
                c.read = mode.into();
                c.seed = Some(seed);
                c.out = Some(root.clone());
                let options = c.options(&format!("{mode}-{mode}"))?;
                summaries.push(one_run(options)?);
            }
            let table = cap_table(&summaries);
            println!("{table}");
            std::fs::create_dir_all(&root)?;
            std::fs::write(root.join("cap.md"), &table)?;
            eprintln!("fjord-jepsen: wrote {}", root.join("cap.md").display());
            summaries.iter().all(RunSummary::is_valid)
        }
        Cmd::Table { dirs } => {
            let mut summaries = Vec::new();
            for dir in dirs {
                let path = dir.join("report.json");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let summary: RunSummary = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                summaries.push(summary);
            }
            println!("{}", cap_table(&summaries));
            true
        }
        Cmd::Check { dir } => {
            let text = std::fs::read_to_string(dir.join("run.json"))
                .with_context(|| format!("reading {}", dir.join("run.json").display()))?;
            let mut out: RunOutput = serde_json::from_str(&text)?;
            out.history = dir.join("history.jsonl");
            out.options.out_dir = dir.clone();
            let summary = analyse(&out)?;
            println!("{}", summary.to_text());
            summary.is_valid()
        }
    };
    if !valid {
        eprintln!("fjord-jepsen: anomalies that break the run's guarantees were found");
        std::process::exit(1);
    }
    Ok(())
}

fn one_run(options: RunOptions) -> Result<RunSummary> {
    eprintln!(
        "fjord-jepsen: seed {} ({} nodes, acks {}, read {}, faults {}) -> {}",
        options.seed,
        options.nodes,
        options.acks,
        options.read,
        options
            .faults
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        options.out_dir.display()
    );
    let out = run(options)?;
    let summary = analyse(&out)?;
    if out.interrupted {
        println!("{}", summary.to_text());
        eprintln!("fjord-jepsen: interrupted before the final read; the verdict does not count");
        std::process::exit(2);
    }
    println!("{}", summary.to_text());
    if let Some(hits) = &out.compaction_hits {
        println!("{}", hits.describe());
    }
    for note in &out.notes {
        println!("note: {note}");
    }
    println!("files: {}", out.options.out_dir.display());
    Ok(summary)
}
