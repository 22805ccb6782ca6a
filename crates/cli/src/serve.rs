//! `fjord serve`: runs one node until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use fjord_server::ServeConfig;

use crate::signals::shutdown_signal;

const MISSING: &str = "give either --config FILE, or --id, --listen, --data-dir and --peers";

/// Settings come either from `--config FILE` or from the flags.
#[derive(Debug, clap::Args)]
#[command(override_usage = "fjord serve --config FILE\n       \
    fjord serve --id N --listen ADDR --data-dir DIR --peers ID=HOST:PORT,... [OPTIONS]")]
#[command(
    after_help = "Example (node 1 of 3; clients on 7101, the other nodes on 7201):\n  \
    fjord serve --id 1 --listen 127.0.0.1:7101 --data-dir /var/lib/fjord \\\n    \
    --peers 1=127.0.0.1:7201,2=127.0.0.1:7202,3=127.0.0.1:7203\n\n\
    Logs go to standard error; set RUST_LOG (default: info) to change the level."
)]
pub struct ServeArgs {
    /// Read the node's settings from this TOML file (keys as the flags, with underscores:
    /// id, listen, data_dir, peers, ...) instead of from flags.
    #[arg(long, value_name = "FILE", conflicts_with = "ServeConfig")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub node: Option<ServeConfig>,
}

impl ServeArgs {
    /// The node's settings, checked.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let config = match (self.config, self.node) {
            (Some(path), _) => ServeConfig::from_toml_file(&path)?,
            (None, Some(node)) => node,
            (None, None) => anyhow::bail!(MISSING),
        };
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let id = config.id;
    tracing::info!(
        id,
        listen = %config.listen,
        peer_listen = %config.peer_listen_address()?,
        data_dir = %config.data_dir.display(),
        advertise = %config.advertised_address(),
        "starting node"
    );
    fjord_server::run(config, shutdown_signal())
        .await
        .with_context(|| format!("node {id} failed"))?;
    tracing::info!(id, "node stopped");
    Ok(())
}
