//! What generic gRPC tools and orchestrators ask a node on its client port: the standard
//! health service (`grpc.health.v1.Health`, for load balancers and Kubernetes probes) and
//! server reflection (`grpc.reflection.v1` and `v1alpha`, for grpcurl and the like).
//!
//! Health, for the whole server (service `""`) and for `fjord.v1.Fjord` alike: NOT_SERVING
//! from the start while the node checks its data directory and starts its groups, and while
//! a rebuilding node's metadata is behind (it refuses clients then); SERVING once it takes
//! requests; NOT_SERVING again as soon as it begins to stop (draining), before its groups
//! stop. Reflection lists `fjord.v1.Fjord`, the health service and reflection itself; the
//! node-to-node service (`proto/raft.proto`) is not described.

use fjord_proto::v1::fjord_server::FjordServer;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::service::StartingClientService;

/// The client API's service name, as health checks name it.
pub const CLIENT_SERVICE: &str = <FjordServer<StartingClientService> as NamedService>::NAME;

/// A health reporter whose services start NOT_SERVING.
pub async fn starting() -> HealthReporter {
    let reporter = HealthReporter::new();
    set(&reporter, ServingStatus::NotServing).await;
    reporter
}

/// Sets the status of the server (`""`) and of the client API.
pub async fn set(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", CLIENT_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

/// Once the node has stopped: removes the statuses, which ends every health Watch stream
/// (each has seen NOT_SERVING by then), so that the server's graceful shutdown does not wait
/// on them forever.
pub async fn stopped(reporter: &HealthReporter) {
    let mut reporter = reporter.clone();
    for service in ["", CLIENT_SERVICE] {
        reporter.clear_service_status(service).await;
    }
}

/// The health service answering from `reporter`.
pub fn health_service(reporter: &HealthReporter) -> HealthServer<HealthService> {
    HealthServer::new(HealthService::from_health_reporter(reporter.clone()))
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fjord_proto::CLIENT_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Server reflection, `grpc.reflection.v1`.
pub fn reflection_v1() -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    // The descriptor sets are compiled in (checked by the test below): this cannot fail.
    reflection()
        .build_v1()
        .expect("the compiled-in descriptor sets are valid")
}

/// Server reflection, `grpc.reflection.v1alpha` (what older tools ask for).
pub fn reflection_v1alpha() -> tonic_reflection::server::v1alpha::ServerReflectionServer<
    impl tonic_reflection::server::v1alpha::ServerReflection,
> {
    reflection()
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid")
}

/// Sets SERVING once the node takes client requests: once its applied metadata holds this
/// start's registration ([`crate::meta_gate`]), and for a rebuilding node once it is a
/// metadata voter again (polled; it takes up to seconds, minutes for a rebuild), unless
/// `cancel` comes first.
pub async fn serving_when_ready(
    reporter: HealthReporter,
    node: std::sync::Arc<crate::Node>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    while node.metadata_gate() != crate::meta_gate::MetadataGate::Serve {
        tokio::select! {
            _ = poll.tick() => {}
            _ = cancel.cancelled() => return,
        }
    }
    if !cancel.is_cancelled() {
        set(&reporter, ServingStatus::Serving).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_builds_from_the_compiled_in_descriptors() {
        reflection().build_v1().unwrap();
        reflection().build_v1alpha().unwrap();
        assert_eq!(CLIENT_SERVICE, "fjord.v1.Fjord");
    }
}
