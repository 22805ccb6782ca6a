//! `--tls-principal-rules`: how a verified client certificate's subject becomes a principal's
//! name, in Kafka's `ssl.principal.mapping.rules` form (pure).
//!
//! The rules are tried in order; the first that matches gives the name:
//! - `RULE:PATTERN/REPLACEMENT/` matches when the regular expression `PATTERN` matches the
//!   whole subject (e.g. `CN=alice,O=acme`) and gives `REPLACEMENT` with `$1`, `$2`, ...
//!   replaced by the pattern's groups; `/L` or `/U` after it lowers or raises the case. A `/`
//!   inside the pattern or the replacement is written `\/`.
//! - `DEFAULT` gives the whole subject.
//!
//! A subject that no rule matches (or that a rule maps to an empty name) has no principal: the
//! request is as one without a certificate. The rules `RULE:^CN=([^,]+),O=acme$/$1/L,DEFAULT`
//! make `CN=Alice,O=acme` the principal `User:alice` and any other subject `User:<subject>`.

use regex::Regex;

/// The rules' default: the whole subject is the name (Kafka's default).
pub const DEFAULT_RULES: &str = "DEFAULT";
/// Rules in one `--tls-principal-rules`, at most.
pub const MAX_RULES: usize = 100;
/// Longest `--tls-principal-rules`, in bytes.
pub const MAX_RULES_LEN: usize = 16 * 1024;

/// What case a rule's result is put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map {
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

/// Parsed `--tls-principal-rules`.
#[derive(Debug, Clone)]
pub struct PrincipalRules {
    rules: Vec<Rule>,
}

/// Why `--tls-principal-rules` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--tls-principal-rules: {reason} at byte {at}; write rules as \
     RULE:PATTERN/REPLACEMENT/[L|U] or DEFAULT, separated by commas, e.g. \
     RULE:^CN=([^,]+),O=acme$/$1/L,DEFAULT"
)]
pub struct RulesError {
    /// What is wrong.
    pub reason: String,
    /// Where.
    pub at: usize,
}

impl Default for PrincipalRules {
    fn default() -> Self {
        PrincipalRules {
            rules: vec![Rule::Default],
        }
    }
}

impl PrincipalRules {
    /// Parses rules; the error names where and why.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let fail = |reason: String, at: usize| Err(RulesError { reason, at });
        if text.len() > MAX_RULES_LEN {
            return fail(format!("the rules are over {MAX_RULES_LEN} bytes"), 0);
        }
        let mut rules = Vec::new();
        let mut at = 0;
        let bytes = text.as_bytes();
        loop {
            while at < bytes.len() && (bytes[at] == b',' || bytes[at].is_ascii_whitespace()) {
                at += 1;
            }
            if at == bytes.len() {
                break;
            }
            if rules.len() == MAX_RULES {
                return fail(format!("more than {MAX_RULES} rules"), at);
            }
            let rest = &text[at..];
            if rest.starts_with("DEFAULT") {
                rules.push(Rule::Default);
                at += "DEFAULT".len();
            } else if let Some(body) = rest.strip_prefix("RULE:") {
                let (rule, used) = parse_rule(body).map_err(|(reason, off)| RulesError {
                    reason,
                    at: at + 5 + off,
                })?;
                rules.push(rule);
                at += 5 + used;
            } else {
                return fail("expected RULE: or DEFAULT".into(), at);
            }
            if at < bytes.len() && bytes[at] != b',' && !bytes[at].is_ascii_whitespace() {
                return fail("expected a comma after a rule".into(), at);
            }
        }
        if rules.is_empty() {
            return fail("no rules".into(), 0);
        }
        Ok(PrincipalRules { rules })
    }

    /// The principal's name for a certificate subject, by the first rule that matches; `None`
    /// if none does (or it gives an empty name).
    pub fn map(&self, subject: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(subject.to_string()).filter(|s| !s.is_empty()),
                Rule::Map {
                    pattern,
                    replacement,
                    case,
                } => {
                    let Some(caps) = pattern.captures(subject) else {
                        continue;
                    };
                    let mut out = String::new();
                    caps.expand(replacement, &mut out);
                    let out = match case {
                        Case::Keep => out,
                        // ASCII only: Unicode case mapping would make a name of other
                        // letters (the Kelvin sign lowers to `k`) another principal's.
                        Case::Lower => out.to_ascii_lowercase(),
                        Case::Upper => out.to_ascii_uppercase(),
                    };
                    if !out.is_empty() {
                        return Some(out);
                    }
                }
            }
        }
        None
    }
}

