//! What each side of a network partition can do, in each mode, on a real 3-process cluster in
//! network namespaces: the table of `docs/guarantees.md` ("Each side of a network partition"),
//! row by row.
//!
//! The partition's leader and the client are cut off together from the other two nodes (the
//! minority side); then the client moves to the majority side; then the network heals.
//!
//! It opens with the bug it guards: a leader on the minority side acknowledged no AP write
//! (openraft refuses writes once its leader lease has lapsed, and fjord waited on that lease:
//! 0 of 200 AP records in 35 s), and no producer could start there (InitProducer was a
//! metadata write). Now the minority leader holds AP writes and acknowledges them, and any
//! node hands out producer ids from its own block; the held writes are lost once the
//! majority side elected another leader, and the test shows that too.
//!
//! Then the same for a consumer group: its coordinator and the client cut off together
//! (heartbeats and commits refused), the client on the majority side (a new coordinator keeps
//! the member, its partition and its committed offset), healed.
//!
//! Needs root (network namespaces) and `ip`/`nft`; without them it says why and returns (fails
//! with `FJORD_JEPSEN_REQUIRE=1`, as CI sets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjord_jepsen::db::{Db, NodeOptions};
use fjord_jepsen::net::{self, CLIENT, Netns, Network};
use fjord_proto::batch;
use fjord_proto::v1::{
    self, Acks, FetchRequest, InitProducerRequest, ProduceRequest, ReadMode, RecordBatch,
    fjord_client::FjordClient,
};
use tonic::Code;
use tonic::transport::Channel;

const TOPIC: &str = "sides";
const GROUP: &str = "sides-group";
/// How long a wait for the cluster to reach a state may take, at most.
const DEADLINE: Duration = Duration::from_secs(60);

fn fjord_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("fjord");
    assert!(
        bin.exists(),
        "{} does not exist: build it first",
        bin.display()
    );
    bin
}

async fn connect(addr: &str) -> FjordClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_lazy();
    FjordClient::new(channel)
}

fn record(value: &str) -> v1::Record {
    v1::Record {
        key: None,
        value: value.as_bytes().to_vec().into(),
        headers: vec![],
        timestamp_ms: 0,
    }
}

/// Produces `value` as a one-record batch of producer `pid` at sequence `seq`: the base offset,
/// or the gRPC code of the failure (the request's or the partition's).
async fn produce(
    c: &mut FjordClient<Channel>,
    acks: Acks,
    pid: u64,
    seq: u32,
    value: &str,
) -> Result<u64, (Code, String)> {
    let body = batch::encode(&[record(value)]);
    let req = ProduceRequest {
        topic: TOPIC.into(),
        acks: acks as i32,
        batches: vec![RecordBatch {
            partition: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
            record_count: 1,
            crc32c: batch::checksum(&body),
            records: body,
        }],
        timeout_ms: 8_000,
        ..Default::default()
    };
    let answer = c
        .produce(req)
        .await
        .map_err(|s| (s.code(), s.message().to_string()))?
        .into_inner();
    let r = &answer.results[0];
    match &r.error {
        Some(e) => Err((Code::from(e.code), e.message.clone())),
        None => Ok(r.base_offset),
    }
}

/// Every record of partition 0 from offset 0 as `offset → value`, and the high watermark, or
/// the gRPC code of the failure.
async fn read(
    c: &mut FjordClient<Channel>,
    mode: ReadMode,
) -> Result<(BTreeMap<u64, String>, u64), (Code, String)> {
    let answer = c
        .fetch(FetchRequest {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            read: mode as i32,
            ..Default::default()
        })
        .await
        .map_err(|s| (s.code(), s.message().to_string()))?
        .into_inner();
    let mut out = BTreeMap::new();
    for b in answer.batches {
        for (i, r) in batch::decode(&b.records, b.crc32c)
            .expect("a fetched batch decodes")
            .into_iter()
            .enumerate()
        {
            out.insert(
                b.base_offset + i as u64,
                String::from_utf8(r.value.to_vec()).unwrap(),
            );
        }
    }
    Ok((out, answer.high_watermark))
}

