//! A fjord node. (Being written: the stub keeps the CLI compiling.)

pub mod config;
pub use config::{ConfigError, Peers, ServeConfig};

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Other(String),
}

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    shutdown.await;
    Ok(())
}
