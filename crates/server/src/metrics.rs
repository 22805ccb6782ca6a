//! The node's Prometheus metrics (served by [`crate::metrics_http`] on `--metrics-listen`).
//!
//! Two kinds:
//! - **Recorded** on the request paths: produce and fetch latency histograms, records and
//!   bytes in and out. Atomics, or one short uncontended lock per request for a histogram;
//!   nothing per record, no allocation: the label combinations are fixed and created up
//!   front.
//! - **Computed at scrape time** from state the node keeps anyway ([`Snapshot::take`]):
//!   partitions without a leader, under-replicated, quiet and hibernated; Raft commit lag;
//!   the storage writer's fsync and batch histograms ([`fjord_storage::stats`]); election
//!   counters ([`fjord_raft::quiesce::Transitions`]); consumer group lag in records and in
//!   seconds (one bounded read of this node's store per lagging partition); disk space.
//!
//! Names start with `fjord_`, are in base units (seconds, bytes) and end in `_total`,
//! `_seconds` or `_bytes` where that applies; labels are few and bounded (a consumer group
//! label, the only open-ended one, is bounded by [`MAX_GROUP_LAG_SERIES`]). The list with
//! meanings is in docs/architecture.md ("Metrics, health and logs").
//!
//! The exposition is Prometheus' text format 0.0.4 ([`to_prometheus_text`]), which every
//! Prometheus version scrapes and `promtool check metrics` reads: prometheus-client writes
//! OpenMetrics, which names a counter's family without its `_total` suffix.

use std::time::Duration;

use fjord_storage::stats::HistogramSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::node::Node;
use crate::wire::{Acks, ReadMode};

/// Consumer groups with a lag series of their own, at most, per node; the lag of the others
/// is summed into one series labelled [`OTHER_GROUPS`].
pub const MAX_GROUP_LAG_SERIES: usize = 1_000;
/// The `group` label of the lag of the groups past [`MAX_GROUP_LAG_SERIES`].
pub const OTHER_GROUPS: &str = "__other";
/// Partitions whose oldest unconsumed record one scrape reads, at most, for the lag in
/// seconds (each read is one batch of this node's store; the partitions past it are left
/// out of that scrape's lag in seconds).
pub const MAX_LAG_READS_PER_SCRAPE: usize = 256;
/// A follower whose log is more than this many entries behind its leader's makes the
/// partition under-replicated (as does a follower that is missing, a learner, or suspected).
pub const UNDER_REPLICATED_LAG_ENTRIES: u64 = 1_000;

/// Upper bounds of the request latency buckets, in seconds: 250 µs to 10 s (a produce's
/// default timeout).
const REQUEST_SECONDS_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A request's labels: its mode (`acks` of a produce, `read` of a fetch) and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ProduceLabels {
    acks: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct FetchLabels {
    read: &'static str,
    outcome: &'static str,
}

/// How a request ended, for its latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered without an error (a produce: every batch of it appended).
    Ok,
    /// Refused or failed, wholly or (a produce) for one of its batches.
    Error,
}

const OUTCOMES: [(Outcome, &str); 2] = [(Outcome::Ok, "ok"), (Outcome::Error, "error")];

fn mode_index(cp: bool) -> usize {
    usize::from(!cp)
}

fn outcome_index(o: Outcome) -> usize {
    usize::from(o == Outcome::Error)
}