async fn init_producer(c: &mut FjordClient<Channel>) -> Result<u64, (Code, String)> {
    c.init_producer(InitProducerRequest::default())
        .await
        .map(|r| r.into_inner().producer_id)
        .map_err(|s| (s.code(), s.message().to_string()))
}

async fn leader_of_partition(c: &mut FjordClient<Channel>) -> Option<u64> {
    let t = c
        .describe_topic(v1::DescribeTopicRequest { name: TOPIC.into() })
        .await
        .ok()?
        .into_inner()
        .topic?;
    Some(t.partitions[0].leader).filter(|l| *l != 0)
}

/// Polls `check` until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn each_side_of_a_partition_does_what_the_guarantees_table_says() {
    if let Err(why) = Netns::available() {
        assert!(
            std::env::var_os("FJORD_JEPSEN_REQUIRE").is_none_or(|v| v != "1"),
            "network namespaces are not available here (FJORD_JEPSEN_REQUIRE=1): {why}"
        );
        eprintln!("skipped: network namespaces are not available here: {why}");
        return;
    }
    let ids = [1u64, 2, 3];
    let ns = Netns::setup(&net::unique_prefix(), &ids).expect("network namespaces");
    net::enter(&ns.client_ns()).expect("entering the client namespace");
    let net = Network::Netns(ns);
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::new(
        dir.path(),
        &net,
        &ids,
        NodeOptions {
            fjord_bin: fjord_bin(),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 600,
            fake_clock: false,
            lazy_disk: None,
            retention_check_interval_ms: None,
            tls: None,
        },
    )
    .unwrap();
    for id in ids {
        db.start(&net, id).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(scenario(&net, &ids))
    }));
    if !matches!(outcome, Ok(Ok(_))) {
        for id in ids {
            eprintln!("n{id}:\n{}", db.log_tail(id, 40));
        }
        db.shutdown();
        eprintln!("the nodes' logs are kept in {}", dir.keep().display());
    }
    let outcome = outcome.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let logs: BTreeMap<u64, String> = ids
        .iter()
        .map(|&id| (id, db.log_tail(id, 100_000)))
        .collect();
    db.shutdown();
    let leader = outcome.unwrap();
    assert!(
        logs[&leader].contains("no majority answers this leader: AP writes are held"),
        "the old leader n{leader} does not say it held AP writes"
    );
    assert!(
        logs[&leader].contains("AP writes held without a majority are lost"),
        "the old leader n{leader} does not say it dropped the AP writes it held"
    );
}

