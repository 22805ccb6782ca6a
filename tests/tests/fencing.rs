//! Producer ids and epochs on a real 3-process cluster: a named producer initialised again
//! fences its earlier instance (a "zombie"), a producer id the cluster never allocated is
//! refused, and two writers sharing one producer id no longer lose the second one's records
//! as "duplicates".
//!
//! Regression: before epochs, a produce under an id nobody allocated was accepted, and a
//! second writer's batch under the same id and sequence was answered `duplicate` with the
//! first writer's offset while its records were dropped.
// Each test holds `serial()` (a std mutex) for its whole run on purpose: tests run on
// separate threads and runtimes, and must not start clusters at the same time.
#![allow(clippy::await_holding_lock)]

use std::time::Duration;

use fjord_client::{ClientError, ProducerConfig, ProducerRecord};
use fjord_proto::v1::fjord_client::FjordClient;
use fjord_proto::v1::{
    InitProducerRequest, PartitionError, ProduceErrorReason, ProduceRequest, Record, RecordBatch,
};
use fjord_tests::{Cluster, read_from_node, serial, wait_for};
use tonic::Code;

fn named(name: &str) -> ProducerConfig {
    ProducerConfig {
        producer_name: Some(name.into()),
        linger_ms: 0,
        ..Default::default()
    }
}

