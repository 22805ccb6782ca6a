//! `fjord health`: asks each node in `--brokers` how it is (`grpc.health.v1.Health`), for
//! probes and scripts: exits 0 only if every node answered SERVING. With `--tls-ca` (and a
//! client certificate or `--token` when the nodes ask for one) it checks a node whose client
//! port speaks TLS, which Kubernetes' own gRPC probe cannot.

use fjord_client::ClientConfig;
use fjord_client::health::{self, Health};

use crate::output::{Output, to_json};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The service to ask about: "" (the node as a whole) or fjord.v1.Fjord.
    #[arg(long, default_value = "")]
    pub service: String,
}

/// Checks every broker in turn; an error names the first that is not serving.
pub async fn run(
    brokers: Vec<String>,
    config: ClientConfig,
    out: Output,
    args: HealthArgs,
) -> anyhow::Result<()> {
    let mut not_serving = Vec::new();
    // The first node that could not be asked: kept typed, so that `main` gives its hint
    // (is the cluster running?) for an unreachable node.
    let mut first_error: Option<fjord_client::ClientError> = None;
    let mut first_broker = String::new();
    for b in &brokers {
        let status = match health::check(b, &config, &args.service).await {
            Ok(h) => h,
            Err(e) => {
                // The first one's error ends the message, as its cause.
                if first_error.is_none() {
                    first_error = Some(e);
                    first_broker = b.clone();
                } else {
                    not_serving.push(format!("{b}: {e}"));
                }
                continue;
            }
        };
        let name = match status {
            Health::Serving => "SERVING",
            Health::NotServing => "NOT_SERVING",
            Health::Unknown => "UNKNOWN",
        };
        out.emit(
            || format!("{b} {name}"),
            || to_json(&serde_json::json!({ "broker": b, "status": name })),
        )?;
        if status != Health::Serving {
            not_serving.push(format!("{b}: {name}"));
        }
    }
    if first_error.is_some() {
        not_serving.push(first_broker);
    }
    if !not_serving.is_empty() {
        let what = format!("not serving: {}", not_serving.join("; "));
        return Err(match first_error {
            Some(e) => anyhow::Error::new(e).context(what),
            None => anyhow::anyhow!(what),
        });
    }
    Ok(())
}