async fn scenario(net: &Network, ids: &[u64]) -> Result<u64, String> {
    let mut clients = BTreeMap::new();
    for &id in ids {
        clients.insert(id, connect(&net.advertise(id)).await);
    }
    // A topic with one partition on every node, and its leader.
    let mut any = clients[&1].clone();
    eventually("the cluster to register its 3 nodes", || {
        let mut c = any.clone();
        async move {
            let m = c
                .metadata(v1::MetadataRequest::default())
                .await
                .ok()?
                .into_inner();
            (m.nodes.len() == 3).then_some(())
        }
    })
    .await;
    any.create_topic(v1::CreateTopicRequest {
        name: TOPIC.into(),
        partitions: 1,
        replication_factor: 3,
        ..Default::default()
    })
    .await
    .map_err(|s| format!("create topic: {s}"))?;
    let leader = eventually("a leader for the partition", || {
        let mut c = any.clone();
        async move { leader_of_partition(&mut c).await }
    })
    .await;
    let mut at_leader = clients[&leader].clone();
    let base = eventually("a first CP write", || {
        let mut c = at_leader.clone();
        async move { produce(&mut c, Acks::Cp, 0, 0, "base").await.ok() }
    })
    .await;
    assert_eq!(base, 0);
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    println!("leader n{leader}, the others {others:?}");

    // The minority side: the leader and the client, cut off from the other two nodes.
    net.apply(&net::cut(&[leader, CLIENT], &others)).unwrap();
    // A producer starts there: its node hands out an id from its own block.
    let pid = init_producer(&mut at_leader)
        .await
        .map_err(|e| format!("InitProducer on the minority side: {e:?}"))?;
    assert_ne!(pid, 0);
    // An AP write at once: the leader's lease has not lapsed yet, it goes into its log.
    let first = produce(&mut at_leader, Acks::Ap, pid, 0, "minority-ap-0")
        .await
        .map_err(|e| format!("the first AP produce on the minority side: {e:?}"))?;
    assert_eq!(first, 1);
    // A CP read is refused: no majority answers the heartbeat round it waits for (one lease).
    let cp_read = read(&mut at_leader, ReadMode::ReadCp).await;
    assert!(
        matches!(&cp_read, Err((Code::Unavailable, _))),
        "a CP read on the minority side: {:?}",
        cp_read.map(|(_, hw)| hw)
    );
    // By then the lease has lapsed (no quorum answered since the cut): openraft refuses
    // writes, and the leader holds AP writes instead. They are acknowledged, at the offsets
    // after its log.
    for i in 1..5u32 {
        let offset = produce(
            &mut at_leader,
            Acks::Ap,
            pid,
            i,
            &format!("minority-ap-{i}"),
        )
        .await
        .map_err(|e| format!("AP produce {i} on the minority side: {e:?}"))?;
        assert_eq!(offset, 1 + i as u64, "AP write {i} on the minority side");
    }
    // A retry of one of them is recognised, not held twice.
    let retry = produce(&mut at_leader, Acks::Ap, pid, 2, "minority-ap-2").await;
    assert_eq!(retry, Ok(3));
    // AP reads answer, with what this node knows to be committed (stale: not the new writes).
    let (records, hw) = read(&mut at_leader, ReadMode::ReadAp)
        .await
        .map_err(|e| format!("AP read on the minority side: {e:?}"))?;
    assert_eq!(hw, 1);
    assert_eq!(records.get(&0).map(String::as_str), Some("base"));
    // A CP write is refused while the leader holds AP writes: no majority.
    let cp = produce(&mut at_leader, Acks::Cp, 0, 0, "minority-cp").await;
    assert!(
        matches!(&cp, Err((Code::Unavailable, m)) if m.contains("majority")),
        "a CP write on the minority side: {cp:?}"
    );
    println!("minority side: InitProducer, 5 AP writes and an AP read answered; CP refused");

    // The majority side: the client now reaches the two other nodes only.
    let mut all_but_leader = others.clone();
    all_but_leader.push(CLIENT);
    net.apply(&net::cut(&[leader], &all_but_leader)).unwrap();
    let at_other = clients[&others[0]].clone();
    let pid2 = eventually("InitProducer on the majority side", || {
        let mut c = at_other.clone();
        async move { init_producer(&mut c).await.ok() }
    })
    .await;
    assert_ne!(pid2, pid, "two nodes handed out the same producer id");
    // A CP write is acknowledged once the majority elected a leader (retried with the same
    // producer id and sequence: never twice).
    let (new_leader, cp_offset) = eventually("a CP write on the majority side", || {
        let cs: Vec<(u64, FjordClient<Channel>)> =
            others.iter().map(|&o| (o, clients[&o].clone())).collect();
        async move {
            for (o, mut c) in cs {
                if let Ok(off) = produce(&mut c, Acks::Cp, pid2, 0, "majority-cp").await {
                    return Some((o, off));
                }
            }
            None
        }
    })
    .await;
    assert_eq!(cp_offset, 1, "the majority's log has only `base` before it");
    let follower = others.iter().copied().find(|&o| o != new_leader).unwrap();
    let mut at_new = clients[&new_leader].clone();
    let ap_offset = produce(&mut at_new, Acks::Ap, pid2, 1, "majority-ap")
        .await
        .map_err(|e| format!("AP produce on the majority side: {e:?}"))?;
    assert_eq!(ap_offset, 2);
    let (records, _) = read(&mut at_new, ReadMode::ReadCp)
        .await
        .map_err(|e| format!("CP read on the majority side: {e:?}"))?;
    assert_eq!(records.get(&1).map(String::as_str), Some("majority-cp"));
    let mut at_follower = clients[&follower].clone();
    read(&mut at_follower, ReadMode::ReadAp)
        .await
        .map_err(|e| format!("AP read at a follower on the majority side: {e:?}"))?;
    println!(
        "majority side: n{new_leader} leads; InitProducer, CP and AP writes and reads answered"
    );

    // Healed: the old leader follows the new one; the writes it held are gone (the term
    // moved on), and every replica holds the same records at every offset.
    net.apply(&Default::default()).unwrap();
    let expected: BTreeMap<u64, String> = [(0, "base"), (1, "majority-cp"), (2, "majority-ap")]
        .into_iter()
        .map(|(o, v)| (o, v.to_string()))
        .collect();
    for &id in ids {
        let c = clients[&id].clone();
        let want = expected.clone();
        eventually(&format!("n{id} to hold the majority's log"), || {
            let mut c = c.clone();
            let want = want.clone();
            async move {
                let (records, hw) = read(&mut c, ReadMode::ReadAp).await.ok()?;
                (hw == 3 && records == want).then_some(())
            }
        })
        .await;
    }
    let (records, hw) = read(&mut at_new, ReadMode::ReadCp)
        .await
        .map_err(|e| format!("CP read after the heal: {e:?}"))?;
    assert_eq!((records, hw), (expected, 3));
    println!("healed: the 5 AP writes held on the minority side are lost; the replicas agree");
    group_scenario(net, ids, &clients).await?;
    Ok(leader)
}

