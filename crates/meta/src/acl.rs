//! Identities and access control lists kept in the metadata group, and the one decision
//! whether a principal may do an operation on a resource ([`authorize`], pure).
//!
//! The model is Kafka's (`kafka.security.authorizer.AclAuthorizer`): a principal is
//! `User:NAME`; an ACL entry names a principal (or every one, `User:*`), a resource type
//! (topic, group, cluster, producer: a named producer's name, Kafka's TransactionalId), a
//! resource pattern (a literal name, `*` for every name, or a
//! prefix), an operation and whether it allows or denies. A request is allowed when the
//! principal is a superuser, or when no matching entry denies and one allows; deny wins.
//! Read, write, delete and alter imply describe (an allow of one of them allows a describe),
//! as in Kafka; a deny denies exactly its operation (or every one, for `all`).
//!
//! fjord's own topics ([`INTERNAL_TOPIC_PREFIX`], e.g. `__fjord_groups`) are not matched by a
//! `*` literal nor by a prefix unless the prefix itself starts with [`INTERNAL_TOPIC_PREFIX`]:
//! only an entry naming them (literally, or by such a prefix) or a superuser reaches them.
//!
//! Users are stored as a salted hash of their secret only ([`UserRecord`]); hashing and
//! checking tokens is the server's (this crate does no I/O and draws no random numbers).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{MetaError, clip};
use crate::limits::{MAX_PRINCIPAL_LEN, MAX_RESOURCE_NAME_LEN, MAX_USER_NAME_LEN};

/// The principal prefix of a user (Kafka's `KafkaPrincipal.USER_TYPE`).
pub const USER_PREFIX: &str = "User:";
/// The principal that matches every principal in an ACL entry.
pub const ANY_PRINCIPAL: &str = "User:*";
/// The principal of a request without an identity, where authentication is not required
/// (Kafka's `User:ANONYMOUS`).
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// The literal name that matches every resource of its type.
pub const ANY_RESOURCE: &str = "*";
/// The name of the one cluster resource (Kafka's `kafka-cluster`).
pub const CLUSTER_RESOURCE: &str = "cluster";
/// The prefix of fjord's own topics (the same as `fjord_groups::INTERNAL_TOPIC_PREFIX`): a
/// `*` or a prefix not starting with it does not match them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__fjord";

/// A kind of resource an ACL entry protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    /// A named producer (InitProducer's `producer_name`, Kafka's TransactionalId). Appended
    /// last: postcard encodes a variant by its index, so older encodings stay readable.
    Producer,
}

/// How an ACL entry's resource name matches a resource's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The same name, or every name for `*`.
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    /// Every operation (in an ACL entry only: a request names one operation).
    All,
}

/// Whether an ACL entry allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Allow,
    Deny,
}

macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The name as the CLI and error messages spell it.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            /// Every value's name, for error messages.
            pub fn names() -> &'static str {
                concat!($($s, " "),*).trim_ascii_end()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($s => Ok(<$t>::$v),)*
                    _ => Err(format!("{s:?} is none of: {}", <$t>::names())),
                }
            }
        }
    };
}

names!(ResourceType {
    Topic = "topic",
    Group = "group",
    Cluster = "cluster",
    Producer = "producer",
});
names!(PatternType { Literal = "literal", Prefixed = "prefixed" });
names!(Operation {
    Read = "read",
    Write = "write",
    Create = "create",
    Delete = "delete",
    Alter = "alter",
    Describe = "describe",
    All = "all",
});
names!(Permission { Allow = "allow", Deny = "deny" });

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// `User:NAME`, or [`ANY_PRINCIPAL`].
    pub principal: String,
    /// What kind of resource.
    pub resource_type: ResourceType,
    /// How `resource_name` matches.
    pub pattern_type: PatternType,
    /// A name, `*` (literal: every resource of the type), or a prefix. A cluster entry's is
    /// [`CLUSTER_RESOURCE`] or `*`.
    pub resource_name: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} {:?} ({})",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.resource_name,
            self.pattern_type
        )
    }
}

