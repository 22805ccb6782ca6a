//! The control channel: one-line text commands over a Unix stream socket.
//!
//! A client connects, sends lines, and gets one answer line per line it sent:
//!
//! | request     | effect                                                         |
//! |-------------|----------------------------------------------------------------|
//! | `crash`     | drop every overlay: all unsynced writes and size changes lost; the next fsync through each handle open on a file that lost some answers `EIO` |
//! | `full on`   | writes that grow a file, growing truncates and fallocate fail with `ENOSPC` |
//! | `full off`  | back to normal                                                 |
//! | `eio on`    | every file `fsync`/`fdatasync` fails with `EIO`; nothing is persisted |
//! | `eio off`   | back to normal                                                 |
//! | `fsync-delay MS` | every file `fsync`/`fdatasync` answers MS milliseconds late (at most [`MAX_FSYNC_DELAY_MS`]; 0 turns it off); other operations are not held up |
//! | `sync`      | write back and fsync every overlay, like `sync(1)`             |
//! | `status`    | `ok dirty_bytes=N dirty_files=N full=on|off eio=on|off fsync_delay_ms=N fsyncs_waiting=N` |
//!
//! The answer is `ok` (for `status`, followed by the fields) or `err <reason>`. A command has
//! taken full effect when its `ok` arrives. Lines are at most [`MAX_LINE_BYTES`] long; at most
//! [`MAX_CONNECTIONS`] clients are served at once, the others wait in the accept queue.
//!
//! From a shell: `fjord-lazyfs --control PATH --send crash`, or `socat - UNIX-CONNECT:PATH`.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::fs::Core;

/// Longest request line accepted, newline included.
pub const MAX_LINE_BYTES: u64 = 256;
/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest fsync delay accepted: a slow disk, not a dead one.
pub const MAX_FSYNC_DELAY_MS: u64 = 10_000;
/// How long the blocking client waits for an answer (`sync` may write back a lot).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A fault or maintenance command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Lose every unsynced write and size change (power loss).
    Crash,
    /// Disk full on or off.
    DiskFull(bool),
    /// fsync fails with `EIO` on or off.
    FsyncEio(bool),
    /// Every fsync answers this many milliseconds late (0: on time).
    FsyncDelay(u64),
    /// Write back and fsync everything.
    Sync,
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Crash => f.write_str("crash"),
            Command::DiskFull(on) => write!(f, "full {}", on_off(*on)),
            Command::FsyncEio(on) => write!(f, "eio {}", on_off(*on)),
            Command::FsyncDelay(ms) => write!(f, "fsync-delay {ms}"),
            Command::Sync => f.write_str("sync"),
        }
    }
}

/// A request line that is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCommand(pub String);

impl fmt::Display for UnknownCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown command {:?}", self.0)
    }
}

impl std::error::Error for UnknownCommand {}

impl FromStr for Command {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["crash"] => Ok(Command::Crash),
            ["full", "on"] => Ok(Command::DiskFull(true)),
            ["full", "off"] => Ok(Command::DiskFull(false)),
            ["eio", "on"] => Ok(Command::FsyncEio(true)),
            ["eio", "off"] => Ok(Command::FsyncEio(false)),
            ["fsync-delay", ms] => match ms.parse::<u64>() {
                Ok(ms) if ms <= MAX_FSYNC_DELAY_MS => Ok(Command::FsyncDelay(ms)),
                _ => Err(UnknownCommand(s.to_string())),
            },
            ["sync"] => Ok(Command::Sync),
            _ => Err(UnknownCommand(s.to_string())),
        }
    }
}

/// What a running lazyfs holds and which faults are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Bytes written and not yet synced (what a crash would lose, besides size changes).
    pub dirty_bytes: u64,
    /// Files with unsynced writes or size changes.
    pub dirty_files: u64,
    pub disk_full: bool,
    pub fsync_eio: bool,
    /// How late every fsync answers, in milliseconds (0: on time).
    pub fsync_delay_ms: u64,
    /// Delayed fsyncs that have not answered yet.
    pub fsyncs_waiting: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dirty_bytes={} dirty_files={} full={} eio={} fsync_delay_ms={} fsyncs_waiting={}",
            self.dirty_bytes,
            self.dirty_files,
            on_off(self.disk_full),
            on_off(self.fsync_eio),
            self.fsync_delay_ms,
            self.fsyncs_waiting
        )
    }
}

impl FromStr for Status {
    type Err = io::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad status {s:?}"));
        let mut status = Status::default();
        for field in s.split_whitespace() {
            let (key, value) = field.split_once('=').ok_or_else(bad)?;
            match key {
                "dirty_bytes" => status.dirty_bytes = value.parse().map_err(|_| bad())?,
                "dirty_files" => status.dirty_files = value.parse().map_err(|_| bad())?,
                "full" => status.disk_full = value == "on",
                "eio" => status.fsync_eio = value == "on",
                "fsync_delay_ms" => status.fsync_delay_ms = value.parse().map_err(|_| bad())?,
                "fsyncs_waiting" => status.fsyncs_waiting = value.parse().map_err(|_| bad())?,
                _ => {} // Fields added later are ignored.
            }
        }
        Ok(status)
    }
}