fn to(partition: u32, value: &str) -> ProducerRecord {
    ProducerRecord::new(value.to_string()).with_partition(partition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_producer_initialised_again_fences_its_zombie() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    cluster.client().create_topic("fenced", 2, 3).await.unwrap();

    // The first instance: its own client, as another process would have.
    let old_client = cluster.client();
    let old = old_client
        .producer("fenced", named("orders-writer"))
        .unwrap();
    let (id, epoch) = old.init().await.unwrap();
    assert_eq!(epoch, 0);
    old.send(to(0, "old-0")).await.unwrap();
    old.send(to(1, "old-1")).await.unwrap();

    // Its successor takes over the name: same id, next epoch.
    let new_client = cluster.client();
    let new = new_client
        .producer("fenced", named("orders-writer"))
        .unwrap();
    assert_eq!(new.init().await.unwrap(), (id, 1));
    new.send(to(0, "new-0")).await.unwrap();

    // Partition 0 has seen epoch 1: the zombie is refused there, whatever node it reaches.
    match old.send(to(0, "zombie-0")).await {
        Err(ClientError::ProducerFenced(why)) => {
            assert!(why.contains("epoch 0") && why.contains("epoch 1"), "{why}")
        }
        other => panic!("the zombie's write to partition 0 was not fenced: {other:?}"),
    }
    // Partition 1 has not seen epoch 1 yet: its leader fences the zombie once it has applied
    // the new epoch in its metadata (within milliseconds of InitProducer's answer).
    let mut sent_in_window = 0;
    wait_for(
        "the zombie fenced on partition 1",
        Duration::from_secs(10),
        || {
            let old = old.clone();
            sent_in_window += 1;
            async move {
                match old.send(to(1, "zombie-1")).await {
                    Err(ClientError::ProducerFenced(_)) => Some(()),
                    Ok(_) => None,
                    Err(e) => panic!("the zombie got {e} instead of being fenced"),
                }
            }
        },
    )
    .await;
    // Once fenced, it stays fenced, on every partition, and the successor carries on.
    for p in 0..2 {
        assert!(
            matches!(
                old.send(to(p, "zombie-late")).await,
                Err(ClientError::ProducerFenced(_))
            ),
            "partition {p}"
        );
    }
    new.send(to(1, "new-1")).await.unwrap();

    let cp_read = |p: u32| {
        let brokers = cluster.brokers();
        async move {
            for b in &brokers {
                if let Ok((records, _)) =
                    read_from_node(b, "fenced", p, fjord_proto::v1::ReadMode::ReadCp).await
                {
                    return records.into_iter().map(|(_, v)| v).collect::<Vec<_>>();
                }
            }
            panic!("no node serves a CP read of partition {p}");
        }
    };
    assert_eq!(cp_read(0).await, ["old-0", "new-0"]);
    let p1 = cp_read(1).await;
    assert_eq!(p1.first().map(String::as_str), Some("old-1"));
    assert_eq!(p1.last().map(String::as_str), Some("new-1"));
    // What the zombie got in before its fencing reached partition 1's leader, and nothing
    // after.
    assert!(
        p1[1..p1.len() - 1].iter().all(|v| v == "zombie-1") && p1.len() - 2 < sent_in_window,
        "{p1:?}"
    );
    assert!(!p1.iter().any(|v| v == "zombie-late"));
}

fn batch(producer_id: u64, epoch: u32, seq: u32, value: &str) -> RecordBatch {
    let records = fjord_proto::batch::encode(&[Record {
        key: None,
        value: value.as_bytes().to_vec().into(),
        headers: vec![],
        timestamp_ms: 0,
    }]);
    RecordBatch {
        partition: 0,
        producer_id,
        producer_epoch: epoch,
        base_sequence: seq,
        record_count: 1,
        crc32c: fjord_proto::batch::checksum(&records),
        records,
    }
}

/// Sends one batch to partition 0 at its leader (following the leader hint), returns the
/// partition's error, if any.
async fn produce(cluster: &Cluster, b: RecordBatch) -> Option<PartitionError> {
    let mut addr = cluster.brokers()[0].clone();
    for _ in 0..20 {
        let mut c = FjordClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let r = c
            .produce(ProduceRequest {
                topic: "ids".into(),
                batches: vec![b.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let error = r.results[0].error.clone();
        match &error {
            Some(e) if e.code == Code::Unavailable as i32 && !e.leader_address.is_empty() => {
                addr = e.leader_address.clone();
            }
            Some(e) if e.code == Code::Unavailable as i32 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return error,
        }
    }
    panic!("partition 0 of topic ids found no leader");
}

fn reason(e: &Option<PartitionError>) -> Option<(Code, ProduceErrorReason)> {
    e.as_ref().map(|e| {
        (
            Code::from(e.code),
            ProduceErrorReason::try_from(e.reason).unwrap(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unallocated_ids_and_shared_ids_are_refused_not_dropped() {
    let _serial = serial();
    let cluster = Cluster::start(3).await;
    cluster.client().create_topic("ids", 1, 3).await.unwrap();

    // An id nobody allocated.
    let e = produce(&cluster, batch(1 << 50, 0, 0, "forged")).await;
    assert_eq!(
        reason(&e),
        Some((
            Code::FailedPrecondition,
            ProduceErrorReason::UnknownProducerId
        )),
        "{e:?}"
    );
    assert!(e.unwrap().message.contains("never allocated"));

    // An id allocated on one node, used at once at whichever node leads partition 0: that
    // node may not have applied the allocation yet, and asks the metadata group.
    let mut c = FjordClient::connect(format!("http://{}", cluster.brokers()[2]))
        .await
        .unwrap();
    let init = c
        .init_producer(InitProducerRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(init.producer_epoch, 0);
    let pid = init.producer_id;
    assert_eq!(produce(&cluster, batch(pid, 0, 0, "first")).await, None);
    // A retry of the same batch is a duplicate; a second writer's batch under the same id and
    // sequence is refused, not silently dropped.
    assert_eq!(produce(&cluster, batch(pid, 0, 0, "first")).await, None);
    let e = produce(&cluster, batch(pid, 0, 0, "second-writer")).await;
    assert_eq!(
        reason(&e),
        Some((Code::FailedPrecondition, ProduceErrorReason::SequenceReused)),
        "{e:?}"
    );
    // An unnamed producer has only epoch 0.
    let e = produce(&cluster, batch(pid, 3, 1, "epoch")).await;
    assert_eq!(
        reason(&e).map(|r| r.0),
        Some(Code::InvalidArgument),
        "{e:?}"
    );

    // A named producer's epoch that InitProducer never issued (anyone allowed to write the
    // topic could otherwise fence the real producer there for good with epoch 65535).
    let named = c
        .init_producer(InitProducerRequest {
            producer_name: Some("payments".into()),
        })
        .await
        .unwrap()
        .into_inner();
    let (nid, nepoch) = (named.producer_id, named.producer_epoch);
    let e = produce(&cluster, batch(nid, u32::from(u16::MAX), 0, "forged-epoch")).await;
    assert_eq!(
        reason(&e).map(|r| r.0),
        Some(Code::InvalidArgument),
        "{e:?}"
    );
    assert!(e.unwrap().message.contains("was never issued"));
    // The real producer is not fenced: its batch goes in (and is a duplicate on retry).
    assert_eq!(
        produce(&cluster, batch(nid, nepoch, 0, "named")).await,
        None
    );

    let brokers = cluster.brokers();
    let records = wait_for("a CP read of partition 0", Duration::from_secs(10), || {
        let brokers = brokers.clone();
        async move {
            for b in &brokers {
                if let Ok((records, _)) =
                    read_from_node(b, "ids", 0, fjord_proto::v1::ReadMode::ReadCp).await
                {
                    return Some(records);
                }
            }
            None
        }
    })
    .await;
    assert_eq!(
        records,
        [(0, "first".to_string()), (1, "named".to_string())]
    );
}
