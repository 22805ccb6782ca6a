//! The records a coordinator partition's log holds, and how they replay into
//! [`Groups`](crate::Groups).
//!
//! Every change to a group is written as records before it is answered; every replica applies
//! the committed records in log order, so every replica holds the same groups and a new
//! coordinator has them at once. Each record has a **key** (what it is about) and a value, or
//! none for a *tombstone* (it is gone): the last record of a key says all there is about it,
//! so a compacted log (keeping the last record per key) replays to the same groups.
//!
//! | key                   | value                 | tombstone                               |
//! |-----------------------|-----------------------|-----------------------------------------|
//! | group                 | [`GroupMeta`]         | the group is gone (written last)        |
//! | group, member id      | [`Member`]            | the member left or was removed          |
//! | group, member id      | its target partitions | (with the member's)                     |
//! | group, topic/partition| [`Committed`]         | the offset expired, was reset or deleted|
//! | group (config)        | [`GroupConfig`]       | every override cleared, or the group gone|
//!
//! Encoding: a kind byte, then postcard, for the key; postcard for the value. Record types
//! only ever get new kinds (old logs still decode): a changed value is a new kind.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::{Committed, GroupConfig, GroupMeta, Member, Tp};

/// One change to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Meta {
        group: String,
        meta: GroupMeta,
    },
    /// The group is gone (its members, targets and offsets have their own tombstones before).
    GroupGone {
        group: String,
    },
    Member {
        group: String,
        member: Member,
    },
    MemberGone {
        group: String,
        member: String,
    },
    Target {
        group: String,
        member: String,
        partitions: BTreeSet<Tp>,
    },
    TargetGone {
        group: String,
        member: String,
    },
    Offset {
        group: String,
        tp: Tp,
        committed: Committed,
    },
    OffsetGone {
        group: String,
        tp: Tp,
    },
    /// The group's overrides of the server's defaults (never all `None`: that is
    /// [`GroupRecord::ConfigGone`]).
    Config {
        group: String,
        config: GroupConfig,
    },
    /// The group overrides nothing: the server's defaults apply.
    ConfigGone {
        group: String,
    },
}

const META: u8 = 0;
const MEMBER: u8 = 1;
const TARGET: u8 = 2;
const OFFSET: u8 = 3;
const CONFIG: u8 = 4;

/// Bytes that are not a record this version knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt group record: {0}")]
pub struct DecodeError(String);

#[derive(Serialize, Deserialize)]
struct MemberKey<'a> {
    group: &'a str,
    member: &'a str,
}

#[derive(Serialize, Deserialize)]
struct OffsetKey<'a> {
    group: &'a str,
    tp: Tp,
}

fn key_of(kind: u8, body: &impl Serialize) -> Vec<u8> {
    let mut out = vec![kind];
    // A String, a &str and a Tp always encode: postcard fails only on types it cannot
    // represent.
    out.extend(postcard::to_stdvec(body).expect("group record keys encode"));
    out
}

fn value_of(body: &impl Serialize) -> Vec<u8> {
    postcard::to_stdvec(body).expect("group record values encode")
}

impl GroupRecord {
    /// Whether it may change a heartbeat's answer: everything but committed offsets. A
    /// coordinator decides its held heartbeats again after such a record
    /// ([`crate::heartbeat::may_hold`]).
    pub fn changes_members(&self) -> bool {
        !matches!(
            self,
            GroupRecord::Offset { .. } | GroupRecord::OffsetGone { .. }
        )
    }

