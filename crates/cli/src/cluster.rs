//! `fjord cluster status`: nodes, metadata leader and partition leaders.

use fjord_client::Client;

use crate::output::{Output, cluster_json, cluster_text};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the nodes, the metadata leader and each partition's leader, as one node sees
    /// them.
    Status,
}

pub async fn run(client: Client, out: Output, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status => {
            let md = client.metadata().await?;
            out.emit(|| cluster_text(&md), || cluster_json(&md))?;
        }
    }
    Ok(())
}
