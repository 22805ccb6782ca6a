//! The report of a run: statistics, a latency plot, and summaries for people and machines.
//!
//! Everything here is a pure function of a history, the fault windows the runner recorded and
//! the [`CheckResult`]; nothing touches the disk or the clock.
//!
//! What must hold:
//! - An operation belongs to a fault window when it was *invoked* inside it,
//!   `start_ns <= invoke < end_ns` (an open window runs to the end of the run); windows may
//!   overlap, and an operation invoked in no window counts as `outside_windows`.
//! - Availability is `ok / attempted` where `attempted` counts every invoke; an operation that
//!   never completed counts as `info` (unknown), never as `ok`.
//! - Percentiles are nearest-rank over the latencies (completion − invoke) of `ok` operations.
//! - The SVG stays bounded whatever the history's size: `ok` points collapse to one min–max
//!   stroke and one median dot per pixel column, and `fail`/`info` points to one dot per
//!   [`NON_OK_CELL_PX`]-pixel cell.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use fjord_harness::checker::{CheckResult, Guarantees, check};
use fjord_harness::history::{Event, EventType, Op, Operation, pair};
use fjord_harness::stability::LeaderStability;

/// A period during which the nemesis had a fault in place, as the runner recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// Short kind of fault, e.g. `partition`, `kill`, `pause`, `clock-skew`, `disk`.
    pub name: String,
    /// What exactly was done, e.g. `{n1,n2} | {n3}`.
    pub detail: String,
    pub start_ns: u64,
    /// `None` when the fault was still in place when the run ended.
    pub end_ns: Option<u64>,
}

impl FaultWindow {
    /// Whether an operation invoked at `time_ns` belongs to this window.
    pub fn contains(&self, time_ns: u64) -> bool {
        time_ns >= self.start_ns && self.end_ns.is_none_or(|end| time_ns < end)
    }
}

/// Outcomes of one kind of operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    pub attempted: u64,
    pub ok: u64,
    pub fail: u64,
    /// Unknown outcome: `info`, or never completed.
    pub info: u64,
    /// `ok / attempted` as a fraction in `[0, 1]`; `None` when nothing was attempted.
    pub availability: Option<f64>,
}

impl OpCounts {
    fn count(&mut self, outcome: EventType) {
        self.attempted += 1;
        match outcome {
            EventType::Ok => self.ok += 1,
            EventType::Fail => self.fail += 1,
            EventType::Info | EventType::Invoke => self.info += 1,
        }
        self.availability = Some(self.ok as f64 / self.attempted as f64);
    }
}

/// Latency percentiles of `ok` operations, in milliseconds.
///
/// Exact, from every sample: the report is made from the recorded history, which holds each
/// operation anyway, so sorting its latencies costs nothing a histogram would save. The bench
/// (`fjord bench`), which keeps no samples, counts them in an HdrHistogram (the `hdrhistogram`
/// crate) instead; both report nearest-rank percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn from_ns(mut samples_ns: Vec<u64>) -> Option<Latency> {
        if samples_ns.is_empty() {
            return None;
        }
        samples_ns.sort_unstable();
        let ms = |q| percentile_ns(&samples_ns, q) as f64 / 1e6;
        Some(Latency {
            count: samples_ns.len() as u64,
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: ms(1.0),
        })
    }
}

/// The nearest-rank `q`-quantile (`0 < q <= 1`) of ascending `sorted`: the smallest sample
/// with at least a `q` fraction of the samples at or below it.
pub fn percentile_ns(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// Produce, poll and `DeleteRecords` outcomes within one fault window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    #[serde(flatten)]
    pub window: FaultWindow,
    pub produce: OpCounts,
    pub poll: OpCounts,
    /// `DeleteRecords` invoked in the window (the log lifecycle; none without it).
    #[serde(default)]
    pub delete: OpCounts,
}

/// Produce and poll outcomes of operations invoked outside every fault window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthy {
    pub produce: OpCounts,
    pub poll: OpCounts,
}

/// The statistics of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Time of the last event (or window end), since the run began.
    pub duration_ns: u64,
    pub produce: OpCounts,
    pub poll: OpCounts,
    pub final_read: OpCounts,
    /// `DeleteRecords` (the log lifecycle; none without it).
    #[serde(default)]
    pub delete: OpCounts,
    pub produce_latency: Option<Latency>,
    pub poll_latency: Option<Latency>,
    pub windows: Vec<WindowStats>,
    pub outside_windows: Healthy,
}

/// Which plotted kind an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Produce,
    Poll,
    FinalRead,
    /// `DeleteRecords`: counted overall and per window, not plotted.
    Delete,
    /// The consumer group's operations and the log lifecycle's lookups: judged by the
    /// checker, not plotted or counted here.
    Other,
}

fn kind(op: &Operation<'_>) -> Kind {
    match op.invoke.op {
        Op::Produce { .. } => Kind::Produce,
        Op::Poll { .. } => Kind::Poll,
        Op::FinalRead { .. } => Kind::FinalRead,
        Op::DeleteRecords { .. } => Kind::Delete,
        Op::GroupPoll { .. }
        | Op::GroupCommit { .. }
        | Op::GroupDrain { .. }
        | Op::Retention { .. }
        | Op::Compaction { .. }
        | Op::ListEarliest { .. }
        | Op::ReplicaStarts { .. }
        | Op::ReplicaRead { .. }
        | Op::NodeExited { .. } => Kind::Other,
    }
}