/// The metrics recorded on the request paths, and their registry.
pub struct Metrics {
    registry: Registry,
    /// By `[cp, ap][ok, error]`: handles into the registered families, so that a request
    /// finds its histogram without a lookup.
    produce: [[Histogram; 2]; 2],
    fetch: [[Histogram; 2]; 2],
    records_in: Counter,
    bytes_in: Counter,
    records_out: Counter,
    bytes_out: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let histogram = || Histogram::new(REQUEST_SECONDS_BUCKETS.iter().copied());
        let produce_family =
            Family::<ProduceLabels, Histogram>::new_with_constructor(histogram as fn() -> _);
        let fetch_family =
            Family::<FetchLabels, Histogram>::new_with_constructor(histogram as fn() -> _);
        let produce = [("cp", true), ("ap", false)].map(|(acks, _)| {
            OUTCOMES.map(|(_, outcome)| {
                produce_family.get_or_create_owned(&ProduceLabels { acks, outcome })
            })
        });
        let fetch = [("cp", true), ("ap", false)].map(|(read, _)| {
            OUTCOMES.map(|(_, outcome)| {
                fetch_family.get_or_create_owned(&FetchLabels { read, outcome })
            })
        });
        registry.register(
            "fjord_produce_request_duration_seconds",
            "Produce requests answered by this node, by acks (cp, ap) and outcome (ok: every \
             batch appended; error: the request or one of its batches failed), from the \
             request decoded to its answer",
            produce_family,
        );
        registry.register(
            "fjord_fetch_request_duration_seconds",
            "Fetch requests answered by this node, by read mode (cp, ap) and outcome, long \
             polls included",
            fetch_family,
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let records_in = counter(
            &mut registry,
            "fjord_produced_records",
            "Records appended by produces this node led (retries of appended batches not \
             counted again)",
        );
        let bytes_in = counter(
            &mut registry,
            "fjord_produced_bytes",
            "Bytes of the record batches counted in fjord_produced_records_total",
        );
        let records_out = counter(
            &mut registry,
            "fjord_fetched_records",
            "Records this node returned to fetches",
        );
        let bytes_out = counter(
            &mut registry,
            "fjord_fetched_bytes",
            "Bytes of the record batches counted in fjord_fetched_records_total",
        );
        Metrics {
            registry,
            produce,
            fetch,
            records_in,
            bytes_in,
            records_out,
            bytes_out,
        }
    }

    /// A produce request answered after `took`.
    pub fn produce_done(&self, acks: Acks, outcome: Outcome, took: Duration) {
        self.produce[mode_index(acks == Acks::Cp)][outcome_index(outcome)]
            .observe(took.as_secs_f64());
    }

    /// A fetch request answered after `took`.
    pub fn fetch_done(&self, read: ReadMode, outcome: Outcome, took: Duration) {
        self.fetch[mode_index(read == ReadMode::Cp)][outcome_index(outcome)]
            .observe(took.as_secs_f64());
    }

    /// A batch of `records` records, `bytes` bytes, appended by a produce this node led.
    pub fn appended(&self, records: u64, bytes: u64) {
        self.records_in.inc_by(records);
        self.bytes_in.inc_by(bytes);
    }

    /// `records` records, `bytes` bytes, returned to a fetch.
    pub fn fetched(&self, records: u64, bytes: u64) {
        self.records_out.inc_by(records);
        self.bytes_out.inc_by(bytes);
    }

    /// Every metric of `node`, in Prometheus' text format.
    pub fn render(&self, node: &Node) -> String {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(Snapshot::take(node)));
        let mut open_metrics = String::new();
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut open_metrics, &scraped);
        to_prometheus_text(&open_metrics)
    }
}

/// Rewrites prometheus-client's OpenMetrics text as Prometheus' text format 0.0.4: a
/// counter's `# HELP` and `# TYPE` name its samples' `_total` name, and the `# UNIT` and
/// `# EOF` lines (which 0.0.4 does not have) go.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 1024);
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if kind == "counter" {
                if let Some(h) = help.take() {
                    let text = h.strip_prefix("# HELP ").and_then(|r| r.split_once(' '));
                    match text {
                        Some((_, text)) => out.push_str(&format!("# HELP {name}_total {text}\n")),
                        None => out.push_str(&format!("# HELP {name}_total\n")),
                    }
                }
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

/// What a scrape reads of the node's state (see the module doc).
#[derive(Debug, Default)]
pub struct Snapshot {
    replicas: u64,
    leading: u64,
    leaderless: u64,
    under_replicated: u64,
    quiet: u64,
    hibernated: u64,
    /// Sum and maximum, over the partitions this node leads, of last log index less commit
    /// index.
    uncommitted_sum: u64,
    uncommitted_max: u64,
    fsync: Option<HistogramSnapshot>,
    commit_batch: Option<HistogramSnapshot>,
    elections: u64,
    leader_changes: u64,
    /// Lag by consumer group, for the groups this node coordinates.
    group_lag: Vec<(String, GroupLag)>,
    disk_available: Option<u64>,
    disk_min_free: u64,
    disk_refusing: bool,
    refused_for_disk: u64,
}

/// One partition replica's contribution to a [`Snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaState {
    pub leaderless: bool,
    pub leading: bool,
    pub under_replicated: bool,
    /// Last log index less commit index, when leading.
    pub uncommitted: u64,
}