/// A user's stored credential: a salt and SHA-256(salt ‖ secret), never the secret. Its
/// `Debug` shows neither (logs must not carry material for an offline guess).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// [`USER_SALT_BYTES`] random bytes.
    pub salt: Vec<u8>,
    /// [`USER_HASH_BYTES`] bytes.
    pub hash: Vec<u8>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UserRecord {{ salt: <{} bytes>, hash: <{} bytes> }}",
            self.salt.len(),
            self.hash.len()
        )
    }
}

/// Bytes of a user's salt.
pub const USER_SALT_BYTES: usize = 16;
/// Bytes of a user's hash (SHA-256).
pub const USER_HASH_BYTES: usize = 32;

/// A resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub resource_type: ResourceType,
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    pub fn topic(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::Topic,
            name,
        }
    }
    pub fn group(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::Group,
            name,
        }
    }
    pub fn producer(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::Producer,
            name,
        }
    }
    pub fn cluster() -> Resource<'static> {
        Resource {
            resource_type: ResourceType::Cluster,
            name: CLUSTER_RESOURCE,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.resource_type {
            ResourceType::Cluster => f.write_str("the cluster"),
            t => write!(f, "{t} {:?}", clip(self.name)),
        }
    }
}

/// The answer of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A superuser, or an entry allows and none denies.
    Allow,
    /// Refused, and why.
    Deny(DenyReason),
}

/// Why [`authorize`] refused. Its `Display` does not quote the denying entry (a client is
/// told that an entry denies, not which pattern: that would show other names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// This entry denies (the first that matches, in the entries' order).
    DeniedBy(AclEntry),
    /// No entry allows it.
    NoAllow,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::DeniedBy(_) => f.write_str("an ACL entry denies it"),
            DenyReason::NoAllow => f.write_str("no ACL entry allows it"),
        }
    }
}

/// Whether `principal` may do `op` on `resource`, by `acls` and `superusers` (Kafka's rules,
/// see the module doc). `op` is never [`Operation::All`] in a request; if it is, only an
/// entry for `all` matches.
pub fn authorize<'a>(
    principal: &str,
    op: Operation,
    resource: Resource<'_>,
    acls: impl IntoIterator<Item = &'a AclEntry>,
    superusers: &[String],
) -> Decision {
    if is_superuser(principal, superusers) {
        return Decision::Allow;
    }
    let mut allowed = false;
    for e in acls {
        if !applies_to(e, principal, resource) {
            continue;
        }
        match e.permission {
            Permission::Deny if e.operation == op || e.operation == Operation::All => {
                return Decision::Deny(DenyReason::DeniedBy(e.clone()));
            }
            Permission::Allow if allows(e.operation, op) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::NoAllow)
    }
}

/// Whether `principal` holds an allow of `op` (or `all`) on some resource of type `kind`:
/// Kafka's `authorizeByResourceType`, for a request that names no resource yet (an
/// idempotent producer's InitProducer needs write on some topic). Denies of particular
/// resources do not count against it: the request that names one is checked by [`authorize`].
pub fn allows_some<'a>(
    principal: &str,
    op: Operation,
    kind: ResourceType,
    acls: impl IntoIterator<Item = &'a AclEntry>,
    superusers: &[String],
) -> bool {
    if is_superuser(principal, superusers) {
        return true;
    }
    let mut allowed = false;
    for e in acls {
        if e.resource_type != kind || !names_principal(e, principal) {
            continue;
        }
        match e.permission {
            // A deny of every resource of the type (literal `*`) wins, as in Kafka.
            Permission::Deny
                if e.pattern_type == PatternType::Literal
                    && e.resource_name == ANY_RESOURCE
                    && (e.operation == op || e.operation == Operation::All) =>
            {
                return false;
            }
            Permission::Allow if allows(e.operation, op) => allowed = true,
            _ => {}
        }
    }
    allowed
}

