//! The checks of user input against the limits of [`crate::limits`].
//!
//! The same functions guard [`crate::MetaState::apply`] (reject a bad command) and
//! [`crate::MetaState::validate`] (a state holding a bad name or address is corrupt), so the
//! two can never disagree about what is allowed. (A topic config's checks,
//! [`crate::validate_topic_config`] and the rest, are beside the config, in
//! [`crate::topic_config`].)

use crate::error::{MetaError, clip};
use crate::limits::{MAX_ADDRESS_LEN, MAX_PRODUCER_NAME_LEN, MAX_TOPIC_NAME_LEN};

/// Checks a topic name: 1 to [`MAX_TOPIC_NAME_LEN`] characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..` (they would name directories, not topics, wherever a name becomes a path).
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        format!("it is {} bytes long", name.len())
    } else if name == "." || name == ".." {
        "it is a path component".to_string()
    } else if let Some((at, bad)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        format!("character {bad:?} at byte {at} is not allowed")
    } else {
        return Ok(());
    };
    Err(MetaError::InvalidTopicName {
        name: clip(name),
        reason,
    })
}

/// Checks a node address: `host:port`, with a non-empty host free of whitespace, control
/// characters and `/`, a host containing `:` (IPv6) in brackets, and a decimal port from 1 to
/// 65535; at most [`MAX_ADDRESS_LEN`] characters.
///
/// The host is not resolved: that would be I/O, and the answer could differ between nodes.
pub fn validate_address(addr: &str) -> Result<(), MetaError> {
    let fail = |reason: String| {
        Err(MetaError::InvalidAddress {
            address: clip(addr),
            reason,
        })
    };
    if addr.len() > MAX_ADDRESS_LEN {
        return fail(format!("it is {} bytes long", addr.len()));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return fail("it has no ':' before a port".to_string());
    };
    if host.is_empty() {
        return fail("the host is empty".to_string());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return fail(format!("the host contains {bad:?}"));
    }
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        // "::1:9000" or "http://h:1" would otherwise split at an arbitrary colon.
        return fail(format!(
            "the host {host:?} contains ':' but is not a bracketed IPv6 address"
        ));
    }
    // Digits only: `u16::from_str` would also accept a leading '+'.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return fail(format!("the port {port:?} is not a decimal number"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => fail(format!("the port {port} is out of range")),
    }
}

/// A producer name (Kafka's `transactional.id`): 1 to [`MAX_PRODUCER_NAME_LEN`] bytes of
/// UTF-8 without control characters.
pub fn validate_producer_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() || name.len() > MAX_PRODUCER_NAME_LEN || name.chars().any(char::is_control) {
        return Err(MetaError::InvalidProducerName { name: clip(name) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_err(name: &str) -> String {
        validate_topic_name(name).expect_err(name).to_string()
    }

    fn addr_err(addr: &str) -> String {
        validate_address(addr).expect_err(addr).to_string()
    }

    #[test]
    fn good_topic_names() {
        for name in [
            "a",
            "orders",
            "Orders.v2",
            "a_b-c.d",
            "...",
            &"x".repeat(MAX_TOPIC_NAME_LEN),
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_topic_names_say_why_and_the_rule() {
        let rule = "use 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\"";
        for (name, why) in [
            ("", "it is empty"),
            (".", "path component"),
            ("..", "path component"),
            ("a b", "character ' ' at byte 1"),
            ("a/b", "character '/'"),
            ("é", "character 'é'"),
        ] {
            let msg = name_err(name);
            assert!(msg.contains(why), "{msg}");
            assert!(msg.contains(rule), "{msg}");
        }
        assert_eq!(
            name_err("a b"),
            "invalid topic name \"a b\": character ' ' at byte 1 is not allowed; use 1 to 249 \
             characters of [a-zA-Z0-9._-], not \".\" or \"..\""
        );
        let msg = name_err(&"x".repeat(MAX_TOPIC_NAME_LEN + 1));
        assert!(
            msg.contains("250 bytes long") && msg.contains("1 to 249"),
            "{msg}"
        );
    }

    #[test]
    fn good_addresses() {
        for addr in [
            "localhost:9092",
            "10.0.0.1:1",
            "node-1.fjord.svc:65535",
            "[::1]:9000",
        ] {
            assert_eq!(validate_address(addr), Ok(()), "{addr}");
        }
    }

    #[test]
    fn bad_addresses_say_why_and_the_rule() {
        let rule = "port from 1 to 65535";
        for (addr, why) in [
            ("localhost", "no ':'"),
            (":9092", "host is empty"),
            ("a b:9092", "contains ' '"),
            ("host:", "not a decimal number"),
            ("host:+80", "not a decimal number"),
            ("host:0", "out of range"),
            ("host:65536", "out of range"),
            ("::1:9000", "bracketed IPv6"),
            ("http://h:80", "contains '/'"),
        ] {
            let msg = addr_err(addr);
            assert!(msg.contains(why), "{addr}: {msg}");
            assert!(msg.contains(rule), "{addr}: {msg}");
        }
        let msg = addr_err(&format!("{}:1", "h".repeat(MAX_ADDRESS_LEN)));
        assert!(msg.contains("at most 259 characters"), "{msg}");
    }
}