/// What a replica's view says of it: `expected` are the partition's replicas in the
/// metadata (empty if unknown), `alive` says whether a node is heard from.
pub fn replica_state(
    view: &fjord_raft::quiesce::GroupView,
    expected: &[u64],
    alive: impl Fn(u64) -> bool,
) -> ReplicaState {
    if view.leader.is_none() {
        return ReplicaState {
            leaderless: true,
            ..Default::default()
        };
    }
    if !view.leading {
        return ReplicaState::default();
    }
    let last = view.last_index.unwrap_or(0);
    let behind = |n: u64| match view.matched.iter().find(|(m, _)| *m == n) {
        Some((_, Some(matched))) => last.saturating_sub(*matched) > UNDER_REPLICATED_LAG_ENTRIES,
        _ => true,
    };
    let followers = view.voters.iter().copied().filter(|v| *v != view.me);
    let under_replicated = view.voters.is_empty()
        || expected
            .iter()
            .any(|r| *r != view.me && !view.voters.contains(r))
        || followers.clone().any(|v| !alive(v) || behind(v));
    ReplicaState {
        leaderless: false,
        leading: true,
        under_replicated,
        uncommitted: last.saturating_sub(view.committed.unwrap_or(0)),
    }
}

impl Snapshot {
    /// Reads the node's state now.
    pub fn take(node: &Node) -> Snapshot {
        let mut s = Snapshot::default();
        let meta = node.view();
        // The views first, the liveness asked after: no other lock is taken while the
        // registry's is held.
        let mut views = Vec::new();
        node.groups()
            .for_each_partition(|gid, h| views.push((gid, h.view())));
        for (gid, view) in views {
            let (topic, partition) = fjord_meta::split_group_id(gid);
            let expected = meta
                .state
                .topic_by_id(topic)
                .and_then(|t| t.partitions.get(partition as usize))
                .map_or(&[][..], |p| &p.replicas[..]);
            let r = replica_state(&view, expected, |n| node.is_alive(n));
            s.replicas += 1;
            s.leaderless += u64::from(r.leaderless);
            s.leading += u64::from(r.leading);
            s.under_replicated += u64::from(r.under_replicated);
            s.uncommitted_sum += r.uncommitted;
            s.uncommitted_max = s.uncommitted_max.max(r.uncommitted);
        }
        let quiet = node.quiet_counts();
        s.quiet = u64::from(quiet.quiet);
        s.hibernated = u64::from(quiet.hibernated);
        let stats = node.store().commit_stats();
        s.fsync = Some(stats.fsync_seconds.snapshot());
        s.commit_batch = Some(stats.batch_requests.snapshot());
        let transitions = node.transitions();
        s.elections = transitions.elections_started();
        s.leader_changes = transitions.leader_changes();
        s.group_lag = group_lag(node);
        let disk = node.disk().state();
        s.disk_available = disk.space.map(|sp| sp.available_bytes);
        s.disk_min_free = disk.min_free_bytes;
        s.disk_refusing = disk.refusing;
        s.refused_for_disk = node.disk().refused();
        s
    }
}

/// One consumer group's lag as a scrape sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupLag {
    /// Records behind, summed over its partitions.
    pub records: u64,
    /// The age of its oldest unconsumed record, in seconds: the largest over the partitions
    /// read (0 for one with nothing to consume); `None` when none was read.
    pub seconds: Option<f64>,
}

impl GroupLag {
    /// Adds one partition's lag: `records` behind, its oldest unconsumed record `age_ms` old
    /// (`None`: not read).
    pub fn add(&mut self, records: u64, age_ms: Option<i64>) {
        self.records = self.records.saturating_add(records);
        if let Some(ms) = age_ms {
            let s = ms.max(0) as f64 / 1000.0;
            self.seconds = Some(self.seconds.map_or(s, |m| m.max(s)));
        }
    }

    /// Folds another group's lag in (the series of the groups past the limit): records
    /// summed, the oldest record's age the larger.
    pub fn merge(&mut self, other: GroupLag) {
        self.records = self.records.saturating_add(other.records);
        if let Some(s) = other.seconds {
            self.seconds = Some(self.seconds.map_or(s, |m| m.max(s)));
        }
    }
}