    /// The group the record is about.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Meta { group, .. }
            | GroupRecord::GroupGone { group }
            | GroupRecord::Member { group, .. }
            | GroupRecord::MemberGone { group, .. }
            | GroupRecord::Target { group, .. }
            | GroupRecord::TargetGone { group, .. }
            | GroupRecord::Offset { group, .. }
            | GroupRecord::OffsetGone { group, .. }
            | GroupRecord::Config { group, .. }
            | GroupRecord::ConfigGone { group } => group,
        }
    }

    /// `(key, value)`; a tombstone has no value.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            GroupRecord::Meta { group, meta } => (key_of(META, group), Some(value_of(meta))),
            GroupRecord::GroupGone { group } => (key_of(META, group), None),
            GroupRecord::Member { group, member } => (
                key_of(
                    MEMBER,
                    &MemberKey {
                        group,
                        member: &member.id,
                    },
                ),
                Some(value_of(member)),
            ),
            GroupRecord::MemberGone { group, member } => {
                (key_of(MEMBER, &MemberKey { group, member }), None)
            }
            GroupRecord::Target {
                group,
                member,
                partitions,
            } => (
                key_of(TARGET, &MemberKey { group, member }),
                Some(value_of(partitions)),
            ),
            GroupRecord::TargetGone { group, member } => {
                (key_of(TARGET, &MemberKey { group, member }), None)
            }
            GroupRecord::Offset {
                group,
                tp,
                committed,
            } => (
                key_of(OFFSET, &OffsetKey { group, tp: *tp }),
                Some(value_of(committed)),
            ),
            GroupRecord::OffsetGone { group, tp } => {
                (key_of(OFFSET, &OffsetKey { group, tp: *tp }), None)
            }
            GroupRecord::Config { group, config } => {
                (key_of(CONFIG, group), Some(value_of(config)))
            }
            GroupRecord::ConfigGone { group } => (key_of(CONFIG, group), None),
        }
    }

    /// The record a `(key, value)` encodes.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, DecodeError> {
        let bad = |e: postcard::Error| DecodeError(e.to_string());
        let Some((&kind, body)) = key.split_first() else {
            return Err(DecodeError("an empty key".into()));
        };
        Ok(match kind {
            META => {
                let group: String = postcard::from_bytes(body).map_err(bad)?;
                match value {
                    Some(v) => GroupRecord::Meta {
                        group,
                        meta: postcard::from_bytes(v).map_err(bad)?,
                    },
                    None => GroupRecord::GroupGone { group },
                }
            }
            MEMBER => {
                let k: MemberKey = postcard::from_bytes(body).map_err(bad)?;
                match value {
                    Some(v) => {
                        let member: Member = postcard::from_bytes(v).map_err(bad)?;
                        if member.id != k.member {
                            return Err(DecodeError(format!(
                                "member record keyed {:?} holds member {:?}",
                                k.member, member.id
                            )));
                        }
                        GroupRecord::Member {
                            group: k.group.to_string(),
                            member,
                        }
                    }
                    None => GroupRecord::MemberGone {
                        group: k.group.to_string(),
                        member: k.member.to_string(),
                    },
                }
            }
            TARGET => {
                let k: MemberKey = postcard::from_bytes(body).map_err(bad)?;
                let (group, member) = (k.group.to_string(), k.member.to_string());
                match value {
                    Some(v) => GroupRecord::Target {
                        group,
                        member,
                        partitions: postcard::from_bytes(v).map_err(bad)?,
                    },
                    None => GroupRecord::TargetGone { group, member },
                }
            }
            OFFSET => {
                let k: OffsetKey = postcard::from_bytes(body).map_err(bad)?;
                let (group, tp) = (k.group.to_string(), k.tp);
                match value {
                    Some(v) => GroupRecord::Offset {
                        group,
                        tp,
                        committed: postcard::from_bytes(v).map_err(bad)?,
                    },
                    None => GroupRecord::OffsetGone { group, tp },
                }
            }
            CONFIG => {
                let group: String = postcard::from_bytes(body).map_err(bad)?;
                match value {
                    Some(v) => GroupRecord::Config {
                        group,
                        config: postcard::from_bytes(v).map_err(bad)?,
                    },
                    None => GroupRecord::ConfigGone { group },
                }
            }
            other => return Err(DecodeError(format!("unknown record kind {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MemberState, Subscription};
    use std::collections::BTreeMap;

    #[test]
    fn every_record_round_trips() {
        let member = Member {
            id: "m-1".into(),
            instance_id: Some("svc-0".into()),
            client_id: "c".into(),
            client_host: "10.0.0.1".into(),
            subscription: Subscription {
                topics: ["orders".to_string()].into(),
                pattern: Some("x.*".into()),
            },
            rebalance_timeout_ms: 5,
            epoch: 3,
            previous_epoch: 2,
            state: MemberState::UnrevokedPartitions,
            assigned: BTreeMap::from([(Tp::new(1, 2), 3)]),
            pending_revocation: BTreeMap::from([(Tp::new(1, 3), 1)]),
            left_static: true,
        };
        let g = "g".to_string();
        let records = [
            GroupRecord::Meta {
                group: g.clone(),
                meta: GroupMeta {
                    epoch: 4,
                    assignment_epoch: 3,
                    empty_since_ms: Some(9),
                    subscribed: BTreeMap::from([(1, 6)]),
                    ..GroupMeta::default()
                },
            },
            GroupRecord::GroupGone { group: g.clone() },
            GroupRecord::Member {
                group: g.clone(),
                member,
            },
            GroupRecord::MemberGone {
                group: g.clone(),
                member: "m-1".into(),
            },
            GroupRecord::Target {
                group: g.clone(),
                member: "m-1".into(),
                partitions: [Tp::new(1, 2)].into(),
            },
            GroupRecord::TargetGone {
                group: g.clone(),
                member: "m-1".into(),
            },
            GroupRecord::Offset {
                group: g.clone(),
                tp: Tp::new(1, 2),
                committed: Committed {
                    offset: 7,
                    metadata: "m".into(),
                    commit_time_ms: 11,
                },
            },
            GroupRecord::OffsetGone {
                group: g.clone(),
                tp: Tp::new(1, 2),
            },
            GroupRecord::Config {
                group: g.clone(),
                config: GroupConfig {
                    session_timeout_ms: Some(2_000),
                    heartbeat_interval_ms: None,
                    assignor: Some(crate::model::Assignor::Range),
                },
            },
            GroupRecord::ConfigGone { group: g },
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(GroupRecord::decode(&k, v.as_deref()).unwrap(), r);
        }
    }

    #[test]
    fn a_record_and_its_tombstone_share_a_key() {
        let g = "g".to_string();
        let tp = Tp::new(1, 0);
        let (k1, _) = GroupRecord::Offset {
            group: g.clone(),
            tp,
            committed: Committed {
                offset: 1,
                metadata: String::new(),
                commit_time_ms: 0,
            },
        }
        .encode();
        let (k2, v2) = GroupRecord::OffsetGone { group: g, tp }.encode();
        assert_eq!(k1, k2);
        assert!(v2.is_none());
    }

    #[test]
    fn a_config_and_its_tombstone_share_a_key_apart_from_the_meta_s() {
        let g = "g".to_string();
        let (k1, _) = GroupRecord::Config {
            group: g.clone(),
            config: GroupConfig {
                session_timeout_ms: Some(1_000),
                ..GroupConfig::default()
            },
        }
        .encode();
        let (k2, v2) = GroupRecord::ConfigGone { group: g.clone() }.encode();
        let (k3, _) = GroupRecord::GroupGone { group: g }.encode();
        assert_eq!(k1, k2);
        assert!(v2.is_none());
        assert_ne!(k1, k3);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(GroupRecord::decode(&[], None).is_err());
        assert!(GroupRecord::decode(&[9, 1, 2], Some(&[1])).is_err());
        assert!(GroupRecord::decode(&[MEMBER, 200], Some(&[255, 255])).is_err());
    }
}