fn duration_ns(history: &[Event], windows: &[FaultWindow]) -> u64 {
    let events = history.iter().map(|e| e.time_ns);
    let windows = windows.iter().map(|w| w.end_ns.unwrap_or(w.start_ns));
    events.chain(windows).max().unwrap_or(0)
}

/// Counts outcomes overall and per window, and the latency percentiles of `ok` operations.
pub fn stats(history: &[Event], windows: &[FaultWindow]) -> Stats {
    let mut s = Stats {
        duration_ns: duration_ns(history, windows),
        windows: windows
            .iter()
            .map(|w| WindowStats {
                window: w.clone(),
                produce: OpCounts::default(),
                poll: OpCounts::default(),
                delete: OpCounts::default(),
            })
            .collect(),
        ..Stats::default()
    };
    let mut produce_ns = Vec::new();
    let mut poll_ns = Vec::new();
    for op in pair(history).operations {
        let outcome = op.outcome();
        let k = kind(&op);
        let ok_latency = op.latency_ns().filter(|_| outcome == EventType::Ok);
        match k {
            Kind::Produce => {
                s.produce.count(outcome);
                produce_ns.extend(ok_latency);
            }
            Kind::Poll => {
                s.poll.count(outcome);
                poll_ns.extend(ok_latency);
            }
            Kind::FinalRead => {
                s.final_read.count(outcome);
                continue;
            }
            Kind::Delete => s.delete.count(outcome),
            Kind::Other => continue,
        }
        let t = op.invoke.time_ns;
        let mut in_any = false;
        for w in s.windows.iter_mut().filter(|w| w.window.contains(t)) {
            in_any = true;
            match k {
                Kind::Produce => w.produce.count(outcome),
                Kind::Delete => w.delete.count(outcome),
                _ => w.poll.count(outcome),
            }
        }
        if !in_any {
            match k {
                Kind::Produce => s.outside_windows.produce.count(outcome),
                Kind::Delete => {}
                _ => s.outside_windows.poll.count(outcome),
            }
        }
    }
    s.produce_latency = Latency::from_ns(produce_ns);
    s.poll_latency = Latency::from_ns(poll_ns);
    s
}

// ---------------------------------------------------------------------------------------------
// The latency plot.

const SVG_WIDTH_PX: u32 = 1200;
const MARGIN_LEFT_PX: u32 = 70;
const MARGIN_RIGHT_PX: u32 = 20;
const MARGIN_TOP_PX: u32 = 64;
const MARGIN_BOTTOM_PX: u32 = 64;
const PANEL_HEIGHT_PX: u32 = 240;
const PANEL_GAP_PX: u32 = 36;
const SVG_HEIGHT_PX: u32 = MARGIN_TOP_PX + 2 * PANEL_HEIGHT_PX + PANEL_GAP_PX + MARGIN_BOTTOM_PX;
const PLOT_WIDTH_PX: u32 = SVG_WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
/// `fail` and `info` points are kept once per square cell of this side.
pub const NON_OK_CELL_PX: u32 = 2;
/// Latencies below this are drawn at it (a log scale has no zero).
const MIN_LATENCY_MS: f64 = 0.001;
/// Rows of fault-window labels above the plot, so overlapping windows stay legible.
const LABEL_ROWS: u32 = 3;

const COLOR_OK: &str = "#1f77b4";
const COLOR_FAIL: &str = "#d62728";
const COLOR_INFO: &str = "#ff7f0e";
const WINDOW_FILLS: [&str; 5] = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

/// One panel's points, reduced to what can be seen.
struct Panel {
    /// Per pixel column, log10 latencies (ms) of `ok` operations invoked there.
    ok_columns: Vec<Vec<f32>>,
    /// Non-`ok` points as (x, log10 latency ms), before binning (binning needs the y range).
    fail: Vec<(f64, f64)>,
    info: Vec<(f64, f64)>,
    lo_log: f64,
    hi_log: f64,
}

impl Panel {
    fn new() -> Panel {
        Panel {
            ok_columns: vec![Vec::new(); PLOT_WIDTH_PX as usize],
            fail: Vec::new(),
            info: Vec::new(),
            lo_log: f64::INFINITY,
            hi_log: f64::NEG_INFINITY,
        }
    }

    fn add(&mut self, x_px: f64, latency_ms: f64, outcome: EventType) {
        let l = latency_ms.max(MIN_LATENCY_MS).log10();
        self.lo_log = self.lo_log.min(l);
        self.hi_log = self.hi_log.max(l);
        match outcome {
            EventType::Ok => {
                let col = (x_px.max(0.0) as usize).min(self.ok_columns.len() - 1);
                self.ok_columns[col].push(l as f32);
            }
            EventType::Fail => self.fail.push((x_px, l)),
            EventType::Info | EventType::Invoke => self.info.push((x_px, l)),
        }
    }