/// One `RULE:` body: `PATTERN/REPLACEMENT/[L|U]`; answers the rule and the bytes it used.
fn parse_rule(body: &str) -> Result<(Rule, usize), (String, usize)> {
    let (pattern, p_len) = until_slash(body).ok_or(("the pattern has no closing /".into(), 0))?;
    let rest = &body[p_len + 1..];
    let (replacement, r_len) =
        until_slash(rest).ok_or(("the replacement has no closing /".into(), p_len + 1))?;
    let mut used = p_len + 1 + r_len + 1;
    let case = match body.as_bytes().get(used) {
        Some(b'L') => Case::Lower,
        Some(b'U') => Case::Upper,
        _ => Case::Keep,
    };
    if case != Case::Keep {
        used += 1;
    }
    // The whole subject must match (Java's `Matcher.matches`).
    let pattern = Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| (format!("the pattern does not compile: {e}"), 0))?;
    Ok((
        Rule::Map {
            pattern,
            replacement: braced_groups(&replacement),
            case,
        },
        used,
    ))
}

/// The text up to the first `/` not escaped as `\/` (unescaped), and its length in `s`.
fn until_slash(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                chars.next();
                out.push('/');
            }
            '/' => return Some((out, i)),
            c => out.push(c),
        }
    }
    None
}

/// `$1` written as `${1}`, so that a letter after it is not taken as part of a group's name
/// (Java's replacement syntax knows numbered groups only).
fn braced_groups(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kafka_style_rules_map_subjects() {
        let r = PrincipalRules::parse(r"RULE:^CN=([^,]+),O=acme$/$1/L,DEFAULT").unwrap();
        assert_eq!(r.map("CN=Alice,O=acme").as_deref(), Some("alice"));
        assert_eq!(
            r.map("CN=bob,O=other").as_deref(),
            Some("CN=bob,O=other"),
            "DEFAULT"
        );
        let r = PrincipalRules::parse(r"RULE:^CN=([^,]+),OU=(\w+).*$/$1@$2/U").unwrap();
        assert_eq!(r.map("CN=x,OU=ops,O=a").as_deref(), Some("X@OPS"));
        assert_eq!(r.map("O=a"), None, "no rule matches: no principal");
    }

    #[test]
    fn the_whole_subject_must_match_and_slashes_escape() {
        let r = PrincipalRules::parse(r"RULE:CN=([a-z]+)/$1x/").unwrap();
        assert_eq!(r.map("CN=abc").as_deref(), Some("abcx"));
        assert_eq!(r.map("CN=abc,O=z"), None);
        let r = PrincipalRules::parse(r"RULE:CN=a\/b/a\/b-ok/").unwrap();
        assert_eq!(r.map("CN=a/b").as_deref(), Some("a/b-ok"));
    }

    #[test]
    fn bad_rules_are_refused_with_where() {
        for bad in [
            "",
            "RULE:abc",
            "RULE:abc/def",
            "RULE:(/x/",
            "NOPE",
            "DEFAULTX",
        ] {
            let e = PrincipalRules::parse(bad).unwrap_err();
            assert!(e.to_string().contains("--tls-principal-rules"), "{e}");
        }
        assert!(PrincipalRules::parse(&"DEFAULT,".repeat(MAX_RULES + 1)).is_err());
        assert_eq!(
            PrincipalRules::default().map("CN=x").as_deref(),
            Some("CN=x")
        );
    }

    proptest! {
        /// Parsing never panics, and a parsed rule set maps any subject without panicking.
        #[test]
        fn parse_and_map_never_panic(text in ".{0,80}", subject in ".{0,40}") {
            if let Ok(r) = PrincipalRules::parse(&text) {
                let _ = r.map(&subject);
            }
        }

        /// A rule taking the CN gives back exactly the CN, for any CN without a comma.
        #[test]
        fn cn_rule_gives_the_cn(cn in "[a-zA-Z0-9 ._-]{1,30}", org in "[a-z]{1,10}") {
            let r = PrincipalRules::parse(r"RULE:^CN=([^,]+),O=.*$/$1/").unwrap();
            let subject = format!("CN={cn},O={org}");
            prop_assert_eq!(r.map(&subject), Some(cn));
        }
    }
}
