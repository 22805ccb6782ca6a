//! `fjord-lazyfs`: mount a lazyfs (see `fjord_jepsen::lazyfs`) and serve its control socket
//! until SIGTERM/SIGINT, or send one command to a running one.
//!
//! ```text
//! fjord-lazyfs --backing DIR --mount DIR [--control PATH] [--max-dirty-bytes N]
//! fjord-lazyfs --control PATH --send 'crash'      # or 'full on', 'eio off', 'sync', 'status'
//! ```
//!
//! The control socket is bound after the mount is up: once `status` answers, the mount is
//! ready.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fjord_jepsen::lazyfs;
use tokio::signal::unix::{SignalKind, signal};

/// How long to wait, after unmounting, for the kernel to let go of the filesystem (open files
/// of a lazily unmounted filesystem keep it alive); the process exits anyway after it.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    about = "FUSE pass-through that holds writes in memory until fsync and drops them on a simulated crash"
)]
struct Args {
    /// Directory holding the durable (synced) state.
    #[arg(long, required_unless_present = "send")]
    backing: Option<PathBuf>,
    /// Empty directory to mount on.
    #[arg(long, required_unless_present = "send")]
    mount: Option<PathBuf>,
    /// Control socket (default: the mount path with `.lazyfs.sock` appended).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Unsynced bytes held in memory before writing back without fsync.
    #[arg(long, default_value_t = lazyfs::DEFAULT_MAX_DIRTY_BYTES)]
    max_dirty_bytes: u64,
    /// Send this control line to a running fjord-lazyfs at --control, print the answer, exit.
    #[arg(long, requires = "control", conflicts_with_all = ["backing", "mount"])]
    send: Option<String>,
}

fn default_control(mount: &Path) -> PathBuf {
    let mut s = mount.as_os_str().to_owned();
    s.push(".lazyfs.sock");
    PathBuf::from(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(line) = &args.send {
        let socket = args.control.as_deref().expect("clap requires --control");
        return match lazyfs::request(socket, line) {
            Ok(rest) if rest.is_empty() => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Ok(rest) => {
                println!("ok {rest}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fjord-lazyfs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fjord-lazyfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let config = lazyfs::Config {
        backing: args.backing.expect("clap requires --backing"),
        mount: args.mount.expect("clap requires --mount"),
        max_dirty_bytes: args.max_dirty_bytes,
    };
    let socket = args
        .control
        .unwrap_or_else(|| default_control(&config.mount));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        // Install the handlers before mounting, so a signal during the mount is not lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mounted = lazyfs::mount(&config).with_context(|| {
            format!(
                "mount {} on {}",
                config.backing.display(),
                config.mount.display()
            )
        })?;
        let (controller, mut unmounter, session) = mounted.into_parts();
        let mut session = tokio::task::spawn_blocking(move || session.join());

        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("remove stale {}", socket.display())),
        }
        let listener = tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("bind control socket {}", socket.display()))?;
        let server = tokio::spawn(lazyfs::control::serve(listener, controller));
        tracing::info!(
            backing = %config.backing.display(),
            mount = %config.mount.display(),
            control = %socket.display(),
            "fjord-lazyfs mounted"
        );

        let ended_alone = tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => false,
            _ = &mut session => true,
        };
        server.abort();
        let _ = std::fs::remove_file(&socket);
        if ended_alone {
            tracing::info!("fjord-lazyfs: unmounted from outside");
            return Ok(());
        }
        tracing::info!("fjord-lazyfs: signal, unmounting");
        unmounter.unmount().context("unmount")?;
        match tokio::time::timeout(UNMOUNT_WAIT, session).await {
            Ok(joined) => joined?.context("filesystem session")?,
            Err(_) => tracing::warn!("fjord-lazyfs: filesystem still busy, exiting anyway"),
        }
        Ok(())
    });
    // Do not wait for a session thread that is still serving a busy filesystem: exiting
    // closes /dev/fuse, which ends it.
    runtime.shutdown_background();
    result
}
