//! Node ids and Raft group ids.
//!
//! Group 0 is the metadata group ([`META_GROUP`]); every partition has its own group whose id
//! packs the topic id into the high 32 bits and the partition into the low 32 bits. Topic ids
//! start at 1, so a partition's group id is never 0, and topic ids are never reused, so a
//! deleted topic's groups never collide with a new topic's.

/// A node of the cluster.
pub type NodeId = u64;

/// A Raft group id. 0 is the metadata group; a partition's group is
/// [`group_id`]`(topic_id, partition)` = `((topic_id as u64) << 32) | partition as u64`.
/// Topic ids start at 1, so a partition's group id is never 0.
pub type GroupId = u64;

/// The metadata (controller) Raft group.
pub const META_GROUP: GroupId = 0;

/// The Raft group id of `partition` of topic `topic_id`.
pub fn group_id(topic_id: u32, partition: u32) -> GroupId {
    (u64::from(topic_id) << 32) | u64::from(partition)
}

/// The inverse of [`group_id`]: `(topic_id, partition)`.
pub fn split_group_id(g: GroupId) -> (u32, u32) {
    // Truncation is the point: the halves are the two packed u32s.
    ((g >> 32) as u32, g as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn meta_group_is_not_a_partition_group() {
        assert_eq!(split_group_id(META_GROUP), (0, 0));
        assert_ne!(group_id(1, 0), META_GROUP);
    }

    proptest! {
        #[test]
        fn group_id_round_trips(topic in any::<u32>(), partition in any::<u32>()) {
            prop_assert_eq!(split_group_id(group_id(topic, partition)), (topic, partition));
        }
    }
}