/// The group rows of the table: a member of group [`GROUP`] owns the partition and commits;
/// its coordinator is cut off with the client (heartbeats and commits refused), then the
/// client reaches the majority side, whose new coordinator keeps the member, its partition
/// and its committed offset.
async fn group_scenario(
    net: &Network,
    ids: &[u64],
    clients: &BTreeMap<u64, FjordClient<Channel>>,
) -> Result<(), String> {
    let coordinator = eventually("the group's coordinator", || {
        let mut c = clients[&ids[0]].clone();
        async move { find_coordinator(&mut c).await }
    })
    .await;
    let mut at_coordinator = clients[&coordinator].clone();
    let joined = eventually("the member to own the partition", || {
        let mut c = at_coordinator.clone();
        async move { join_and_own(&mut c).await }
    })
    .await;
    let (member, epoch) = (joined.member_id.clone(), joined.member_epoch);
    commit(&mut at_coordinator, &member, epoch, 1)
        .await
        .map_err(|e| format!("a commit at the coordinator: {e:?}"))?;
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != coordinator).collect();
    println!("group: n{coordinator} coordinates, member {member} at epoch {epoch} committed 1");

    // The minority side: the coordinator and the client. Every group answer waits for a
    // majority (a write, or a ReadIndex round when nothing changes): refused.
    net.apply(&net::cut(&[coordinator, CLIENT], &others))
        .unwrap();
    let hb = heartbeat(&mut at_coordinator, &member, epoch).await;
    assert!(
        matches!(&hb, Err((Code::Unavailable | Code::DeadlineExceeded, _))),
        "a heartbeat at the coordinator on the minority side: {hb:?}"
    );
    let c = commit(&mut at_coordinator, &member, epoch, 2).await;
    assert!(
        matches!(&c, Err((Code::Unavailable | Code::DeadlineExceeded, _))),
        "a commit at the coordinator on the minority side: {c:?}"
    );
    println!("group: minority side: heartbeat and commit refused");

    // The majority side elects a new coordinator, which keeps the member (sessions count from
    // its takeover), its partition, and the offset committed before the cut.
    let mut majority = others.clone();
    majority.push(CLIENT);
    net.apply(&net::cut(&[coordinator], &majority)).unwrap();
    let new_coordinator = eventually("a coordinator on the majority side", || {
        let cs: Vec<FjordClient<Channel>> = others.iter().map(|o| clients[o].clone()).collect();
        async move {
            for mut c in cs {
                match find_coordinator(&mut c).await {
                    Some(n) if n != coordinator => return Some(n),
                    _ => {}
                }
            }
            None
        }
    })
    .await;
    let mut at_new = clients[&new_coordinator].clone();
    let answer = eventually("a heartbeat at the new coordinator", || {
        let mut c = at_new.clone();
        let member = member.clone();
        async move { heartbeat(&mut c, &member, epoch).await.ok() }
    })
    .await;
    assert_eq!(answer.member_epoch, epoch, "the member kept its epoch");
    assert_eq!(owned(&answer), vec![0], "the member kept its partition");
    assert_eq!(committed(&mut at_new).await?, Some(1));
    commit(&mut at_new, &member, epoch, 2)
        .await
        .map_err(|e| format!("a commit at the new coordinator: {e:?}"))?;
    println!("group: majority side: n{new_coordinator} coordinates, the member and offset 1 kept");

    net.apply(&Default::default()).unwrap();
    eventually(
        "the old coordinator's node to lead clients to offset 2",
        || {
            let mut healed = clients[&coordinator].clone();
            async move {
                let now = find_coordinator(&mut healed).await?;
                let mut c = clients[&now].clone();
                (committed(&mut c).await.ok()? == Some(2)).then_some(())
            }
        },
    )
    .await;
    println!("group: healed: the offset committed on the majority side is served everywhere");
    Ok(())
}

