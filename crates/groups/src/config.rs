//! A group's configuration: its own overrides of the server's defaults (Kafka 4.0's group
//! configs `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`, and
//! the assignor), set and cleared by AlterGroupConfig, as a pure decision; and the settings in
//! force ([`effective`]).
//!
//! # The rules
//! 1. Each setting is kept, set, or reset (back to the server's default); a request changes
//!    at least one.
//! 2. A session timeout is [`MIN_SESSION_TIMEOUT_MS`] to [`MAX_SESSION_TIMEOUT_MS`] and a
//!    heartbeat interval [`MIN_HEARTBEAT_INTERVAL_MS`] to [`MAX_HEARTBEAT_INTERVAL_MS`] (the
//!    limits of the server's own flags), and the heartbeat interval in force stays below the
//!    session timeout in force, each the group's own or else the server's default.
//! 3. A group that does not exist yet is created, empty, as Kafka lets a group be configured
//!    before its first member joins; it counts against [`MAX_GROUPS_PER_COORDINATOR`]. Resets
//!    alone on a group that does not exist create nothing.
//! 4. A change takes effect at once: a member's next heartbeat answer carries the heartbeat
//!    interval; the coordinator restarts the session clocks of the group's members with the
//!    new session timeout; a change of the assignor in force bumps the group epoch of a group
//!    with members, so that its target assignment is computed again with it.
//! 5. The assignor in force is the group's own; else the one the first member to join the
//!    empty group asked for (its heartbeat's `assignor`); else uniform.
//! 6. The overrides live with the group: deleting the group clears them. An empty group that
//!    overrides anything is kept once its offsets expire ([`crate::offsets::expire`]).
//!
//! A heartbeat interval kept from before is no longer below the session timeout when the
//! server's defaults change (a restart with other flags): the interval in force is then a
//! third of the session timeout.

use crate::error::GroupError;
use crate::groups::Work;
use crate::heartbeat::{Decision, Defaults, check_group_name};
use crate::limits::*;
use crate::model::{Assignor, Group, GroupConfig};

/// What an AlterGroupConfig does to one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Change<T> {
    /// Leaves it as it is.
    #[default]
    Keep,
    /// The group's own value from now on.
    Set(T),
    /// Back to the server's default.
    Reset,
}

impl<T: Copy> Change<T> {
    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Set(v) => Some(v),
            Change::Reset => None,
        }
    }
}

/// An AlterGroupConfig, in domain types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterConfigRequest {
    pub group: String,
    pub session_timeout_ms: Change<u32>,
    pub heartbeat_interval_ms: Change<u32>,
    pub assignor: Change<Assignor>,
}

/// A group's settings in force, and which of them are its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    pub assignor: Assignor,
    /// The group's own settings: a `None` is the server's default (for the assignor: the
    /// members' choice).
    pub overrides: GroupConfig,
}

/// The settings in force for `group` (`None`: a group not created yet).
pub fn effective(group: Option<&Group>, defaults: Defaults) -> Effective {
    let overrides = group.map(|g| g.config).unwrap_or_default();
    let session_timeout_ms = overrides
        .session_timeout_ms
        .unwrap_or(defaults.session_timeout_ms);
    let mut heartbeat_interval_ms = overrides
        .heartbeat_interval_ms
        .unwrap_or(defaults.heartbeat_interval_ms);
    if heartbeat_interval_ms >= session_timeout_ms {
        // Only after the server's defaults changed under a kept override (see the module doc).
        heartbeat_interval_ms = (session_timeout_ms / 3).max(1);
    }
    Effective {
        session_timeout_ms,
        heartbeat_interval_ms,
        assignor: group.map_or(Assignor::default(), Group::assignor),
        overrides,
    }
}

/// Decides an AlterGroupConfig on `group` (`None`: the coordinator holds no such group);
/// answers the settings in force after it.
pub fn alter(
    group: Option<&Group>,
    req: &AlterConfigRequest,
    defaults: Defaults,
    now_ms: i64,
    groups_held: usize,
) -> Result<Decision<Effective>, GroupError> {
    check(req)?;
    let current = group.map(|g| g.config).unwrap_or_default();
    let config = GroupConfig {
        session_timeout_ms: req.session_timeout_ms.apply(current.session_timeout_ms),
        heartbeat_interval_ms: req
            .heartbeat_interval_ms
            .apply(current.heartbeat_interval_ms),
        assignor: req.assignor.apply(current.assignor),
    };
    check_timing(&config, defaults)?;
    if group.is_none() {
        if config.is_default() {
            return Ok(Decision {
                answer: effective(None, defaults),
                records: Vec::new(),
            });
        }
        if groups_held >= MAX_GROUPS_PER_COORDINATOR {
            return Err(GroupError::TooManyGroups {
                limit: MAX_GROUPS_PER_COORDINATOR,
            });
        }
    }
    let mut w = Work::new(group, &req.group);
    if group.is_none() {
        w.meta().empty_since_ms = Some(now_ms);
    }
    let before = w.group.assignor();
    w.set_config(config);
    if w.group.assignor() != before && !w.group.members.is_empty() {
        w.bump_epoch();
    }
    let answer = effective(Some(&w.group), defaults);
    Ok(Decision {
        answer,
        records: w.finish(),
    })
}