/// Whether `principal` is one of `superusers`.
pub fn is_superuser(principal: &str, superusers: &[String]) -> bool {
    superusers.iter().any(|s| s == principal)
}

/// Whether entry `e` names `principal` (itself or [`ANY_PRINCIPAL`]).
pub fn names_principal(e: &AclEntry, principal: &str) -> bool {
    e.principal == principal || e.principal == ANY_PRINCIPAL
}

fn applies_to(e: &AclEntry, principal: &str, resource: Resource<'_>) -> bool {
    names_principal(e, principal)
        && e.resource_type == resource.resource_type
        && name_matches(e, resource)
}

/// Whether `e`'s pattern matches `resource`'s name. An allow reaches an internal topic only by
/// its literal name or a prefix that starts with [`INTERNAL_TOPIC_PREFIX`] (a grant of every
/// topic does not open fjord's own); a deny reaches it by any pattern that matches (deny wins).
fn name_matches(e: &AclEntry, resource: Resource<'_>) -> bool {
    let internal = e.permission == Permission::Allow
        && resource.resource_type == ResourceType::Topic
        && resource.name.starts_with(INTERNAL_TOPIC_PREFIX);
    match e.pattern_type {
        PatternType::Literal => {
            e.resource_name == resource.name || (e.resource_name == ANY_RESOURCE && !internal)
        }
        PatternType::Prefixed => {
            resource.name.starts_with(&e.resource_name)
                && (!internal || e.resource_name.starts_with(INTERNAL_TOPIC_PREFIX))
        }
    }
}

/// Whether an allow of `granted` allows `asked`: itself, `all`, and Kafka's implications.
fn allows(granted: Operation, asked: Operation) -> bool {
    use Operation::*;
    granted == asked
        || granted == All
        || (asked == Describe && matches!(granted, Read | Write | Delete | Alter))
}

/// Checks a user name: 1 to [`MAX_USER_NAME_LEN`] characters of `[a-zA-Z0-9._-]`, not `*`
/// and not `ANONYMOUS` (whose principals mean every principal and no identity).
pub fn validate_user_name(name: &str) -> Result<(), MetaError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name == ANY_RESOURCE || Some(name) == ANONYMOUS.strip_prefix(USER_PREFIX) {
        "it is reserved (User:* is every principal, User:ANONYMOUS no identity)".to_string()
    } else if name.len() > MAX_USER_NAME_LEN {
        format!("it is {} bytes long", name.len())
    } else if let Some((at, bad)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        format!("character {bad:?} at byte {at} is not allowed")
    } else {
        return Ok(());
    };
    Err(MetaError::InvalidUserName {
        name: clip(name),
        reason,
    })
}

/// Checks a principal as an ACL entry or `--superusers` names it: `User:NAME` with a name of
/// 1 to [`MAX_USER_NAME_LEN`] bytes without control characters (a token user's name, or
/// what `--tls-principal-rules` made of a certificate's subject, e.g. `CN=alice,O=acme` with
/// the rule `DEFAULT`), or [`ANY_PRINCIPAL`].
pub fn validate_principal(principal: &str) -> Result<(), MetaError> {
    let invalid = |reason: String| MetaError::InvalidAcl {
        reason: format!("principal {:?}: {reason}", clip(principal)),
    };
    if principal.len() > MAX_PRINCIPAL_LEN {
        return Err(invalid(format!(
            "it is {} bytes long, over {MAX_PRINCIPAL_LEN}",
            principal.len()
        )));
    }
    let Some(name) = principal.strip_prefix(USER_PREFIX) else {
        return Err(invalid(format!(
            "a principal is {USER_PREFIX}NAME or {ANY_PRINCIPAL}"
        )));
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(invalid(
            "the name after User: is empty or has control characters".into(),
        ));
    }
    Ok(())
}