/// The lag of each consumer group this node coordinates (it leads the group's partition of
/// the groups' topic), for each committed offset of a partition this node holds a replica
/// of (the others are left out: reading them would take a request to another node per
/// scrape): in records, that replica's high watermark less the offset; in seconds, the age
/// of the record at the offset, read from that replica's store (no wait, no network), at
/// most [`MAX_LAG_READS_PER_SCRAPE`] reads per scrape. Sorted by group; past
/// [`MAX_GROUP_LAG_SERIES`] groups, the rest are folded into [`OTHER_GROUPS`].
fn group_lag(node: &Node) -> Vec<(String, GroupLag)> {
    /// A group's committed offsets: `(topic id, partition, offset)`.
    type CommittedOffsets = Vec<(u32, u32, u64)>;
    let meta = node.view();
    let Some(topic) = meta.state.topic(fjord_groups::GROUPS_TOPIC) else {
        return Vec::new();
    };
    let mut committed: Vec<(String, CommittedOffsets)> = Vec::new();
    for p in &topic.partitions {
        let Some(h) = node.partition(fjord_meta::group_id(topic.id, p.partition)) else {
            continue;
        };
        if !h.is_leader() {
            continue;
        }
        h.shared().with_groups(|groups| {
            for g in groups.iter() {
                let offsets = g
                    .offsets
                    .iter()
                    .map(|(tp, c)| (tp.topic, tp.partition, c.offset))
                    .collect();
                committed.push((g.name.clone(), offsets));
            }
        });
    }
    committed.sort_by(|a, b| a.0.cmp(&b.0));
    let now_ms = node.now_ms();
    let mut reads_left = MAX_LAG_READS_PER_SCRAPE;
    let mut out: Vec<(String, GroupLag)> = Vec::new();
    let mut other: Option<GroupLag> = None;
    for (i, (name, offsets)) in committed.into_iter().enumerate() {
        let mut lag = GroupLag::default();
        for (t, p, offset) in offsets {
            let Some(h) = node.partition(fjord_meta::group_id(t, p)) else {
                continue;
            };
            let records = h.shared().high_watermark().saturating_sub(offset);
            let age_ms = if records == 0 {
                Some(0)
            } else if reads_left > 0 {
                reads_left -= 1;
                crate::lag::read_replica(node, &h, offset)
                    .ok()
                    .and_then(|probe| crate::lag::lag_ms(records, probe.oldest_ms, now_ms))
            } else {
                None
            };
            lag.add(records, age_ms);
        }
        if i < MAX_GROUP_LAG_SERIES {
            out.push((name, lag));
        } else {
            other.get_or_insert_with(GroupLag::default).merge(lag);
        }
    }
    if let Some(lag) = other {
        out.push((OTHER_GROUPS.to_string(), lag));
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

impl GroupLabel {
    /// The label of a group named `name`, escaped as the text format asks (the encoder writes
    /// label values as they are, and a group name may hold `"` and `\`: unescaped, one
    /// group's name could end the value, add labels of its own, or make the whole scrape
    /// fail to parse).
    fn new(name: &str) -> GroupLabel {
        GroupLabel {
            group: escape_label_value(name),
        }
    }
}

/// A label value in the Prometheus text format: `\`, `"` and line feeds escaped.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one gauge without labels.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?)
}

/// Writes one counter without labels (`name` without `_total`).
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, &format!("{help}."), None, MetricType::Counter)?)
}

