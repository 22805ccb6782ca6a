//! One node's `grpc.health.v1.Health` answer, for probes (`fjord health`): a Kubernetes exec
//! probe can check a node whose client port speaks TLS, which Kubernetes' own gRPC probe
//! cannot.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::endpoint;
use crate::{ClientConfig, ClientError};

/// Longest service name asked about, in bytes.
pub const MAX_SERVICE_NAME_BYTES: usize = 256;

/// What a node said of `service` ("" for the node as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It takes requests.
    Serving,
    /// It is starting, rebuilding or stopping.
    NotServing,
    /// It does not know the service, or answered a status this client does not know.
    Unknown,
}

/// Asks the node at `address` (`host:port`, with `config`'s TLS settings) how `service`
/// is, within `config.request_timeout_ms`.
pub async fn check(
    address: &str,
    config: &ClientConfig,
    service: &str,
) -> Result<Health, ClientError> {
    if service.len() > MAX_SERVICE_NAME_BYTES {
        return Err(ClientError::Config(format!(
            "service name of {} bytes, more than MAX_SERVICE_NAME_BYTES ({MAX_SERVICE_NAME_BYTES})",
            service.len()
        )));
    }
    config.validate()?;
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let channel = endpoint(address, config)?
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| ClientError::Transport {
            address: address.to_string(),
            message: e.to_string(),
        })?;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    if let Some(t) = &config.token {
        let v = format!("Bearer {}", t.0)
            .parse()
            .map_err(|_| ClientError::Config("the token is not valid gRPC metadata".into()))?;
        req.metadata_mut().insert("authorization", v);
    }
    match HealthClient::new(channel).check(req).await {
        Ok(r) => Ok(match ServingStatus::try_from(r.into_inner().status) {
            Ok(ServingStatus::Serving) => Health::Serving,
            Ok(ServingStatus::NotServing) => Health::NotServing,
            _ => Health::Unknown,
        }),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Health::Unknown),
        Err(s) => Err(ClientError::from_status(&s, address)),
    }
}