/// Checks an ACL entry: its principal, a resource name of 1 to [`MAX_RESOURCE_NAME_LEN`]
/// bytes without control characters, a cluster entry naming [`CLUSTER_RESOURCE`] or `*`
/// literally.
pub fn validate_acl(e: &AclEntry) -> Result<(), MetaError> {
    validate_principal(&e.principal)?;
    let invalid = |reason: String| Err(MetaError::InvalidAcl { reason });
    let name = &e.resource_name;
    if name.is_empty() || name.len() > MAX_RESOURCE_NAME_LEN {
        return invalid(format!(
            "the resource name is {} bytes long: use 1 to {MAX_RESOURCE_NAME_LEN}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return invalid(format!(
            "the resource name {:?} has control characters",
            clip(name)
        ));
    }
    if e.resource_type == ResourceType::Cluster
        && (e.pattern_type != PatternType::Literal
            || (name != CLUSTER_RESOURCE && name != ANY_RESOURCE))
    {
        return invalid(format!(
            "a cluster entry names {CLUSTER_RESOURCE:?} (or \"*\") literally, not {:?} ({})",
            clip(name),
            e.pattern_type
        ));
    }
    Ok(())
}

/// Checks a principal a request would be known by (a user's, or one mapped from a client
/// certificate): [`validate_principal`], and neither [`ANY_PRINCIPAL`] nor [`ANONYMOUS`].
pub fn validate_identity(principal: &str) -> Result<(), MetaError> {
    validate_principal(principal)?;
    if principal == ANY_PRINCIPAL || principal == ANONYMOUS {
        return Err(MetaError::InvalidAcl {
            reason: format!("principal {principal:?} is reserved: it cannot be an identity"),
        });
    }
    Ok(())
}

/// The entries of `acls` that can apply to `principal`: its own and [`ANY_PRINCIPAL`]'s (a
/// request's view, taken once so that each check does not scan every entry).
pub fn entries_for<'a>(acls: &'a BTreeSet<AclEntry>, principal: &str) -> Vec<&'a AclEntry> {
    acls.iter()
        .filter(|e| names_principal(e, principal))
        .collect()
}