/// Writes one histogram without labels, from a cumulative snapshot.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> std::fmt::Result {
    // prometheus-client wants per-bucket counts, the last bucket (+Inf) as f64::MAX.
    let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
    let mut below = 0;
    for (bound, cumulative) in &h.buckets {
        buckets.push((*bound, cumulative - below));
        below = *cumulative;
    }
    buckets.push((f64::MAX, h.count - below));
    let help = format!("{help}.");
    let mut m = e.encode_descriptor(name, &help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Snapshot {
    /// The gauges without labels: `(name, help, value)`.
    fn gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut gauges = vec![
            (
                "fjord_partition_replicas",
                "Partition replicas this node holds",
                self.replicas,
            ),
            (
                "fjord_partitions_leading",
                "Partition replicas on this node that lead their partition",
                self.leading,
            ),
            (
                "fjord_partitions_leaderless",
                "Partition replicas on this node that know of no leader",
                self.leaderless,
            ),
            (
                "fjord_partitions_under_replicated",
                "Partitions this node leads where, in its view, a replica is missing from the \
                 voters, suspected, or more than 1000 entries behind",
                self.under_replicated,
            ),
            (
                "fjord_partitions_quiet",
                "Partition replicas on this node that are quiet (no Raft ticks or heartbeats)",
                self.quiet,
            ),
            (
                "fjord_partitions_hibernated",
                "Quiet partition replicas on this node whose Raft instance is stopped",
                self.hibernated,
            ),
            (
                "fjord_raft_uncommitted_entries",
                "Sum over the partitions this node leads of their last log index less their \
                 commit index",
                self.uncommitted_sum,
            ),
            (
                "fjord_raft_uncommitted_entries_max",
                "Largest last log index less commit index of a partition this node leads",
                self.uncommitted_max,
            ),
        ];
        if let Some(available) = self.disk_available {
            gauges.push((
                "fjord_disk_available_bytes",
                "Bytes free in the data directory's filesystem for this node (with pages redb \
                 can reuse)",
                available,
            ));
            gauges.push((
                "fjord_disk_min_free_bytes",
                "Free space below which this node refuses produces (--min-free-disk-bytes in \
                 force)",
                self.disk_min_free,
            ));
        }
        gauges.push((
            "fjord_disk_refusing_produces",
            "1 while this node refuses produces for lack of disk space",
            u64::from(self.disk_refusing),
        ));
        gauges
    }

    /// The counters: `(name without _total, help, value)`.
    fn counters(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "fjord_raft_elections_started",
                "Elections this node's replicas started (terms in which one voted for itself)",
                self.elections,
            ),
            (
                "fjord_raft_leader_changes",
                "New leaders this node's replicas saw (a later term with a known leader); each \
                 replica of a group counts it",
                self.leader_changes,
            ),
            (
                "fjord_produce_refused_disk",
                "Produce batches refused because this node's disk was low on space",
                self.refused_for_disk,
            ),
        ]
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, v) in self.gauges() {
            gauge(&mut e, name, help, saturating_i64(v))?;
        }
        for (name, help, v) in self.counters() {
            counter(&mut e, name, help, v)?;
        }
        if let Some(h) = &self.fsync {
            histogram(
                &mut e,
                "fjord_storage_fsync_duration_seconds",
                "Storage commits with an fsync: how long each took, the fsync included",
                h,
            )?;
        }
        if let Some(h) = &self.commit_batch {
            histogram(
                &mut e,
                "fjord_storage_commit_batch_requests",
                "Write requests each storage commit (group commit) folded together",
                h,
            )?;
        }
        if !self.group_lag.is_empty() {
            let mut family = e.encode_descriptor(
                "fjord_consumer_group_lag_records",
                "Records behind the high watermark, summed over a consumer group's committed \
                 partitions, for the groups this node coordinates.",
                None,
                MetricType::Gauge,
            )?;
            for (group, lag) in &self.group_lag {
                let labels = GroupLabel::new(group);
                ConstGauge::new(saturating_i64(lag.records))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        if self.group_lag.iter().any(|(_, l)| l.seconds.is_some()) {
            let mut family = e.encode_descriptor(
                "fjord_consumer_group_lag_seconds",
                &format!(
                    "Age of the oldest record a consumer group has not consumed (0 when \
                     nothing is left), the largest over its committed partitions, for the \
                     groups this node coordinates. Only partitions with a replica on this \
                     node are read, at most {MAX_LAG_READS_PER_SCRAPE} per scrape."
                ),
                None,
                MetricType::Gauge,
            )?;
            for (group, lag) in &self.group_lag {
                let Some(seconds) = lag.seconds else {
                    continue;
                };
                let labels = GroupLabel::new(group);
                ConstGauge::new(seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_raft::quiesce::GroupView;

    fn leader_view(last: u64, committed: u64, matched: &[(u64, Option<u64>)]) -> GroupView {
        GroupView {
            me: 1,
            leading: true,
            leader: Some(1),
            last_index: Some(last),
            committed: Some(committed),
            voters: vec![1, 2, 3],
            matched: matched.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_leader_with_every_follower_caught_up_is_fully_replicated() {
        let v = leader_view(100, 98, &[(1, Some(100)), (2, Some(99)), (3, Some(100))]);
        let r = replica_state(&v, &[1, 2, 3], |_| true);
        assert!(r.leading && !r.under_replicated && !r.leaderless);
        assert_eq!(r.uncommitted, 2);
    }

    #[test]
    fn a_follower_suspected_missing_or_far_behind_makes_it_under_replicated() {
        let v = leader_view(5000, 5000, &[(2, Some(5000)), (3, Some(100))]);
        assert!(replica_state(&v, &[1, 2, 3], |_| true).under_replicated);
        let v = leader_view(10, 10, &[(2, Some(10)), (3, None)]);
        assert!(replica_state(&v, &[1, 2, 3], |_| true).under_replicated);
        let v = leader_view(10, 10, &[(2, Some(10)), (3, Some(10))]);
        assert!(replica_state(&v, &[1, 2, 3], |n| n != 3).under_replicated);
        // A replica of the metadata's list that is not a voter (a learner, being rebuilt).
        let mut v = leader_view(10, 10, &[(2, Some(10))]);
        v.voters = vec![1, 2];
        assert!(replica_state(&v, &[1, 2, 3], |_| true).under_replicated);
    }

    #[test]
    fn followers_and_leaderless_replicas() {
        let follower = GroupView {
            me: 2,
            following: true,
            leader: Some(1),
            ..Default::default()
        };
        assert_eq!(
            replica_state(&follower, &[1, 2, 3], |_| true),
            ReplicaState::default()
        );
        let none = GroupView::default();
        assert!(replica_state(&none, &[], |_| true).leaderless);
    }

    #[test]
    fn counters_are_renamed_to_their_total_and_openmetrics_lines_dropped() {
        let om = "# HELP fjord_x Things.\n# TYPE fjord_x counter\nfjord_x_total 3\n\
                  # HELP fjord_y_seconds Time.\n# TYPE fjord_y_seconds histogram\n\
                  # UNIT fjord_y_seconds seconds\nfjord_y_seconds_sum 1.0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP fjord_x_total Things.\n# TYPE fjord_x_total counter\nfjord_x_total 3\n\
             # HELP fjord_y_seconds Time.\n# TYPE fjord_y_seconds histogram\n\
             fjord_y_seconds_sum 1.0\n"
        );
    }

    #[test]
    fn a_group_s_lag_in_seconds_is_its_oldest_partition_s_and_unread_ones_are_left_out() {
        let mut g = GroupLag::default();
        g.add(0, Some(0));
        g.add(5, Some(2_500));
        g.add(3, None);
        g.add(1, Some(-7));
        assert_eq!(
            g,
            GroupLag {
                records: 9,
                seconds: Some(2.5)
            }
        );
        let mut unread = GroupLag::default();
        unread.add(4, None);
        assert_eq!(unread.seconds, None);
        let mut other = unread;
        other.merge(g);
        assert_eq!(
            other,
            GroupLag {
                records: 13,
                seconds: Some(2.5)
            }
        );
    }

    /// `snapshot` as a scrape renders it (the Prometheus text format).
    fn scrape_text(snapshot: Snapshot) -> String {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(snapshot));
        let mut om = String::new();
        prometheus_client::encoding::text::encode_registry(&mut om, &scraped).unwrap();
        to_prometheus_text(&om)
    }

    #[test]
    fn a_group_name_with_quotes_and_backslashes_stays_inside_its_label() {
        let lag = GroupLag {
            records: 1,
            seconds: None,
        };
        let snapshot = Snapshot {
            group_lag: vec![("x\",node=\"7".into(), lag), ("a\\".into(), lag)],
            ..Default::default()
        };
        let text = scrape_text(snapshot);
        assert!(
            text.contains(r#"fjord_consumer_group_lag_records{group="x\",node=\"7"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fjord_consumer_group_lag_records{group="a\\"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_lag_families_render_and_a_group_without_a_read_has_no_seconds() {
        let read = GroupLag {
            records: 3,
            seconds: Some(1.5),
        };
        let unread = GroupLag {
            records: 2,
            seconds: None,
        };
        let snapshot = Snapshot {
            group_lag: vec![("a".into(), read), ("b".into(), unread)],
            ..Default::default()
        };
        let text = scrape_text(snapshot);
        assert!(
            text.contains("fjord_consumer_group_lag_records{group=\"b\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fjord_consumer_group_lag_seconds gauge"),
            "{text}"
        );
        assert!(
            text.contains("fjord_consumer_group_lag_seconds{group=\"a\"} 1.5"),
            "{text}"
        );
        assert!(
            !text.contains("fjord_consumer_group_lag_seconds{group=\"b\"}"),
            "{text}"
        );
    }

    #[test]
    fn recorded_metrics_render_with_their_labels() {
        let m = Metrics::new();
        m.produce_done(Acks::Ap, Outcome::Error, Duration::from_millis(3));
        m.appended(5, 500);
        let mut om = String::new();
        prometheus_client::encoding::text::encode_registry(&mut om, &m.registry).unwrap();
        let text = to_prometheus_text(&om);
        assert!(text.contains(
            "fjord_produce_request_duration_seconds_count{acks=\"ap\",outcome=\"error\"} 1"
        ));
        assert!(text.contains("fjord_produced_records_total 5"));
        assert!(text.contains("# TYPE fjord_produced_bytes_total counter"));
    }
}