/// Rules 1 and 2's bounds on each value set.
fn check(req: &AlterConfigRequest) -> Result<(), GroupError> {
    check_group_name(&req.group)?;
    if req.session_timeout_ms == Change::Keep
        && req.heartbeat_interval_ms == Change::Keep
        && req.assignor == Change::Keep
    {
        return Err(GroupError::invalid(
            "group config",
            "it changes nothing: set or reset the session timeout, the heartbeat interval or the assignor",
        ));
    }
    if let Change::Set(ms) = req.session_timeout_ms
        && !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&ms)
    {
        return Err(GroupError::invalid(
            "session timeout",
            format!(
                "{ms} ms; it must be {MIN_SESSION_TIMEOUT_MS} to {MAX_SESSION_TIMEOUT_MS} ms \
                 (MIN_SESSION_TIMEOUT_MS to MAX_SESSION_TIMEOUT_MS)"
            ),
        ));
    }
    if let Change::Set(ms) = req.heartbeat_interval_ms
        && !(MIN_HEARTBEAT_INTERVAL_MS..=MAX_HEARTBEAT_INTERVAL_MS).contains(&ms)
    {
        return Err(GroupError::invalid(
            "heartbeat interval",
            format!(
                "{ms} ms; it must be {MIN_HEARTBEAT_INTERVAL_MS} to {MAX_HEARTBEAT_INTERVAL_MS} ms \
                 (MIN_HEARTBEAT_INTERVAL_MS to MAX_HEARTBEAT_INTERVAL_MS)"
            ),
        ));
    }
    Ok(())
}

