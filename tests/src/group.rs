//! Waits on consumer groups, shared by the group tests.

use std::collections::BTreeSet;
use std::time::Duration;

use fjord_client::{Client, GroupDescription, ProducerConfig, ProducerRecord, ResetSpec};

use crate::wait_for;

/// Long enough for any election and rebalance in these tests; a bound, never a sleep.
pub const GROUP_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `group` has committed every record of its partitions (each committed offset
/// is its partition's high watermark) and the partitions hold at least `records` records;
/// returns the description.
pub async fn caught_up(client: &Client, group: &str, records: u64) -> GroupDescription {
    wait_for(
        &format!("group {group} to commit {records} records"),
        GROUP_DEADLINE,
        || async {
            let d = client.describe_group(group).await.ok()?;
            let held: u64 = d.partitions.iter().map(|p| p.high_watermark).sum();
            let committed = d
                .partitions
                .iter()
                .all(|p| p.committed_offset == Some(p.high_watermark) || p.high_watermark == 0);
            (committed && held >= records).then_some(d)
        },
    )
    .await
}

/// Waits until `group` is stable with `members` members and its `partitions` partitions are
/// each owned by exactly one of them; returns the description.
pub async fn stable(
    client: &Client,
    group: &str,
    partitions: usize,
    members: usize,
) -> GroupDescription {
    wait_for(
        &format!("group {group}: stable, {members} members owning {partitions} partitions"),
        GROUP_DEADLINE,
        || async {
            let d = client.describe_group(group).await.ok()?;
            let owned: Vec<(String, u32)> =
                d.members.iter().flat_map(|m| m.assigned.clone()).collect();
            let distinct: BTreeSet<_> = owned.iter().collect();
            (d.state == "STABLE"
                && d.members.len() == members
                && owned.len() == partitions
                && distinct.len() == partitions)
                .then_some(d)
        },
    )
    .await
}

/// Partitions of [`reads_led_elsewhere`]'s topic, one replica each: spread over the nodes,
/// some are led by a node other than the group's coordinator, which then holds no replica
/// of them (asserted from the description's coordinator and the metadata's leaders).
pub const ELSEWHERE_PARTITIONS: u32 = 6;
/// Records per partition, stamped one millisecond apart.
const ELSEWHERE_RECORDS: i64 = 10;
/// How long before the test's start the records are stamped.
const ELSEWHERE_AGE_MS: i64 = 60_000;

/// `admin` creates `topic` ([`ELSEWHERE_PARTITIONS`] partitions, one replica each) and
/// writes 10 records to every partition stamped `t..t+10` ms (`t` a minute ago); `user`
/// (who may read the topic and the group) then sets the empty `group` at each partition's
/// start, resets it by time to `t+5`, and describes it. Checks that the reset landed on
/// offset 5 everywhere and that every partition shows its lag in time (the record at
/// offset 5, a minute old), in particular those led by another node than the coordinator:
/// both need a read at the partition's leader, which the coordinator makes over the
/// node-to-node service.
pub async fn reads_led_elsewhere(admin: &Client, user: &Client, topic: &str, group: &str) {
    admin
        .create_topic(topic, ELSEWHERE_PARTITIONS, 1)
        .await
        .expect("create the topic");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t = now_ms - ELSEWHERE_AGE_MS;
    let producer = admin
        .producer(topic, ProducerConfig::default())
        .expect("producer");
    for p in 0..ELSEWHERE_PARTITIONS {
        for i in 0..ELSEWHERE_RECORDS {
            let record = ProducerRecord::new(format!("v{i}"))
                .with_partition(p)
                .with_timestamp_ms(t + i);
            producer.send(record).await.expect("send");
        }
    }
    let moved = user
        .reset_offsets(group, Some(topic), ResetSpec::Earliest)
        .await
        .expect("the reset to the start");
    assert_eq!(moved.len(), ELSEWHERE_PARTITIONS as usize, "{moved:?}");

    let moved = user
        .reset_offsets(group, Some(topic), ResetSpec::Time(t + 5))
        .await
        .expect("the reset by time");
    let mut offsets: Vec<(u32, u64)> = moved.iter().map(|(_, p, o)| (*p, *o)).collect();
    offsets.sort_unstable();
    let want: Vec<(u32, u64)> = (0..ELSEWHERE_PARTITIONS).map(|p| (p, 5)).collect();
    assert_eq!(offsets, want, "every partition at the first record at t+5");

    let d = user.describe_group(group).await.expect("describe");
    let leaders = wait_for("every partition's leader", GROUP_DEADLINE, || async {
        let t = admin.describe_topic(topic).await.ok()?;
        t.partitions
            .iter()
            .map(|p| p.leader)
            .collect::<Option<Vec<u64>>>()
    })
    .await;
    let elsewhere: Vec<u32> = (0..ELSEWHERE_PARTITIONS)
        .filter(|p| leaders[*p as usize] != d.coordinator)
        .collect();
    assert!(
        !elsewhere.is_empty(),
        "some partition is led by another node than the coordinator {}: {leaders:?}",
        d.coordinator
    );
    assert_eq!(d.partitions.len(), ELSEWHERE_PARTITIONS as usize, "{d:?}");
    for p in &d.partitions {
        assert_eq!(
            (p.committed_offset, p.high_watermark, p.lag_records),
            (Some(5), ELSEWHERE_RECORDS as u64, Some(5)),
            "{p:?}"
        );
        // The record at offset 5 is stamped t+5: a minute old at least.
        let lag = p.lag_ms.unwrap_or_else(|| {
            panic!(
                "no lag in time for partition {} (led by node {}, coordinator {}): {d:?}",
                p.partition, leaders[p.partition as usize], d.coordinator
            )
        });
        assert!(lag >= ELSEWHERE_AGE_MS - 5, "{p:?}");
    }
}