/// The harness's handle on a running lazyfs in this process.
#[derive(Clone)]
pub struct Controller {
    pub(crate) core: Arc<Core>,
}

impl Controller {
    pub fn execute(&self, command: Command) -> io::Result<()> {
        match command {
            Command::Crash => {
                let (files, bytes) = self.core.crash();
                tracing::info!(files, bytes, "lazyfs: crash, unsynced data dropped");
            }
            Command::DiskFull(on) => self.core.set_disk_full(on),
            Command::FsyncEio(on) => self.core.set_fsync_eio(on),
            Command::FsyncDelay(ms) => self.core.set_fsync_delay(Duration::from_millis(ms)),
            Command::Sync => self.core.sync()?,
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        self.core.status()
    }

    /// Answer one request line (without its newline), as the socket does.
    pub fn answer(&self, line: &str) -> String {
        let line = line.trim();
        if line == "status" {
            return format!("ok {}", self.status());
        }
        match line.parse::<Command>() {
            Ok(command) => match self.execute(command) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {command}: {e}"),
            },
            Err(e) => format!("err {e}"),
        }
    }
}

/// Serve the control socket until the listener fails.
pub async fn serve(listener: tokio::net::UnixListener, controller: Controller) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (stream, _) = listener.accept().await?;
        let controller = controller.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, controller).await {
                tracing::debug!("lazyfs control connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_one(stream: tokio::net::UnixStream, controller: Controller) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    loop {
        let mut line = String::new();
        let n = (&mut read)
            .take(MAX_LINE_BYTES)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE_BYTES {
            write.write_all(b"err line too long\n").await?;
            return Ok(());
        }
        let controller = controller.clone();
        // Commands take the filesystem's lock and `sync` does disk I/O: keep them off the
        // runtime's threads.
        let answer = tokio::task::spawn_blocking(move || controller.answer(&line))
            .await
            .map_err(io::Error::other)?;
        write.write_all(answer.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
}

fn parse_answer(answer: &str) -> io::Result<String> {
    let answer = answer.trim_end();
    if answer == "ok" {
        Ok(String::new())
    } else if let Some(rest) = answer.strip_prefix("ok ") {
        Ok(rest.to_string())
    } else if let Some(reason) = answer.strip_prefix("err ") {
        Err(io::Error::other(reason.to_string()))
    } else if answer.is_empty() {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "lazyfs closed the control connection without answering",
        ))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected lazyfs answer {answer:?}"),
        ))
    }
}

/// Send one raw request line to the lazyfs whose control socket is at `socket`; returns what
/// followed `ok`, or the `err` reason as an error.
pub fn request(socket: &Path, line: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    stream.write_all(line.trim().as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    parse_answer(&answer)
}

/// Async [`request`], for the tokio harness. Wrap it in a timeout.
pub async fn request_async(socket: &Path, line: &str) -> io::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(format!("{}\n", line.trim()).as_bytes())
        .await?;
    let mut answer = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut answer)
        .await?;
    parse_answer(&answer)
}

/// Run `command` on the lazyfs at `socket`; it has taken effect when this returns `Ok`.
pub fn control(socket: &Path, command: Command) -> io::Result<()> {
    request(socket, &command.to_string()).map(drop)
}

/// Async [`control`].
pub async fn control_async(socket: &Path, command: Command) -> io::Result<()> {
    request_async(socket, &command.to_string()).await.map(drop)
}

/// The status of the lazyfs at `socket`. Answers once the filesystem is mounted: a harness can
/// poll this to wait for it.
pub fn status(socket: &Path) -> io::Result<Status> {
    request(socket, "status")?.parse()
}

/// Async [`status`].
pub async fn status_async(socket: &Path) -> io::Result<Status> {
    request_async(socket, "status").await?.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_text() {
        for c in [
            Command::Crash,
            Command::DiskFull(true),
            Command::DiskFull(false),
            Command::FsyncEio(true),
            Command::FsyncEio(false),
            Command::FsyncDelay(0),
            Command::FsyncDelay(250),
            Command::Sync,
        ] {
            assert_eq!(c.to_string().parse::<Command>(), Ok(c));
        }
        assert!("full maybe".parse::<Command>().is_err());
        assert!("fsync-delay".parse::<Command>().is_err());
        assert!("fsync-delay -1".parse::<Command>().is_err());
        assert!(
            format!("fsync-delay {}", MAX_FSYNC_DELAY_MS + 1)
                .parse::<Command>()
                .is_err()
        );
    }

    #[test]
    fn status_round_trips_through_text() {
        let s = Status {
            dirty_bytes: 42,
            dirty_files: 2,
            disk_full: true,
            fsync_eio: false,
            fsync_delay_ms: 300,
            fsyncs_waiting: 2,
        };
        assert_eq!(s.to_string().parse::<Status>().unwrap(), s);
    }

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer("ok\n").unwrap(), "");
        assert_eq!(parse_answer("ok a=1\n").unwrap(), "a=1");
        assert!(parse_answer("err nope\n").is_err());
        assert!(parse_answer("").is_err());
    }
}
