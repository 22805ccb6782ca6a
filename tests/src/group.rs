//! Waits on consumer groups, shared by the group tests.

use std::collections::BTreeSet;
use std::time::Duration;

use fjord_client::{Client, GroupDescription};

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