    /// Whole decades covering every point (at least one decade).
    fn decades(&self) -> (i32, i32) {
        if self.lo_log > self.hi_log {
            return (0, 3);
        }
        let lo = self.lo_log.floor() as i32;
        let hi = (self.hi_log.ceil() as i32).max(lo + 1);
        (lo, hi)
    }
}

/// Text that is safe inside an SVG element or attribute.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `target` ticks over `range`.
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

fn format_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

fn format_decade(d: i32) -> String {
    if d >= 0 {
        format!("{}", 10u64.saturating_pow(d as u32))
    } else {
        format!("{:.*}", (-d) as usize, 10f64.powi(d))
    }
}

/// A self-contained SVG of produce (top) and poll (bottom) latency over time: x is seconds
/// since the run began (at invoke), y is latency in ms on a log scale, colour is the outcome
/// (`fail` and `info` at the latency at which they gave up; operations that never completed
/// are not drawn), and fault windows are shaded and labelled across both panels.
pub fn latency_svg(history: &[Event], windows: &[FaultWindow]) -> String {
    let duration_s = (duration_ns(history, windows) as f64 / 1e9).max(1e-9);
    let x_of =
        |t_ns: u64| MARGIN_LEFT_PX as f64 + t_ns as f64 / 1e9 / duration_s * PLOT_WIDTH_PX as f64;
    let mut panels = [Panel::new(), Panel::new()];
    for op in pair(history).operations {
        let panel = match kind(&op) {
            Kind::Produce => &mut panels[0],
            Kind::Poll => &mut panels[1],
            Kind::FinalRead | Kind::Delete | Kind::Other => continue,
        };
        if let Some(ns) = op.latency_ns() {
            let x = x_of(op.invoke.time_ns) - MARGIN_LEFT_PX as f64;
            panel.add(x, ns as f64 / 1e6, op.outcome());
        }
    }

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH_PX}" height="{SVG_HEIGHT_PX}" viewBox="0 0 {SVG_WIDTH_PX} {SVG_HEIGHT_PX}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{SVG_WIDTH_PX}" height="{SVG_HEIGHT_PX}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_LEFT_PX}" y="16" font-size="14" font-weight="bold">fjord latency by outcome</text>"#
    );
    // Fault windows, behind everything, spanning both panels.
    draw_windows(&mut svg, windows, x_of);
    // X ticks, shared by both panels.
    let step_s = nice_step(duration_s, 10.0);
    let x_ticks = XTicks {
        at_s: (0..)
            .map(|i| i as f64 * step_s)
            .take_while(|&t| t <= duration_s * (1.0 + 1e-9))
            .collect(),
        step_s,
        duration_s,
    };
    let titles = [
        "produce latency (ms, log scale)",
        "poll latency (ms, log scale)",
    ];
    for (p, panel) in panels.iter().enumerate() {
        let top = (MARGIN_TOP_PX + p as u32 * (PANEL_HEIGHT_PX + PANEL_GAP_PX)) as f64;
        draw_panel(&mut svg, panel, top, titles[p], &x_ticks);
    }
    draw_legend(&mut svg);
    svg.push_str("</svg>\n");
    svg
}

/// The right edge of the plots.
const PLOT_RIGHT_PX: f64 = (MARGIN_LEFT_PX + PLOT_WIDTH_PX) as f64;

/// The time axis's ticks: where (seconds since the start), how far apart, and the run's
/// length.
struct XTicks {
    at_s: Vec<f64>,
    step_s: f64,
    duration_s: f64,
}

/// Shades each fault window across both panels and labels it, in rows above them.
fn draw_windows(svg: &mut String, windows: &[FaultWindow], x_of: impl Fn(u64) -> f64) {
    let plot_top = MARGIN_TOP_PX as f64;
    let plot_bottom = (MARGIN_TOP_PX + 2 * PANEL_HEIGHT_PX + PANEL_GAP_PX) as f64;
    let plot_right = PLOT_RIGHT_PX;
    for (i, w) in windows.iter().enumerate() {
        let x0 = x_of(w.start_ns).clamp(MARGIN_LEFT_PX as f64, plot_right);
        let x1 = w
            .end_ns
            .map_or(plot_right, &x_of)
            .clamp(x0, plot_right)
            .max(x0 + 1.0);
        let fill = WINDOW_FILLS[i % WINDOW_FILLS.len()];
        let label_y = 30 + (i as u32 % LABEL_ROWS) * 12;
        let name = xml_escape(&w.name);
        let detail = xml_escape(&w.detail);
        let _ = writeln!(
            svg,
            r#"<rect class="fault" x="{x0:.1}" y="{plot_top:.1}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="0.15"><title>{name}: {detail}</title></rect>"#,
            x1 - x0,
            plot_bottom - plot_top
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{x0:.1}" y1="{label_y}" x2="{x0:.1}" y2="{plot_top:.1}" stroke="{fill}" stroke-opacity="0.6"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{label_y}" fill="{fill}">{name}</text>"#,
            x0 + 2.0
        );
    }
}

