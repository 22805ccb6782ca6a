//! A progress line on standard error while a benchmark runs: redrawn in place with `\r` at
//! most [`REDRAWS_PER_SEC`] times a second, only when standard error is a terminal (and
//! the output is not JSON), and wiped at the end so the report starts on a clean line.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Redraws per second, at most.
pub const REDRAWS_PER_SEC: u64 = 5;
/// Width of the bar, in characters.
const BAR_WIDTH: usize = 24;

/// The line for `done` of `total` after `elapsed`: bar, percentage, counts, rate, time.
pub fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (fraction * BAR_WIDTH as f64).floor() as usize;
    let bar: String = (0..BAR_WIDTH)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    format!(
        "{label} [{bar}] {:>3}% {done}/{total} records  {rate:.0} records/s  {secs:.1} s",
        (fraction * 100.0).floor() as u64
    )
}

/// A running progress line; [`Progress::finish`] wipes it.
pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing `done` against `total` if `enabled`.
    pub fn start(label: &'static str, total: u64, done: Arc<AtomicU64>, enabled: bool) -> Self {
        if !enabled {
            return Progress {
                stop: None,
                task: None,
            };
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1_000 / REDRAWS_PER_SEC));
            let mut width = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let line = render(label, done.load(Ordering::Relaxed), total, start.elapsed());
                // Pad over a longer previous line.
                let pad = width.saturating_sub(line.len());
                width = line.len();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{line}{:pad$}", "");
                let _ = err.flush();
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:width$}\r", "");
            let _ = err.flush();
        });
        Progress {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops redrawing and wipes the line.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_bar_percentage_counts_and_rate() {
        let line = render("produce", 250, 1_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "produce [======>                 ]  25% 250/1000 records  125 records/s  2.0 s"
        );
        let done = render("consume", 1_000, 1_000, Duration::from_millis(500));
        assert!(
            done.contains("[========================] 100% 1000/1000"),
            "{done}"
        );
        // More than the total (a consumer that read on) stays at 100%; nothing divides by 0.
        assert!(render("e2e", 5, 0, Duration::ZERO).contains("100% 5/0 records  0 records/s"));
    }
}