async fn find_coordinator(c: &mut FjordClient<Channel>) -> Option<u64> {
    let r = c
        .find_coordinator(v1::FindCoordinatorRequest {
            group: GROUP.into(),
        })
        .await
        .ok()?
        .into_inner();
    (r.node_id != 0).then_some(r.node_id)
}

fn owned(answer: &v1::GroupHeartbeatResponse) -> Vec<u32> {
    answer
        .assignment
        .iter()
        .filter(|t| t.topic == TOPIC)
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

/// Joins (or, once joined, heartbeats) until the member owns partition 0; `None` until then.
async fn join_and_own(c: &mut FjordClient<Channel>) -> Option<v1::GroupHeartbeatResponse> {
    let mut answer = heartbeat(c, "", 0).await.ok()?;
    for _ in 0..20 {
        if owned(&answer) == [0] {
            return Some(answer);
        }
        answer = heartbeat(c, &answer.member_id.clone(), answer.member_epoch)
            .await
            .ok()?;
    }
    None
}

/// A heartbeat of member `member` at `epoch` (0 with no member id: a join) that says it owns
/// partition 0 unless it is joining.
async fn heartbeat(
    c: &mut FjordClient<Channel>,
    member: &str,
    epoch: i32,
) -> Result<v1::GroupHeartbeatResponse, (Code, String)> {
    let joining = epoch == 0;
    let owned = (!joining).then(|| v1::OwnedPartitions {
        partitions: vec![v1::TopicPartitions {
            topic: TOPIC.into(),
            partitions: vec![0],
        }],
    });
    c.group_heartbeat(v1::GroupHeartbeatRequest {
        group: GROUP.into(),
        member_id: member.into(),
        member_epoch: epoch,
        subscription: joining.then(|| v1::Subscription {
            topics: vec![TOPIC.into()],
            pattern: None,
        }),
        owned,
        ..Default::default()
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|s| (s.code(), s.message().to_string()))
}

async fn commit(
    c: &mut FjordClient<Channel>,
    member: &str,
    epoch: i32,
    offset: u64,
) -> Result<(), (Code, String)> {
    c.commit_offsets(v1::CommitOffsetsRequest {
        group: GROUP.into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![v1::OffsetCommit {
            topic: TOPIC.into(),
            partition: 0,
            offset,
            metadata: String::new(),
        }],
    })
    .await
    .map(|_| ())
    .map_err(|s| (s.code(), s.message().to_string()))
}

/// The group's committed offset of partition 0, by an admin fetch.
async fn committed(c: &mut FjordClient<Channel>) -> Result<Option<u64>, String> {
    let r = c
        .fetch_offsets(v1::FetchOffsetsRequest {
            group: GROUP.into(),
            member_id: String::new(),
            member_epoch: -1,
            partitions: vec![],
        })
        .await
        .map_err(|s| format!("an admin offset fetch: {s}"))?
        .into_inner();
    Ok(r.offsets
        .iter()
        .find(|o| o.topic == TOPIC && o.partition == 0)
        .and_then(|o| o.offset))
}