/// One panel at `top`: its title, grid and ticks, its points, its axes.
fn draw_panel(svg: &mut String, panel: &Panel, top: f64, title: &str, x_ticks: &XTicks) {
    let height = PANEL_HEIGHT_PX as f64;
    let bottom = top + height;
    let (lo, hi) = panel.decades();
    let y_of = |l: f64| top + height * (1.0 - (l - lo as f64) / (hi - lo) as f64);
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN_LEFT_PX}" y="{:.1}" font-weight="bold">{}</text>"#,
        top - 4.0,
        title
    );
    draw_grid(svg, (lo, hi), y_of, bottom, x_ticks);
    draw_ok(svg, panel, y_of);
    draw_non_ok(svg, panel, y_of);
    // Axes.
    let _ = writeln!(
        svg,
        r##"<path d="M{MARGIN_LEFT_PX} {top:.1}V{bottom:.1}H{PLOT_RIGHT_PX:.1}" stroke="#000000" fill="none"/>"##
    );
}

/// A panel's grid and y ticks at each decade `lo..=hi`, and its x ticks below `bottom`.
fn draw_grid(
    svg: &mut String,
    (lo, hi): (i32, i32),
    y_of: impl Fn(f64) -> f64,
    bottom: f64,
    x_ticks: &XTicks,
) {
    for d in lo..=hi {
        let y = y_of(d as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT_PX}" y1="{y:.1}" x2="{PLOT_RIGHT_PX:.1}" y2="{y:.1}" stroke="#dddddd"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            MARGIN_LEFT_PX - 6,
            y + 4.0,
            format_decade(d)
        );
    }
    for &t in &x_ticks.at_s {
        let x = MARGIN_LEFT_PX as f64 + t / x_ticks.duration_s * PLOT_WIDTH_PX as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000000"/>"##,
            bottom + 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 15.0,
            format_tick(t, x_ticks.step_s)
        );
    }
}

/// `ok` operations: a min–max stroke and a median dot per pixel column.
fn draw_ok(svg: &mut String, panel: &Panel, y_of: impl Fn(f64) -> f64) {
    let mut ranges = String::new();
    let mut medians = String::new();
    for (col, lat) in panel.ok_columns.iter().enumerate() {
        if lat.is_empty() {
            continue;
        }
        let mut lat = lat.clone();
        lat.sort_unstable_by(f32::total_cmp);
        let x = MARGIN_LEFT_PX as f64 + col as f64 + 0.5;
        let (min, max) = (lat[0] as f64, lat[lat.len() - 1] as f64);
        let median = lat[(lat.len() - 1) / 2] as f64;
        if max > min {
            let _ = write!(ranges, "M{x:.1} {:.1}V{:.1}", y_of(max), y_of(min));
        }
        let _ = write!(medians, "M{x:.1} {:.1}h0", y_of(median));
    }
    let _ = writeln!(
        svg,
        r#"<path class="ok-range" d="{ranges}" stroke="{COLOR_OK}" stroke-opacity="0.2" fill="none"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<path class="ok" d="{medians}" stroke="{COLOR_OK}" stroke-width="3" stroke-linecap="round" fill="none"/>"#
    );
}

/// `fail` and `info` operations: one dot per occupied cell.
fn draw_non_ok(svg: &mut String, panel: &Panel, y_of: impl Fn(f64) -> f64) {
    for (points, color, class) in [
        (&panel.fail, COLOR_FAIL, "fail"),
        (&panel.info, COLOR_INFO, "info"),
    ] {
        let mut cells = HashSet::new();
        let mut d = String::new();
        for &(x, l) in points {
            let y = y_of(l);
            let cell = (
                (x.max(0.0) as u32) / NON_OK_CELL_PX,
                (y.max(0.0) as u32) / NON_OK_CELL_PX,
            );
            if cells.insert(cell) {
                let _ = write!(d, "M{:.1} {y:.1}h0", MARGIN_LEFT_PX as f64 + x);
            }
        }
        let _ = writeln!(
            svg,
            r#"<path class="{class}" d="{d}" stroke="{color}" stroke-width="3" stroke-linecap="round" fill="none"/>"#
        );
    }
}

/// The x axis's title and the legend of outcomes and fault windows.
fn draw_legend(svg: &mut String) {
    let axis_y = SVG_HEIGHT_PX - MARGIN_BOTTOM_PX + 32;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{axis_y}" text-anchor="middle">seconds since start (at invoke)</text>"#,
        MARGIN_LEFT_PX as f64 + PLOT_WIDTH_PX as f64 / 2.0
    );
    let legend_y = SVG_HEIGHT_PX - 12;
    let mut x = MARGIN_LEFT_PX;
    for (label, color) in [
        (
            "ok (dot: median per pixel column; stroke: min–max)",
            COLOR_OK,
        ),
        ("fail", COLOR_FAIL),
        ("info (unknown; at its timeout)", COLOR_INFO),
    ] {
        let _ = writeln!(
            svg,
            r#"<circle cx="{x}" cy="{}" r="4" fill="{color}"/><text x="{}" y="{legend_y}">{}</text>"#,
            legend_y - 4,
            x + 8,
            xml_escape(label)
        );
        x += 16 + 6 * label.chars().count() as u32;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}" fill-opacity="0.3"/><text x="{}" y="{legend_y}">fault window</text>"#,
        legend_y - 9,
        WINDOW_FILLS[0],
        x + 14
    );
}

