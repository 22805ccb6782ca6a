//! A 3-node cluster in one process (real gRPC over loopback, port 0 listeners): topic
//! creation, produce in both modes, fetch, idempotent retries, and bad input.
//! The multi-process tests live in the top-level `tests/` crate.

use std::sync::Arc;
use std::time::Duration;

use ::fjord_server::{ServeConfig, SystemClock, run_with};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::*;
use tokio_util::sync::CancellationToken;

struct Cluster {
    addrs: Vec<String>,
    stop: CancellationToken,
    _dirs: Vec<tempfile::TempDir>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_cluster(n: u64) -> Cluster {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(::fjord_server::Listeners {
            client: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peers: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tls: None,
        });
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.client.local_addr().unwrap().to_string())
        .collect();
    let peers = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{}={}", i + 1, l.peers.local_addr().unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    let stop = CancellationToken::new();
    let mut dirs = Vec::new();
    let mut handles = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig {
            id: i as u64 + 1,
            listen: l.client.local_addr().unwrap(),
            peer_listen: Some(l.peers.local_addr().unwrap()),
            advertise: None,
            data_dir: dir.path().to_path_buf(),
            peers: ::fjord_server::config::parse_peers(&peers).unwrap(),
            heartbeat_interval_ms: 50,
            election_timeout_ms: 300,
            meta_heartbeat_interval_ms: 50,
            meta_election_timeout_ms: 300,
            quiesce_after_ms: 1000,
            hibernate_after_ms: 2000,
            cache_size_mib: 8,
            source_address: None,
            rebuild: false,
            group_session_timeout_ms: ::fjord_server::config::defaults::GROUP_SESSION_TIMEOUT_MS,
            group_heartbeat_interval_ms:
                ::fjord_server::config::defaults::GROUP_HEARTBEAT_INTERVAL_MS,
            group_partitions: ::fjord_server::config::defaults::GROUP_PARTITIONS,
            group_offset_retention_ms: ::fjord_server::config::defaults::GROUP_OFFSET_RETENTION_MS,
            worker_threads: None,
            retention_check_interval_ms:
                ::fjord_server::config::defaults::RETENTION_CHECK_INTERVAL_MS,
            min_free_disk_bytes: None,
            metrics_listen: None,
            disk_check_interval_ms: ::fjord_server::config::defaults::DISK_CHECK_INTERVAL_MS,
            default_retention_ms: ::fjord_server::config::defaults::RETENTION_MS,
            default_retention_bytes: ::fjord_server::config::defaults::RETENTION_BYTES,
            default_cleanup_policy: ::fjord_server::config::defaults::CLEANUP_POLICY,
            default_delete_retention_ms: ::fjord_server::config::defaults::DELETE_RETENTION_MS,
            default_min_compaction_lag_ms: ::fjord_server::config::defaults::MIN_COMPACTION_LAG_MS,
            authentication: ::fjord_server::auth::Authentication::None,
            authorization: ::fjord_server::auth::Authorization::None,
            superusers: Vec::new(),
            tls_principal_rules: ::fjord_server::principal_rules::DEFAULT_RULES.into(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: None,
            tls_peer_names: Vec::new(),
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_tls_ca: None,
            tls_reload_interval_ms: ::fjord_server::config::defaults::TLS_RELOAD_INTERVAL_MS,
        };
        dirs.push(dir);
        let s = stop.clone();
        handles.push(tokio::spawn(async move {
            run_with(
                cfg,
                l,
                Arc::new(fjord_raft::peer::TcpConnector),
                Arc::new(SystemClock),
                async move { s.cancelled().await },
            )
            .await
            .unwrap();
        }));
    }
    Cluster {
        addrs,
        stop,
        _dirs: dirs,
        handles,
    }
}

