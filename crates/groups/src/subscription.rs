//! Subscriptions: their checks, and which topics they name.
//!
//! A subscription names topics, or matches topic names with a pattern (an RE2-style regular
//! expression, as Kafka's `SubscriptionPattern`, matched against the whole name), or both.
//! Patterns run on the `regex` crate: matching takes time linear in the name, whatever the
//! pattern, and a pattern's compiled size is bounded ([`MAX_PATTERN_COMPILED_BYTES`]).

use std::collections::{BTreeMap, BTreeSet};

use regex::{Regex, RegexBuilder};

use crate::error::GroupError;
use crate::limits::{MAX_PATTERN_COMPILED_BYTES, MAX_PATTERN_LEN, MAX_SUBSCRIBED_TOPICS};
use crate::model::{Subscription, TopicId, TopicsView};

/// Compiles a pattern, anchored to the whole topic name.
pub fn compile(pattern: &str) -> Result<Regex, GroupError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(GroupError::invalid(
            "subscription pattern",
            format!(
                "it is {} bytes long; the limit is {MAX_PATTERN_LEN} (MAX_PATTERN_LEN)",
                pattern.len()
            ),
        ));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_PATTERN_COMPILED_BYTES)
        .build()
        .map_err(|e| GroupError::invalid("subscription pattern", format!("{pattern:?}: {e}")))
}

/// Checks a subscription's limits and pattern. An empty subscription is valid (a member
/// that subscribes to nothing owns nothing).
pub fn check(sub: &Subscription) -> Result<(), GroupError> {
    if sub.topics.len() > MAX_SUBSCRIBED_TOPICS {
        return Err(GroupError::invalid(
            "subscription",
            format!(
                "it names {} topics; the limit is {MAX_SUBSCRIBED_TOPICS} (MAX_SUBSCRIBED_TOPICS)",
                sub.topics.len()
            ),
        ));
    }
    if let Some(name) = sub.topics.iter().find(|t| t.is_empty() || t.len() > 255) {
        return Err(GroupError::invalid(
            "subscription",
            format!("topic name {name:?} is empty or longer than 255 bytes"),
        ));
    }
    if let Some(p) = &sub.pattern {
        compile(p)?;
    }
    Ok(())
}

/// Resolves subscriptions against the metadata, compiling each distinct pattern once.
#[derive(Default)]
pub struct Resolver {
    patterns: BTreeMap<String, Option<Regex>>,
}

impl Resolver {
    /// The ids of the existing topics `sub` names or matches. A pattern that does not compile
    /// (it was checked when it came in, so only a changed limit can do that) matches nothing.
    pub fn topics(&mut self, sub: &Subscription, view: &TopicsView) -> BTreeSet<TopicId> {
        let mut out: BTreeSet<TopicId> = sub
            .topics
            .iter()
            .filter_map(|n| view.by_name.get(n).map(|t| t.id))
            .collect();
        if let Some(p) = &sub.pattern {
            let re = self
                .patterns
                .entry(p.clone())
                .or_insert_with(|| compile(p).ok());
            if let Some(re) = re {
                out.extend(
                    view.by_name
                        .iter()
                        .filter(|(n, _)| re.is_match(n))
                        .map(|(_, t)| t.id),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> TopicsView {
        TopicsView::new([
            ("orders".to_string(), 1, 3),
            ("orders.eu".to_string(), 2, 2),
            ("payments".to_string(), 3, 1),
        ])
    }

    #[test]
    fn a_pattern_matches_whole_names_only() {
        let sub = Subscription {
            topics: BTreeSet::new(),
            pattern: Some("orders.*".into()),
        };
        let got = Resolver::default().topics(&sub, &view());
        assert_eq!(got, BTreeSet::from([1, 2]));
        let sub = Subscription {
            topics: BTreeSet::new(),
            pattern: Some("rders".into()),
        };
        assert!(Resolver::default().topics(&sub, &view()).is_empty());
    }

    #[test]
    fn names_and_pattern_unite_and_missing_names_are_skipped() {
        let sub = Subscription {
            topics: ["payments".to_string(), "nope".to_string()].into(),
            pattern: Some("orders\\.eu".into()),
        };
        assert_eq!(
            Resolver::default().topics(&sub, &view()),
            BTreeSet::from([2, 3])
        );
    }

    #[test]
    fn bad_patterns_and_oversized_subscriptions_are_refused_with_their_limit() {
        let bad = Subscription {
            topics: BTreeSet::new(),
            pattern: Some("(".into()),
        };
        assert!(matches!(check(&bad), Err(GroupError::Invalid { .. })));
        let long = Subscription {
            topics: BTreeSet::new(),
            pattern: Some("a".repeat(MAX_PATTERN_LEN + 1)),
        };
        let err = check(&long).unwrap_err().to_string();
        assert!(err.contains("MAX_PATTERN_LEN"), "{err}");
        let many = Subscription {
            topics: (0..=MAX_SUBSCRIBED_TOPICS)
                .map(|i| format!("t{i}"))
                .collect(),
            pattern: None,
        };
        let err = check(&many).unwrap_err().to_string();
        assert!(err.contains("MAX_SUBSCRIBED_TOPICS"), "{err}");
    }
}