// ---------------------------------------------------------------------------------------------
// Summaries.

/// Everything worth keeping about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub seed: u64,
    /// `cp` or `ap`.
    pub acks: String,
    /// `cp` or `ap`.
    pub read: String,
    /// What the nemesis was asked to do, e.g. `partitions+kills every 10s`.
    pub nemesis: String,
    pub check: CheckResult,
    /// Holds the fault schedule, as [`WindowStats::window`].
    pub stats: Stats,
    /// Leader stability across `partition-follower` faults, when the run had any. Not part
    /// of the verdict (it is about availability, not safety); short tests assert on it.
    #[serde(default)]
    pub leader_stability: Option<LeaderStability>,
}

impl RunSummary {
    /// Checks `history` and computes its statistics.
    pub fn new(
        seed: u64,
        acks: &str,
        read: &str,
        nemesis: &str,
        history: &[Event],
        windows: &[FaultWindow],
    ) -> RunSummary {
        RunSummary {
            seed,
            acks: acks.to_string(),
            read: read.to_string(),
            nemesis: nemesis.to_string(),
            check: check(history),
            stats: stats(history, windows),
            leader_stability: None,
        }
    }

    pub fn guarantees(&self) -> Guarantees {
        Guarantees::from_modes(&self.acks, &self.read)
    }

    /// No anomaly breaks what the run's modes promise.
    pub fn is_valid(&self) -> bool {
        self.check.is_valid(self.guarantees())
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The summary for a person reading a terminal.
    pub fn to_text(&self) -> String {
        const EXAMPLES_PER_CLASS: usize = 3;
        let g = self.guarantees();
        let s = &self.stats;
        let c = &self.check;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "fjord jepsen run: seed {}, acks={} read={}, nemesis: {}",
            self.seed, self.acks, self.read, self.nemesis
        );
        let violations = c.violations(g);
        if violations.is_empty() {
            let _ = writeln!(t, "verdict: VALID");
        } else {
            let names: Vec<_> = violations.iter().map(|(k, _)| k.name()).collect();
            let _ = writeln!(t, "verdict: INVALID ({})", names.join(", "));
        }
        let _ = writeln!(t, "duration: {:.3}s", s.duration_ns as f64 / 1e9);
        schedule_text(&mut t, s);
        let _ = writeln!(t, "\nanomalies:");
        t.push_str(&c.counts_text(g));
        if let Some(ls) = &self.leader_stability {
            let _ = writeln!(
                t,
                "\nleader stability across follower isolations: {} of {} partitions the cut-off node only followed changed leader or epoch ({} isolations, {} not checked)",
                ls.partitions_changed, ls.partitions_checked, ls.isolations, ls.skipped
            );
            for e in ls.examples.iter().take(EXAMPLES_PER_CLASS * 2) {
                let _ = writeln!(t, "    - {e}");
            }
        }
        availability_text(&mut t, s);
        latency_text(&mut t, s);
        if !c.found().is_empty() {
            let _ = writeln!(t, "\nexamples:");
            t.push_str(&c.examples_text(EXAMPLES_PER_CLASS));
        }
        t
    }
}

/// A run summary's fault schedule and operation counts.
fn schedule_text(t: &mut String, s: &Stats) {
    let _ = writeln!(t, "\nfault schedule:");
    if s.windows.is_empty() {
        let _ = writeln!(t, "  (none)");
    }
    for w in &s.windows {
        let _ = writeln!(
            t,
            "  {}  {}  {}",
            span(&w.window),
            w.window.name,
            w.window.detail
        );
    }
    let _ = writeln!(t, "\noperations:");
    let mut kinds = vec![
        ("produce", &s.produce),
        ("poll", &s.poll),
        ("final read", &s.final_read),
    ];
    if s.delete.attempted > 0 {
        kinds.push(("delete", &s.delete));
    }
    for (name, n) in kinds {
        let _ = writeln!(
            t,
            "  {name:<10}  attempted {:>8}  ok {:>8}  fail {:>8}  info {:>8}",
            n.attempted, n.ok, n.fail, n.info
        );
    }
}

/// A run summary's availability: overall, outside the fault windows, and in each.
fn availability_text(t: &mut String, s: &Stats) {
    let _ = writeln!(t, "\navailability (ok / attempted, by invoke time):");
    let _ = writeln!(
        t,
        "  {:<40} produce {}  poll {}",
        "overall",
        ratio(&s.produce),
        ratio(&s.poll)
    );
    let _ = writeln!(
        t,
        "  {:<40} produce {}  poll {}",
        "outside fault windows",
        ratio(&s.outside_windows.produce),
        ratio(&s.outside_windows.poll)
    );
    for w in &s.windows {
        let label = format!("{} {}", w.window.name, span(&w.window));
        let deletes = if w.delete.attempted > 0 {
            format!("  DeleteRecords {}", ratio(&w.delete))
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "  {label:<40} produce {}  poll {}{deletes}",
            ratio(&w.produce),
            ratio(&w.poll)
        );
    }
}