async fn client(addr: &str) -> FjordClient<tonic::transport::Channel> {
    FjordClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Retries `f` until it succeeds or 30 s pass (cluster start, elections).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("{what}: still failing after 30 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_produce_and_fetch() {
    let cluster = start_cluster(3).await;
    let mut c = client(&cluster.addrs[0]).await;
    let topic = eventually("create topic", || {
        let mut c = c.clone();
        async move {
            c.create_topic(CreateTopicRequest {
                name: "events".into(),
                partitions: 3,
                replication_factor: 3,
                config: None,
            })
            .await
            .map(|r| r.into_inner().topic.unwrap())
            .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(topic.partitions.len(), 3);
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3);
    }

    // Produce to partition 0 through its leader, in CP mode, with retries following hints.
    let produce = |acks: Acks, value: &'static str| {
        let addrs = cluster.addrs.clone();
        async move {
            eventually("produce", || {
                let addrs = addrs.clone();
                async move {
                    for a in &addrs {
                        let mut c = client(a).await;
                        let r = c
                            .produce(ProduceRequest {
                                topic: "events".into(),
                                acks: acks as i32,
                                records: vec![Record {
                                    key: None,
                                    value: value.into(),
                                    headers: vec![],
                                    timestamp_ms: 0,
                                }],
                                partition: Some(0),
                                batches: vec![],
                                timeout_ms: 5000,
                            })
                            .await
                            .map_err(|e| e.to_string())?
                            .into_inner();
                        let res = &r.results[0];
                        if res.error.is_none() {
                            return Ok(res.base_offset);
                        }
                    }
                    Err("no node accepted".to_string())
                }
            })
            .await
        }
    };
    let o1 = produce(Acks::Cp, "one").await;
    let o2 = produce(Acks::Cp, "two").await;
    let o3 = produce(Acks::Ap, "three").await;
    assert_eq!((o1, o2, o3), (0, 1, 2));

    // CP fetch from the leader sees all three.
    let fetched = eventually("fetch", || {
        let addrs = cluster.addrs.clone();
        async move {
            for a in &addrs {
                let mut c = client(a).await;
                if let Ok(r) = c
                    .fetch(FetchRequest {
                        topic: "events".into(),
                        partition: 0,
                        offset: 0,
                        max_bytes: 0,
                        max_wait_ms: 0,
                        read: 0,
                    })
                    .await
                {
                    let r = r.into_inner();
                    if r.high_watermark == 3 {
                        return Ok(r);
                    }
                }
            }
            Err("no complete fetch".to_string())
        }
    })
    .await;
    let mut values = Vec::new();
    for b in &fetched.batches {
        for r in fjord_proto::batch::decode(&b.records, b.crc32c).unwrap() {
            values.push(String::from_utf8(r.value.to_vec()).unwrap());
        }
    }
    assert_eq!(values, vec!["one", "two", "three"]);

    // Idempotence: the same producer batch sent twice (a retry after a lost answer) is
    // appended once; a sequence gap is refused.
    let pid = c
        .init_producer(InitProducerRequest::default())
        .await
        .unwrap()
        .into_inner()
        .producer_id;
    assert_ne!(pid, 0);
    let records = vec![Record {
        key: None,
        value: "once".into(),
        headers: vec![],
        timestamp_ms: 0,
    }];
    let body = fjord_proto::batch::encode(&records);
    let batch = |seq: u32| RecordBatch {
        partition: 1,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: seq,
        record_count: 1,
        crc32c: fjord_proto::batch::checksum(&body),
        records: body.clone(),
    };
    let send = |b: RecordBatch| {
        let addrs = cluster.addrs.clone();
        async move {
            eventually("idempotent produce", || {
                let addrs = addrs.clone();
                let b = b.clone();
                async move {
                    for a in &addrs {
                        let r = client(a)
                            .await
                            .produce(ProduceRequest {
                                topic: "events".into(),
                                batches: vec![b.clone()],
                                ..Default::default()
                            })
                            .await
                            .map_err(|e| e.to_string())?
                            .into_inner();
                        let res = r.results[0].clone();
                        match &res.error {
                            Some(e) if e.code == tonic::Code::Unavailable as i32 => continue,
                            _ => return Ok(res),
                        }
                    }
                    Err("no leader accepted".to_string())
                }
            })
            .await
        }
    };
    let first = send(batch(0)).await;
    let again = send(batch(0)).await;
    assert!(first.error.is_none() && !first.duplicate, "{first:?}");
    assert!(
        again.duplicate && again.base_offset == first.base_offset,
        "{again:?}"
    );
    let gap = send(batch(5)).await;
    assert_eq!(
        gap.error.as_ref().map(|e| e.code),
        Some(tonic::Code::FailedPrecondition as i32),
        "{gap:?}"
    );
    let mut corrupt = batch(1);
    corrupt.crc32c ^= 1;
    let err = c
        .produce(ProduceRequest {
            topic: "events".into(),
            batches: vec![corrupt],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");

    // Bad input: precise codes.
    let err = c
        .create_topic(CreateTopicRequest {
            name: "bad name".into(),
            partitions: 1,
            replication_factor: 1,
            config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = c
        .create_topic(CreateTopicRequest {
            name: "big".into(),
            partitions: 1,
            replication_factor: 5,
            config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = c
        .produce(ProduceRequest {
            topic: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let err = c
        .produce(ProduceRequest {
            topic: "events".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    cluster.stop.cancel();
    for h in cluster.handles {
        h.await.unwrap();
    }
}