/// The entries of `acls` that name `principal` (or every one, with `None`).
pub fn entries_of<'a>(
    acls: &'a BTreeSet<AclEntry>,
    principal: Option<&'a str>,
) -> impl Iterator<Item = &'a AclEntry> + 'a {
    acls.iter()
        .filter(move |e| principal.is_none_or(|p| e.principal == p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(
        p: &str,
        t: ResourceType,
        pat: PatternType,
        name: &str,
        op: Operation,
        perm: Permission,
    ) -> AclEntry {
        AclEntry {
            principal: p.into(),
            resource_type: t,
            pattern_type: pat,
            resource_name: name.into(),
            operation: op,
            permission: perm,
        }
    }

    fn allow_topic(p: &str, name: &str, op: Operation) -> AclEntry {
        entry(
            p,
            ResourceType::Topic,
            PatternType::Literal,
            name,
            op,
            Permission::Allow,
        )
    }

    const ALICE: &str = "User:alice";

    #[test]
    fn write_on_a_allows_writing_a_only() {
        let acls = [allow_topic(ALICE, "a", Operation::Write)];
        let d = |op, t| authorize(ALICE, op, Resource::topic(t), &acls, &[]);
        assert_eq!(d(Operation::Write, "a"), Decision::Allow);
        assert_eq!(
            d(Operation::Describe, "a"),
            Decision::Allow,
            "write implies describe"
        );
        assert_eq!(d(Operation::Read, "a"), Decision::Deny(DenyReason::NoAllow));
        assert_eq!(
            d(Operation::Write, "b"),
            Decision::Deny(DenyReason::NoAllow)
        );
        assert_eq!(
            authorize(
                "User:bob",
                Operation::Write,
                Resource::topic("a"),
                &acls,
                &[]
            ),
            Decision::Deny(DenyReason::NoAllow)
        );
    }

    #[test]
    fn deny_wins_over_allow_and_over_wildcards() {
        let deny = entry(
            ALICE,
            ResourceType::Topic,
            PatternType::Prefixed,
            "secret-",
            Operation::Read,
            Permission::Deny,
        );
        let acls = [
            allow_topic(ANY_PRINCIPAL, ANY_RESOURCE, Operation::All),
            deny.clone(),
        ];
        assert_eq!(
            authorize(
                ALICE,
                Operation::Read,
                Resource::topic("secret-x"),
                &acls,
                &[]
            ),
            Decision::Deny(DenyReason::DeniedBy(deny))
        );
        // A deny of read does not deny describe (Kafka).
        assert_eq!(
            authorize(
                ALICE,
                Operation::Describe,
                Resource::topic("secret-x"),
                &acls,
                &[]
            ),
            Decision::Allow
        );
        assert_eq!(
            authorize(
                ALICE,
                Operation::Read,
                Resource::topic("public"),
                &acls,
                &[]
            ),
            Decision::Allow
        );
    }

    #[test]
    fn superusers_pass_everything_even_a_deny() {
        let acls = [entry(
            ANY_PRINCIPAL,
            ResourceType::Cluster,
            PatternType::Literal,
            "*",
            Operation::All,
            Permission::Deny,
        )];
        let supers = vec!["User:admin".to_string()];
        assert_eq!(
            authorize(
                "User:admin",
                Operation::Alter,
                Resource::cluster(),
                &acls,
                &supers
            ),
            Decision::Allow
        );
        assert!(matches!(
            authorize(ALICE, Operation::Alter, Resource::cluster(), &acls, &supers),
            Decision::Deny(DenyReason::DeniedBy(_))
        ));
    }

    #[test]
    fn resource_types_do_not_mix() {
        let acls = [entry(
            ALICE,
            ResourceType::Group,
            PatternType::Literal,
            "a",
            Operation::Read,
            Permission::Allow,
        )];
        assert_eq!(
            authorize(ALICE, Operation::Read, Resource::topic("a"), &acls, &[]),
            Decision::Deny(DenyReason::NoAllow)
        );
        assert_eq!(
            authorize(ALICE, Operation::Read, Resource::group("a"), &acls, &[]),
            Decision::Allow
        );
    }

    #[test]
    fn validation_names_the_rule() {
        let ok = allow_topic(ALICE, "a", Operation::Write);
        assert_eq!(validate_acl(&ok), Ok(()));
        let mut bad = ok.clone();
        bad.principal = "alice".into();
        assert!(
            validate_acl(&bad)
                .unwrap_err()
                .to_string()
                .contains("User:NAME")
        );
        let mut bad = ok.clone();
        bad.resource_name = String::new();
        assert!(validate_acl(&bad).is_err());
        let mut bad = ok;
        bad.resource_type = ResourceType::Cluster;
        assert!(
            validate_acl(&bad)
                .unwrap_err()
                .to_string()
                .contains("cluster")
        );
        assert!(validate_user_name("a b").is_err());
        assert!(validate_user_name(&"x".repeat(MAX_USER_NAME_LEN + 1)).is_err());
        assert_eq!(validate_user_name("svc-1.prod_x"), Ok(()));
        assert_eq!("PREFIXED".parse(), Ok(PatternType::Prefixed));
        assert!("everything".parse::<Operation>().is_err());
    }

    #[test]
    fn internal_topics_need_a_literal_name_or_an_internal_prefix() {
        let internal = "__fjord_groups";
        let any = allow_topic(ALICE, ANY_RESOURCE, Operation::Read);
        let prefix = |p: &str| {
            entry(
                ALICE,
                ResourceType::Topic,
                PatternType::Prefixed,
                p,
                Operation::Read,
                Permission::Allow,
            )
        };
        let read = |acls: &[AclEntry], t| {
            authorize(ALICE, Operation::Read, Resource::topic(t), acls, &[]) == Decision::Allow
        };
        assert!(read(std::slice::from_ref(&any), "orders"));
        assert!(
            !read(std::slice::from_ref(&any), internal),
            "* does not reach it"
        );
        assert!(!read(&[prefix("")], internal));
        assert!(!read(&[prefix("_")], internal));
        assert!(read(&[prefix("__fjord")], internal));
        assert!(read(&[prefix("__fjord_g")], internal));
        assert!(read(
            &[allow_topic(ALICE, internal, Operation::Read)],
            internal
        ));
        assert!(
            authorize(
                ALICE,
                Operation::Read,
                Resource::topic(internal),
                &[any],
                &[ALICE.to_string()]
            ) == Decision::Allow
        );
        // A group of that name is no internal topic.
        let any_group = entry(
            ALICE,
            ResourceType::Group,
            PatternType::Literal,
            "*",
            Operation::Read,
            Permission::Allow,
        );
        assert_eq!(
            authorize(
                ALICE,
                Operation::Read,
                Resource::group(internal),
                &[any_group],
                &[]
            ),
            Decision::Allow
        );
        assert_eq!(INTERNAL_TOPIC_PREFIX, "__fjord");
    }

    #[test]
    fn a_deny_of_every_topic_reaches_internal_ones_and_refuses_by_type() {
        let internal = "__fjord_groups";
        let allow_internal = allow_topic(ALICE, internal, Operation::Read);
        let deny_all = entry(
            ALICE,
            ResourceType::Topic,
            PatternType::Literal,
            ANY_RESOURCE,
            Operation::All,
            Permission::Deny,
        );
        // Deny wins, also over a grant of fjord's own topic.
        assert!(matches!(
            authorize(
                ALICE,
                Operation::Read,
                Resource::topic(internal),
                &[allow_internal.clone(), deny_all.clone()],
                &[]
            ),
            Decision::Deny(DenyReason::DeniedBy(_))
        ));
        // Asked of no topic in particular (an idempotent producer's id): a deny of every
        // topic refuses, as Kafka's check by resource type does; one of a single topic not.
        let allow_write = allow_topic(ALICE, "orders", Operation::Write);
        let some = |acls: &[AclEntry]| {
            allows_some(ALICE, Operation::Write, ResourceType::Topic, acls, &[])
        };
        assert!(some(std::slice::from_ref(&allow_write)));
        assert!(!some(&[allow_write.clone(), deny_all]));
        let deny_one = entry(
            ALICE,
            ResourceType::Topic,
            PatternType::Literal,
            "other",
            Operation::Write,
            Permission::Deny,
        );
        assert!(some(&[allow_write, deny_one]));
    }

    #[test]
    fn a_named_producer_is_its_own_resource() {
        let acls = [entry(
            ALICE,
            ResourceType::Producer,
            PatternType::Prefixed,
            "app-",
            Operation::Write,
            Permission::Allow,
        )];
        let w = |name| {
            authorize(
                ALICE,
                Operation::Write,
                Resource::producer(name),
                &acls,
                &[],
            )
        };
        assert_eq!(w("app-1"), Decision::Allow);
        assert_eq!(w("other"), Decision::Deny(DenyReason::NoAllow));
        assert_eq!(
            authorize(
                ALICE,
                Operation::Write,
                Resource::topic("app-1"),
                &acls,
                &[]
            ),
            Decision::Deny(DenyReason::NoAllow)
        );
        assert_eq!("producer".parse(), Ok(ResourceType::Producer));
        // Appended: the earlier variants keep their postcard encodings.
        for (t, index) in [
            (ResourceType::Topic, 0u8),
            (ResourceType::Group, 1),
            (ResourceType::Cluster, 2),
            (ResourceType::Producer, 3),
        ] {
            assert_eq!(postcard::to_stdvec(&t).unwrap(), [index]);
        }
    }

    #[test]
    fn reserved_names_are_no_identity_and_secrets_stay_out_of_debug() {
        assert!(validate_user_name("*").is_err());
        assert!(validate_user_name("ANONYMOUS").is_err());
        assert_eq!(validate_user_name("anonymous-svc"), Ok(()));
        assert!(validate_identity(ANY_PRINCIPAL).is_err());
        assert!(validate_identity(ANONYMOUS).is_err());
        assert!(validate_identity("User:a\u{0}").is_err());
        assert_eq!(validate_identity("User:CN=a,O=b"), Ok(()));
        let rec = cred(0xab);
        let shown = format!("{rec:?}");
        assert!(!shown.contains("171") && !shown.contains("ab"), "{shown}");
        let deny = entry(
            ANY_PRINCIPAL,
            ResourceType::Topic,
            PatternType::Prefixed,
            "hidden-",
            Operation::Read,
            Permission::Deny,
        );
        let why = DenyReason::DeniedBy(deny).to_string();
        assert!(!why.contains("hidden-"), "{why}");
        let clipped = Resource::topic(&"x".repeat(10_000)).to_string();
        assert!(clipped.len() < 1_000, "{}", clipped.len());
    }

    fn cred(b: u8) -> UserRecord {
        UserRecord {
            salt: vec![b; USER_SALT_BYTES],
            hash: vec![b; USER_HASH_BYTES],
        }
    }

    /// The commands that change users and ACL entries, as the metadata applies them.
    #[test]
    fn user_and_acl_commands_keep_their_rules() {
        use crate::{MetaCommand as C, MetaError as E, MetaResponse as R, MetaState};
        let mut s = MetaState::new();
        let create = |name: &str, b| C::CreateUser {
            name: name.into(),
            credential: cred(b),
        };
        assert_eq!(s.apply(&create("alice", 1)), R::Ok);
        assert!(matches!(
            s.apply(&create("alice", 2)),
            R::Error(E::UserExists { .. })
        ));
        assert_eq!(s.users["alice"], cred(1), "unchanged by the refused create");
        assert!(matches!(
            s.apply(&create("a b", 1)),
            R::Error(E::InvalidUserName { .. })
        ));
        let short = C::CreateUser {
            name: "bob".into(),
            credential: UserRecord {
                salt: vec![],
                hash: vec![0; USER_HASH_BYTES],
            },
        };
        assert!(matches!(
            s.apply(&short),
            R::Error(E::InvalidCredential { .. })
        ));
        let entry = allow_topic(ALICE, "a", Operation::Write);
        assert_eq!(
            s.apply(&C::AddAcl {
                entry: entry.clone()
            }),
            R::Ok
        );
        assert_eq!(
            s.apply(&C::AddAcl {
                entry: entry.clone()
            }),
            R::Ok,
            "idempotent"
        );
        assert_eq!(s.acls.len(), 1);
        let mut bad = entry.clone();
        bad.principal = "alice".into();
        assert!(matches!(
            s.apply(&C::AddAcl { entry: bad }),
            R::Error(E::InvalidAcl { .. })
        ));
        assert_eq!(
            s.apply(&C::RemoveAcl {
                entry: entry.clone()
            }),
            R::Ok
        );
        assert!(matches!(
            s.apply(&C::RemoveAcl { entry }),
            R::Error(E::UnknownAcl { .. })
        ));
        assert_eq!(
            s.apply(&C::DeleteUser {
                name: "alice".into()
            }),
            R::Ok
        );
        assert!(matches!(
            s.apply(&C::DeleteUser {
                name: "alice".into()
            }),
            R::Error(E::UnknownUser { .. })
        ));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn users_and_acl_entries_are_bounded() {
        use crate::limits::{MAX_ACLS, MAX_USERS};
        use crate::{MetaCommand as C, MetaError as E, MetaResponse as R, MetaState};
        let mut s = MetaState::new();
        for i in 0..MAX_USERS {
            s.users.insert(format!("u{i}"), cred(0));
        }
        let over = C::CreateUser {
            name: "one-more".into(),
            credential: cred(0),
        };
        assert_eq!(s.apply(&over), R::Error(E::TooManyUsers { max: MAX_USERS }));
        for i in 0..MAX_ACLS {
            s.acls
                .insert(allow_topic(ALICE, &format!("t{i}"), Operation::Read));
        }
        let existing = allow_topic(ALICE, "t0", Operation::Read);
        assert_eq!(
            s.apply(&C::AddAcl { entry: existing }),
            R::Ok,
            "already there"
        );
        let new = allow_topic(ALICE, "new", Operation::Read);
        assert_eq!(
            s.apply(&C::AddAcl { entry: new }),
            R::Error(E::TooManyAcls { max: MAX_ACLS })
        );
        assert!(
            E::TooManyAcls { max: MAX_ACLS }
                .to_string()
                .contains("MAX_ACLS"),
            "the message names the limit"
        );
    }

    fn op() -> impl Strategy<Value = Operation> {
        prop::sample::select(vec![
            Operation::Read,
            Operation::Write,
            Operation::Create,
            Operation::Delete,
            Operation::Alter,
            Operation::Describe,
            Operation::All,
        ])
    }

    fn acl_entry() -> impl Strategy<Value = AclEntry> {
        (
            prop::sample::select(vec![ALICE, "User:bob", ANY_PRINCIPAL]),
            prop::sample::select(vec![ResourceType::Topic, ResourceType::Group]),
            prop::sample::select(vec![PatternType::Literal, PatternType::Prefixed]),
            prop::sample::select(vec!["a", "ab", "b", "*"]),
            op(),
            prop::sample::select(vec![Permission::Allow, Permission::Deny]),
        )
            .prop_map(|(p, t, pat, n, o, perm)| entry(p, t, pat, n, o, perm))
    }

    /// The decision as a plain reading of the rules: a reference model.
    fn model(principal: &str, asked: Operation, r: Resource<'_>, acls: &[AclEntry]) -> bool {
        let matching: Vec<&AclEntry> = acls
            .iter()
            .filter(|e| {
                [principal, ANY_PRINCIPAL].contains(&e.principal.as_str())
                    && e.resource_type == r.resource_type
                    && if e.pattern_type == PatternType::Literal {
                        e.resource_name == r.name || e.resource_name == "*"
                    } else {
                        r.name.starts_with(e.resource_name.as_str())
                    }
            })
            .collect();
        let denied = matching.iter().any(|e| {
            e.permission == Permission::Deny
                && (e.operation == asked || e.operation == Operation::All)
        });
        let implied = |g: Operation| {
            g == asked
                || g == Operation::All
                || (asked == Operation::Describe
                    && [
                        Operation::Read,
                        Operation::Write,
                        Operation::Delete,
                        Operation::Alter,
                    ]
                    .contains(&g))
        };
        !denied
            && matching
                .iter()
                .any(|e| e.permission == Permission::Allow && implied(e.operation))
    }

    proptest! {
        #[test]
        fn authorize_agrees_with_the_model(
            acls in prop::collection::vec(acl_entry(), 0..12),
            asked in op().prop_filter("a request's op", |o| *o != Operation::All),
            name in prop::sample::select(vec!["a", "ab", "b", "c"]),
            group in any::<bool>(),
        ) {
            let r = if group { Resource::group(name) } else { Resource::topic(name) };
            let got = authorize(ALICE, asked, r, &acls, &[]) == Decision::Allow;
            prop_assert_eq!(got, model(ALICE, asked, r, &acls));
            // Adding a deny never turns a refusal into an allow; a superuser is always allowed.
            prop_assert_eq!(authorize(ALICE, asked, r, &acls, &[ALICE.to_string()]), Decision::Allow);
        }

        #[test]
        fn a_matching_deny_always_refuses(
            mut acls in prop::collection::vec(acl_entry(), 0..12),
            asked in op().prop_filter("a request's op", |o| *o != Operation::All),
        ) {
            acls.push(entry(ANY_PRINCIPAL, ResourceType::Topic, PatternType::Literal, "a", asked, Permission::Deny));
            prop_assert!(matches!(
                authorize(ALICE, asked, Resource::topic("a"), &acls, &[]),
                Decision::Deny(DenyReason::DeniedBy(_))
            ));
        }
    }
}