/// Rule 2's order: the heartbeat interval in force below the session timeout in force.
fn check_timing(config: &GroupConfig, defaults: Defaults) -> Result<(), GroupError> {
    let whose = |own: Option<u32>| {
        if own.is_some() {
            "the group's"
        } else {
            "the server's default"
        }
    };
    let session = config
        .session_timeout_ms
        .unwrap_or(defaults.session_timeout_ms);
    let heartbeat = config
        .heartbeat_interval_ms
        .unwrap_or(defaults.heartbeat_interval_ms);
    if heartbeat >= session {
        return Err(GroupError::invalid(
            "heartbeat interval",
            format!(
                "{heartbeat} ms ({}) must be below the session timeout, {session} ms ({}): \
                 set both",
                whose(config.heartbeat_interval_ms),
                whose(config.session_timeout_ms),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Groups;
    use crate::record::GroupRecord;

    fn req(
        session: Change<u32>,
        heartbeat: Change<u32>,
        assignor: Change<Assignor>,
    ) -> AlterConfigRequest {
        AlterConfigRequest {
            group: "g".into(),
            session_timeout_ms: session,
            heartbeat_interval_ms: heartbeat,
            assignor,
        }
    }

    fn replay(groups: &mut Groups, records: &[GroupRecord]) {
        for r in records {
            let (k, v) = r.encode();
            groups.apply(&GroupRecord::decode(&k, v.as_deref()).unwrap());
        }
        groups.validate().unwrap();
    }

    fn invalid_what(e: GroupError) -> &'static str {
        match e {
            GroupError::Invalid { what, .. } => what,
            other => panic!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn a_group_is_configured_before_it_exists_and_the_overrides_replay() {
        let mut groups = Groups::default();
        let d = alter(
            None,
            &req(
                Change::Set(2_000),
                Change::Set(500),
                Change::Set(Assignor::Range),
            ),
            Defaults::default(),
            7,
            0,
        )
        .unwrap();
        assert_eq!(d.answer.session_timeout_ms, 2_000);
        assert_eq!(d.answer.heartbeat_interval_ms, 500);
        assert_eq!(d.answer.assignor, Assignor::Range);
        replay(&mut groups, &d.records);
        let g = groups.get("g").unwrap();
        assert_eq!(g.config.session_timeout_ms, Some(2_000));
        assert_eq!(g.meta.empty_since_ms, Some(7));
        assert_eq!(effective(Some(g), Defaults::default()), d.answer);
        // A snapshot keeps them.
        let mut copy = Groups::default();
        replay(&mut copy, &groups.snapshot());
        assert_eq!(copy, groups);
    }

    #[test]
    fn a_reset_goes_back_to_the_server_s_default_and_keeps_the_rest() {
        let mut groups = Groups::default();
        let d = alter(
            None,
            &req(Change::Set(20_000), Change::Set(500), Change::Keep),
            Defaults::default(),
            0,
            0,
        )
        .unwrap();
        replay(&mut groups, &d.records);
        let d = alter(
            groups.get("g"),
            &req(Change::Keep, Change::Reset, Change::Keep),
            Defaults::default(),
            0,
            1,
        )
        .unwrap();
        replay(&mut groups, &d.records);
        let e = effective(groups.get("g"), Defaults::default());
        assert_eq!(e.heartbeat_interval_ms, DEFAULT_HEARTBEAT_INTERVAL_MS);
        assert_eq!(e.overrides.heartbeat_interval_ms, None);
        assert_eq!(e.session_timeout_ms, 20_000);
        // Resetting everything leaves a config tombstone; the group overrides nothing.
        let d = alter(
            groups.get("g"),
            &req(Change::Reset, Change::Keep, Change::Reset),
            Defaults::default(),
            0,
            1,
        )
        .unwrap();
        assert!(matches!(d.records[..], [GroupRecord::ConfigGone { .. }]));
        replay(&mut groups, &d.records);
        assert!(groups.get("g").unwrap().config.is_default());
    }

    #[test]
    fn resets_alone_create_no_group() {
        let d = alter(
            None,
            &req(Change::Reset, Change::Reset, Change::Keep),
            Defaults::default(),
            0,
            0,
        )
        .unwrap();
        assert!(d.records.is_empty());
        assert_eq!(d.answer.session_timeout_ms, DEFAULT_SESSION_TIMEOUT_MS);
    }

    #[test]
    fn values_outside_the_limits_are_refused_naming_the_limit() {
        let d = Defaults::default();
        let e = alter(
            None,
            &req(Change::Set(999), Change::Keep, Change::Keep),
            d,
            0,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("MIN_SESSION_TIMEOUT_MS"), "{e}");
        assert_eq!(invalid_what(e), "session timeout");
        let e = alter(
            None,
            &req(
                Change::Set(MAX_SESSION_TIMEOUT_MS + 1),
                Change::Keep,
                Change::Keep,
            ),
            d,
            0,
            0,
        )
        .unwrap_err();
        assert_eq!(invalid_what(e), "session timeout");
        for hb in [0, 99, MAX_HEARTBEAT_INTERVAL_MS + 1] {
            let e = alter(
                None,
                &req(Change::Keep, Change::Set(hb), Change::Keep),
                d,
                0,
                0,
            )
            .unwrap_err();
            assert!(e.to_string().contains("MIN_HEARTBEAT_INTERVAL_MS"), "{e}");
        }
        let e = alter(
            None,
            &req(Change::Keep, Change::Keep, Change::Keep),
            d,
            0,
            0,
        )
        .unwrap_err();
        assert_eq!(invalid_what(e), "group config");
    }

    #[test]
    fn the_heartbeat_interval_in_force_stays_below_the_session_timeout_in_force() {
        let d = Defaults::default();
        // 2 s against the default 5 s heartbeat interval.
        let e = alter(
            None,
            &req(Change::Set(2_000), Change::Keep, Change::Keep),
            d,
            0,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("the server's default"), "{e}");
        // Equal is refused too.
        let e = alter(
            None,
            &req(Change::Set(2_000), Change::Set(2_000), Change::Keep),
            d,
            0,
            0,
        )
        .unwrap_err();
        assert_eq!(invalid_what(e), "heartbeat interval");
        // A group's 60 s interval, then its session reset to the default 45 s: refused.
        let mut groups = Groups::default();
        let ok = alter(
            None,
            &req(Change::Set(120_000), Change::Set(60_000), Change::Keep),
            d,
            0,
            0,
        )
        .unwrap();
        replay(&mut groups, &ok.records);
        let e = alter(
            groups.get("g"),
            &req(Change::Reset, Change::Keep, Change::Keep),
            d,
            0,
            1,
        )
        .unwrap_err();
        assert_eq!(invalid_what(e), "heartbeat interval");
        // Defaults lowered under the kept interval (a restart with other flags): a third.
        let lowered = Defaults {
            session_timeout_ms: 3_000,
            heartbeat_interval_ms: 1_000,
        };
        let mut g = groups.get("g").unwrap().clone();
        g.config.session_timeout_ms = None;
        assert_eq!(effective(Some(&g), lowered).heartbeat_interval_ms, 1_000);
    }

    #[test]
    fn a_new_group_counts_against_the_group_limit() {
        let e = alter(
            None,
            &req(Change::Set(2_000), Change::Set(500), Change::Keep),
            Defaults::default(),
            0,
            MAX_GROUPS_PER_COORDINATOR,
        )
        .unwrap_err();
        assert!(matches!(e, GroupError::TooManyGroups { .. }));
    }
}