/// A run summary's latency percentiles of ok operations.
fn latency_text(t: &mut String, s: &Stats) {
    let _ = writeln!(t, "\nlatency of ok operations (ms):");
    for (name, l) in [("produce", &s.produce_latency), ("poll", &s.poll_latency)] {
        match l {
            Some(l) => {
                let _ = writeln!(
                    t,
                    "  {name:<8} p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
                );
            }
            None => {
                let _ = writeln!(t, "  {name:<8} (no ok operations)");
            }
        }
    }
}

/// `[12.000s, 27.500s)` or `[12.000s, end)`.
fn span(w: &FaultWindow) -> String {
    let start = w.start_ns as f64 / 1e9;
    match w.end_ns {
        Some(end) => format!("[{start:.3}s, {:.3}s)", end as f64 / 1e9),
        None => format!("[{start:.3}s, end)"),
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a))
}

fn ratio(n: &OpCounts) -> String {
    format!("{:>8} ({}/{})", percent(n.availability), n.ok, n.attempted)
}

/// A count, with its share of `of` when both are non-zero.
fn count_of(n: u64, of: u64) -> String {
    if n == 0 || of == 0 {
        n.to_string()
    } else {
        format!("{n} ({:.2}%)", 100.0 * n as f64 / of as f64)
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown table comparing runs, e.g. CP against AP on the same seed and fault schedule.
pub fn cap_table(runs: &[RunSummary]) -> String {
    let mut t = String::new();
    t.push_str(
        "| seed | acks/read | nemesis | acknowledged/attempted | produce availability | \
         poll availability | lost | unseen | duplicated | inconsistent | nonmonotonic | \
         stale reads | aborted | produce p50 ms | produce p99 ms | verdict |\n",
    );
    t.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in runs {
        let c = &r.check;
        let s = &r.stats;
        let acked = c.totals.produces_ok;
        let (p50, p99) = s
            .produce_latency
            .as_ref()
            .map_or(("n/a".to_string(), "n/a".to_string()), |l| {
                (format!("{:.2}", l.p50_ms), format!("{:.2}", l.p99_ms))
            });
        let violations = c.violations(r.guarantees());
        let verdict = if violations.is_empty() {
            "valid".to_string()
        } else {
            let names: Vec<_> = violations.iter().map(|(k, _)| k.name()).collect();
            format!("**INVALID**: {}", names.join(", "))
        };
        let _ = writeln!(
            t,
            "| {} | {}/{} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.seed,
            cell(&r.acks),
            cell(&r.read),
            cell(&r.nemesis),
            acked,
            s.produce.attempted,
            percent(s.produce.availability),
            percent(s.poll.availability),
            count_of(c.lost.count, acked),
            count_of(c.unseen.count, acked),
            c.duplicate.count,
            c.inconsistent.count,
            c.nonmonotonic.count,
            count_of(c.stale.count, c.totals.polls_ok),
            c.aborted.count,
            p50,
            p99,
            verdict
        );
    }
    group_table(&mut t, runs);
    t
}

/// The consumer group's side of [`cap_table`]: one row per run that had group members (the
/// group's own state is always written CP; the mode is that of the records it reads).
fn group_table(t: &mut String, runs: &[RunSummary]) {
    let with_group: Vec<_> = runs
        .iter()
        .filter(|r| r.check.totals.group_polls_ok > 0 || r.check.totals.group_commits_ok > 0)
        .collect();
    if with_group.is_empty() {
        return;
    }
    t.push_str(
        "\n| seed | acks/read | group records handed out | commits ok/not ok | \
         ownerships | drained | poll-skip | nonmonotonic-poll | duplicate-delivery | \
         committed-too-far | fenced-commit | lost-write |\n",
    );
    t.push_str("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for r in with_group {
        let c = &r.check;
        let drained = match c.totals.group_drained {
            Some(true) => "yes",
            Some(false) => "no",
            None => "n/a",
        };
        let _ = writeln!(
            t,
            "| {} | {}/{} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.seed,
            cell(&r.acks),
            cell(&r.read),
            c.totals.group_records,
            c.totals.group_commits_ok,
            c.totals.group_commits_not_ok,
            c.totals.group_ownerships,
            drained,
            c.poll_skip.count,
            c.nonmonotonic_poll.count,
            c.duplicate_delivery.count,
            c.committed_too_far.count,
            c.fenced_commit.count,
            c.lost_write.count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_harness::history::ReadRecord;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// Builds a history of operations given as (process, op, invoke time, completion).
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
    }

    impl H {
        fn push(&mut self, process: u32, kind: EventType, op: Op, time_ns: u64) {
            let index = self.events.len() as u64;
            self.events.push(Event {
                index,
                time_ns,
                process,
                kind,
                op,
                error: None,
                instance: None,
            });
        }

        /// One operation, invoked at `at_ns` and completing `latency_ns` later as `kind`.
        fn op(&mut self, process: u32, op: Op, at_ns: u64, latency_ns: u64, kind: EventType) {
            self.push(process, EventType::Invoke, op.clone(), at_ns);
            self.push(process, kind, op, at_ns + latency_ns);
        }
    }

    fn produce(value: u64, offset: Option<u64>) -> Op {
        Op::Produce {
            partition: 0,
            value,
            offset,
            timestamp_ms: None,
            key: None,
        }
    }

    fn poll() -> Op {
        Op::Poll {
            partition: 0,
            from_offset: 0,
            records: vec![],
            high_watermark: Some(0),
            node: None,
            log_start_offset: None,
        }
    }

    fn window(name: &str, start_ns: u64, end_ns: Option<u64>) -> FaultWindow {
        FaultWindow {
            name: name.to_string(),
            detail: format!("{name} detail"),
            start_ns,
            end_ns,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).rev().map(|ms| ms * MS).collect();
        let l = Latency::from_ns(samples).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!(
            (l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms),
            (500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(percentile_ns(&[7], 0.5), 7);
        assert_eq!(percentile_ns(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile_ns(&[1, 2, 3, 4], 0.51), 3);
        assert_eq!(Latency::from_ns(vec![]), None);
    }

    #[test]
    fn availability_is_counted_overall_and_per_window_by_invoke_time() {
        let mut h = H::default();
        // Before any window: 2 ok produces, 1 ok poll.
        h.op(1, produce(1, Some(0)), 0, 10 * MS, EventType::Ok);
        h.op(1, produce(2, Some(1)), S / 2, 20 * MS, EventType::Ok);
        h.op(2, poll(), S / 2, 5 * MS, EventType::Ok);
        // In "partition" [1s, 2s): 1 ok, 1 fail, 1 info produce; 1 info poll. The info
        // produce completes after the window ends but was invoked inside it.
        h.op(1, produce(3, Some(2)), S, 30 * MS, EventType::Ok);
        h.op(1, produce(4, None), S + S / 4, 100 * MS, EventType::Fail);
        h.op(1, produce(5, None), S + S / 2, S, EventType::Info);
        h.op(2, poll(), S + S / 2, S, EventType::Info);
        // In "kill" [3s, end) and, from 4s, also in "pause" [4s, 5s): a produce never completes.
        h.op(1, produce(6, Some(3)), 3 * S, 40 * MS, EventType::Ok);
        h.push(3, EventType::Invoke, produce(7, None), 4 * S);
        let windows = [
            window("partition", S, Some(2 * S)),
            window("kill", 3 * S, None),
            window("pause", 4 * S, Some(5 * S)),
        ];
        let s = stats(&h.events, &windows);
        assert_eq!(s.duration_ns, 5 * S);
        let counts = |c: &OpCounts| (c.attempted, c.ok, c.fail, c.info);
        assert_eq!(counts(&s.produce), (7, 4, 1, 2));
        assert_eq!(counts(&s.poll), (2, 1, 0, 1));
        assert_eq!(s.produce.availability, Some(4.0 / 7.0));
        assert_eq!(counts(&s.windows[0].produce), (3, 1, 1, 1));
        assert_eq!(counts(&s.windows[0].poll), (1, 0, 0, 1));
        assert_eq!(s.windows[0].poll.availability, Some(0.0));
        assert_eq!(counts(&s.windows[1].produce), (2, 1, 0, 1));
        assert_eq!(counts(&s.windows[2].produce), (1, 0, 0, 1));
        assert_eq!(s.windows[2].poll.availability, None);
        assert_eq!(counts(&s.outside_windows.produce), (2, 2, 0, 0));
        assert_eq!(counts(&s.outside_windows.poll), (1, 1, 0, 0));
        let pl = s.produce_latency.unwrap();
        assert_eq!((pl.count, pl.p50_ms, pl.max_ms), (4, 20.0, 40.0));
        assert_eq!(s.poll_latency.unwrap().max_ms, 5.0);
    }

    #[test]
    fn the_svg_is_well_formed_with_a_shaded_rect_per_window() {
        let mut h = H::default();
        for i in 0..200u64 {
            let kind = match i % 10 {
                0 => EventType::Fail,
                1 => EventType::Info,
                _ => EventType::Ok,
            };
            h.op(1, produce(i, Some(i)), i * 50 * MS, (1 + i % 7) * MS, kind);
            h.op(2, poll(), i * 50 * MS, (i % 3) * MS, EventType::Ok);
        }
        let windows = [
            window("partition <a|b>", S, Some(3 * S)),
            window("kill & restart", 2 * S, None),
        ];
        let svg = latency_svg(&h.events, &windows);
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches(r#"<rect class="fault""#).count(), windows.len());
        assert!(svg.contains("partition &lt;a|b&gt;"));
        assert!(svg.contains("kill &amp; restart"));
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
        for class in ["ok", "ok-range", "fail", "info"] {
            assert_eq!(
                svg.matches(&format!("class=\"{class}\"")).count(),
                2,
                "{class}"
            );
        }
        // Log-scale decades for 0.001..7 ms, and x ticks in seconds.
        assert!(svg.contains(">0.001</text>") && svg.contains(">10</text>"));
        assert!(svg.contains(">seconds since start (at invoke)</text>"));
    }

    #[test]
    fn the_svg_stays_small_for_a_million_points() {
        let mut h = H::default();
        for i in 0..500_000u64 {
            let kind = if i % 100 == 0 {
                EventType::Info
            } else {
                EventType::Ok
            };
            h.op(
                1,
                produce(i, Some(i)),
                i * MS / 10,
                (1 + i % 997) * 10_000,
                kind,
            );
        }
        let svg = latency_svg(&h.events, &[]);
        // One stroke and one dot per pixel column; info binned per cell.
        assert!(svg.len() < 400_000, "{} bytes", svg.len());
        let ok = svg
            .lines()
            .find(|l| l.starts_with(r#"<path class="ok""#))
            .unwrap();
        assert_eq!(ok.matches("h0").count(), PLOT_WIDTH_PX as usize);
        let info = svg
            .lines()
            .find(|l| l.starts_with(r#"<path class="info""#))
            .unwrap();
        let cells = (PLOT_WIDTH_PX / NON_OK_CELL_PX + 1) * (PANEL_HEIGHT_PX / NON_OK_CELL_PX + 1);
        assert!(info.matches("h0").count() <= cells as usize);
        eprintln!(
            "{} bytes, {} info dots",
            svg.len(),
            info.matches("h0").count()
        );
    }

    fn run(acks: &str, read: &str, lose: bool) -> RunSummary {
        let mut h = H::default();
        h.op(1, produce(1, Some(0)), 0, 2 * MS, EventType::Ok);
        h.op(1, produce(2, Some(1)), S, 4 * MS, EventType::Ok);
        h.op(1, produce(3, Some(2)), 2 * S, 6 * MS, EventType::Ok);
        h.op(1, produce(4, None), 2 * S, 8 * MS, EventType::Info);
        let records = if lose {
            vec![(0, 1), (2, 3)]
        } else {
            vec![(0, 1), (1, 2), (2, 3)]
        };
        let fr = Op::FinalRead {
            partition: 0,
            records: records
                .into_iter()
                .map(|(offset, value)| ReadRecord { offset, value })
                .collect(),
            log_start_offset: None,
        };
        h.op(9, fr, 4 * S, MS, EventType::Ok);
        let windows = [window("partition", S, Some(3 * S))];
        RunSummary::new(7, acks, read, "partition halves", &h.events, &windows)
    }

    #[test]
    fn summaries_label_violations_by_mode() {
        let cp = run("cp", "cp", true);
        let ap = run("ap", "ap", true);
        assert!(!cp.is_valid());
        assert!(ap.is_valid());
        let text = cp.to_text();
        assert!(
            text.contains("seed 7, acks=cp read=cp, nemesis: partition halves"),
            "{text}"
        );
        assert!(text.contains("verdict: INVALID (lost)"), "{text}");
        assert!(
            text.contains("[1.000s, 3.000s)  partition  partition detail"),
            "{text}"
        );
        assert!(
            text.contains("33.33% of acknowledged)  VIOLATION"),
            "{text}"
        );
        assert!(text.contains("produce  p50 4.000  p99 6.000"), "{text}");
        let ap_text = ap.to_text();
        assert!(ap_text.contains("verdict: VALID"), "{ap_text}");
        assert!(ap_text.contains("allowed in this mode"), "{ap_text}");
        let back: RunSummary = serde_json::from_str(&cp.to_json().unwrap()).unwrap();
        assert_eq!(back, cp);
    }

    #[test]
    fn the_cap_table_has_a_row_per_run() {
        let table = cap_table(&[run("cp", "cp", false), run("ap", "ap", true)]);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("| seed | acks/read | nemesis | acknowledged/attempted"));
        assert_eq!(
            lines[2],
            "| 7 | cp/cp | partition halves | 3/4 | 75.00% | n/a | 0 | 0 | 0 | 0 | 0 | 0 | 0 \
             | 4.00 | 6.00 | valid |"
        );
        assert!(
            lines[3]
                .starts_with("| 7 | ap/ap | partition halves | 3/4 | 75.00% | n/a | 1 (33.33%) |")
        );
        assert!(lines[3].ends_with("| valid |"));
    }

    #[test]
    fn the_cap_table_adds_a_group_table_for_runs_with_members() {
        let mut with_group = run("cp", "cp", false);
        let t = &mut with_group.check.totals;
        (t.group_polls_ok, t.group_records, t.group_commits_ok) = (4, 120, 9);
        (t.group_commits_not_ok, t.group_ownerships, t.group_drained) = (2, 5, Some(true));
        with_group.check.duplicate_delivery.count = 1;
        let table = cap_table(&[with_group, run("ap", "ap", true)]);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 8, "{table}");
        assert!(lines[5].starts_with("| seed | acks/read | group records handed out"));
        assert_eq!(
            lines[7],
            "| 7 | cp/cp | 120 | 9/2 | 5 | yes | 0 | 0 | 1 | 0 | 0 | 0 |"
        );
    }
}
