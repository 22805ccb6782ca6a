//! Who a client request comes from, and whether it may do what it asks.
//!
//! A request's principal ([`Gate::principal`]): its bearer token (`authorization: Bearer
//! <token>`, the scheme in any case, a user created with CreateUser, checked against the salted hash the metadata
//! keeps), else its verified client certificate's subject mapped by `--tls-principal-rules`
//! ([`crate::principal_rules`]; a name that is not a valid identity, see
//! [`acl::validate_identity`], counts as unmapped and is logged), else `User:ANONYMOUS`, refused with UNAUTHENTICATED when
//! `--authentication required`. A token that does not check out is refused whatever the
//! setting. Whether the principal may do an operation on a resource is
//! [`fjord_meta::acl::authorize`]'s decision, with `--authorization acl`; a refusal is
//! [`ApiError::PermissionDenied`].
//!
//! Tokens are `fjord_<user>_<64 hex digits>`: 256 bits from the operating system's random
//! source ([`new_token`]); the metadata keeps SHA-256(salt ‖ secret) and a 16-byte salt.

use std::sync::Arc;

use fjord_meta::MetaState;
use fjord_meta::acl::{
    self, ANONYMOUS, AclEntry, Decision, Operation, Resource, ResourceType, USER_HASH_BYTES,
    USER_PREFIX, USER_SALT_BYTES, UserRecord,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::principal_rules::PrincipalRules;

/// `--authentication`: whether a request must carry an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// A request without a token or certificate is `User:ANONYMOUS`.
    #[default]
    None,
    /// A request without a valid token or a mapped certificate is UNAUTHENTICATED.
    Required,
}

/// `--authorization`: whether ACLs are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authorization {
    /// Every principal may do everything.
    #[default]
    None,
    /// Every RPC checks its permission against the ACL entries (superusers pass).
    Acl,
}

/// The prefix of every token.
pub const TOKEN_PREFIX: &str = "fjord_";
/// Bytes of a token's secret.
pub const SECRET_BYTES: usize = 32;
/// The gRPC metadata key a token comes in.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// Why a request has no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication is required (--authentication required): the request carries neither \
         a bearer token (metadata `authorization: Bearer <token>`, from `fjord user create`) \
         nor a client certificate"
    )]
    Missing,
    #[error(
        "the client certificate's subject {subject:?} matches no --tls-principal-rules rule, \
         and the request carries no bearer token"
    )]
    UnmappedCertificate { subject: String },
    #[error("the `authorization` metadata is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is malformed: a token is fjord_<user>_<64 hex digits>")]
    Malformed,
    #[error("the bearer token is not valid: no such user, or a wrong secret (was it deleted?)")]
    Rejected,
}

/// A client certificate's verified subject, e.g. `CN=alice,O=acme` (the TLS handshake
/// checked it against `--tls-ca`); `None` without TLS or without a client certificate.
fn cert_subject<T>(req: &tonic::Request<T>) -> Option<String> {
    crate::tls::client_cert_subject(req)
}

/// The settings a node checks requests with (from its config; fixed while it runs).
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub authentication: Authentication,
    pub authorization: Authorization,
    /// Principals that pass every check (`--superusers`).
    pub superusers: Vec<String>,
    pub rules: PrincipalRules,
}

impl Gate {
    /// No authentication and no authorization: what a node's own in-process calls use.
    pub fn open() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Authentication required and ACLs without superusers: what a node whose settings do
    /// not parse serves with (nothing gets through).
    pub fn closed() -> Gate {
        Gate {
            authentication: Authentication::Required,
            authorization: Authorization::Acl,
            superusers: Vec::new(),
            rules: PrincipalRules::default(),
        }
    }

    /// The principal of `req`, by the metadata's users (see the module doc).
    pub fn principal<T>(
        &self,
        req: &tonic::Request<T>,
        state: &MetaState,
    ) -> Result<String, AuthError> {
        if let Some(value) = req.metadata().get(AUTHORIZATION_KEY) {
            let token = value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(AuthError::NotBearer)?;
            return check_token(token, state);
        }
        if let Some(subject) = cert_subject(req) {
            match self.principal_of_subject(&subject) {
                Some(principal) => return Ok(principal),
                None if self.authentication == Authentication::Required => {
                    return Err(AuthError::UnmappedCertificate { subject });
                }
                None => {}
            }
        }
        match self.authentication {
            Authentication::Required => Err(AuthError::Missing),
            Authentication::None => Ok(ANONYMOUS.to_string()),
        }
    }

    /// The principal a certificate's subject maps to, if the rules map it to a valid
    /// identity ([`acl::validate_identity`]); a mapped name that is not one is logged and
    /// counts as unmapped.
    pub fn principal_of_subject(&self, subject: &str) -> Option<String> {
        let principal = format!("{USER_PREFIX}{}", self.rules.map(subject)?);
        match acl::validate_identity(&principal) {
            Ok(()) => Some(principal),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "--tls-principal-rules mapped a client certificate to an invalid principal: \
                     the certificate is taken as unmapped"
                );
                None
            }
        }
    }

    /// The ACL entries that can apply to `principal` (its own and `User:*`'s), taken once
    /// per request: every check of the request reads only these.
    pub fn entries_for(&self, principal: &str, state: &MetaState) -> Vec<AclEntry> {
        match self.authorization {
            Authorization::None => Vec::new(),
            Authorization::Acl => acl::entries_for(&state.acls, principal)
                .into_iter()
                .cloned()
                .collect(),
        }
    }

    /// Whether `principal` may do `op` on `resource`, by `entries` (from
    /// [`Gate::entries_for`]).
    pub fn decide(
        &self,
        principal: &str,
        op: Operation,
        resource: Resource<'_>,
        entries: &[AclEntry],
    ) -> Decision {
        match self.authorization {
            Authorization::None => Decision::Allow,
            Authorization::Acl => {
                acl::authorize(principal, op, resource, entries, &self.superusers)
            }
        }
    }

    /// [`Gate::decide`], a refusal as the error of the request.
    pub fn check(
        &self,
        principal: &str,
        op: Operation,
        resource: Resource<'_>,
        entries: &[AclEntry],
    ) -> Result<(), ApiError> {
        match self.decide(principal, op, resource, entries) {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(denied(principal, op, &resource.to_string(), &why)),
        }
    }

    /// Whether `principal` holds an allow of `op` on some resource of `kind` (see
    /// [`acl::allows_some`]).
    pub fn allows_some(
        &self,
        principal: &str,
        op: Operation,
        kind: ResourceType,
        entries: &[AclEntry],
    ) -> bool {
        self.authorization == Authorization::None
            || acl::allows_some(principal, op, kind, entries, &self.superusers)
    }

    /// Whether `principal` is a configured superuser.
    pub fn is_superuser(&self, principal: &str) -> bool {
        acl::is_superuser(principal, &self.superusers)
    }
}

/// The PERMISSION_DENIED of `principal` doing `op` on `resource` (already clipped).
pub fn denied(
    principal: &str,
    op: Operation,
    resource: &str,
    why: &impl std::fmt::Display,
) -> ApiError {
    ApiError::PermissionDenied {
        principal: fjord_meta::error::clip(principal),
        operation: op,
        resource: resource.to_string(),
        why: why.to_string(),
    }
}

/// The token of an `authorization` value `Bearer <token>`, the scheme in any case (RFC 7235:
/// schemes are case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A fresh token for `user` and the credential the metadata keeps for it. The secret comes
/// from the operating system's random source.
pub fn new_token(user: &str) -> (String, UserRecord) {
    let mut secret = [0u8; SECRET_BYTES];
    let mut salt = vec![0u8; USER_SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let hash = hash(&salt, &secret);
    let token = format!("{TOKEN_PREFIX}{user}_{}", hex(&secret));
    (token, UserRecord { salt, hash })
}

/// The principal a token authenticates, by the metadata's users.
pub fn check_token(token: &str, state: &MetaState) -> Result<String, AuthError> {
    let (user, secret) = parse_token(token).ok_or(AuthError::Malformed)?;
    // A user that does not exist costs the same hash as one that does: the answer's time
    // does not tell which user names exist.
    let Some(rec) = state.users.get(user) else {
        let _ = std::hint::black_box(hash(&[0u8; USER_SALT_BYTES], &secret));
        return Err(AuthError::Rejected);
    };
    if rec.hash.len() == USER_HASH_BYTES && constant_time_eq(&hash(&rec.salt, &secret), &rec.hash) {
        Ok(format!("{USER_PREFIX}{user}"))
    } else {
        Err(AuthError::Rejected)
    }
}

/// `fjord_<user>_<64 hex>` → the user and the secret.
fn parse_token(token: &str) -> Option<(&str, [u8; SECRET_BYTES])> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let hex_len = 2 * SECRET_BYTES;
    let split = rest.len().checked_sub(hex_len + 1)?;
    if !rest.is_char_boundary(split) || rest.as_bytes()[split] != b'_' || split == 0 {
        return None;
    }
    let (user, hex_part) = (&rest[..split], &rest[split + 1..]);
    let mut secret = [0u8; SECRET_BYTES];
    for (i, pair) in hex_part.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        secret[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some((user, secret))
}

fn hash(salt: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().to_vec()
}

/// Equal bytes, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_meta::MetaCommand;

    fn with_user(name: &str) -> (MetaState, String) {
        let (token, credential) = new_token(name);
        let mut state = MetaState::new();
        let resp = state.apply(&MetaCommand::CreateUser {
            name: name.into(),
            credential,
        });
        assert_eq!(resp, fjord_meta::MetaResponse::Ok);
        (state, token)
    }

    fn request(auth: Option<&str>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        if let Some(v) = auth {
            req.metadata_mut()
                .insert(AUTHORIZATION_KEY, v.parse().unwrap());
        }
        req
    }

    #[test]
    fn a_token_authenticates_its_user_only() {
        let (state, token) = with_user("svc_a-1");
        assert_eq!(check_token(&token, &state), Ok("User:svc_a-1".into()));
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(check_token(&wrong, &state), Err(AuthError::Rejected));
        assert_eq!(check_token("fjord_x", &state), Err(AuthError::Malformed));
        assert_eq!(check_token("", &state), Err(AuthError::Malformed));
        let other = token.replace("svc_a-1", "bob");
        assert_eq!(check_token(&other, &state), Err(AuthError::Rejected));
        // The state keeps no secret.
        let rec = &state.users["svc_a-1"];
        assert!(!token.contains(&hex(&rec.hash)));
    }

    #[test]
    fn required_authentication_refuses_a_request_without_identity() {
        let (state, token) = with_user("alice");
        let mut gate = Gate::default();
        assert_eq!(gate.principal(&request(None), &state), Ok(ANONYMOUS.into()));
        gate.authentication = Authentication::Required;
        assert_eq!(
            gate.principal(&request(None), &state),
            Err(AuthError::Missing)
        );
        let bearer = format!("Bearer {token}");
        assert_eq!(
            gate.principal(&request(Some(&bearer)), &state),
            Ok("User:alice".into())
        );
        assert_eq!(
            gate.principal(&request(Some("Basic x")), &state),
            Err(AuthError::NotBearer)
        );
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let v = format!("{scheme} {token}");
            assert_eq!(
                gate.principal(&request(Some(&v)), &state),
                Ok("User:alice".into()),
                "{scheme}"
            );
        }
        assert_eq!(
            gate.principal(&request(Some("Bearerx")), &state),
            Err(AuthError::NotBearer)
        );
        // A bad token is refused even without required authentication.
        gate.authentication = Authentication::None;
        assert_eq!(
            gate.principal(&request(Some("Bearer fjord_alice_00")), &state),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn acl_authorization_names_principal_operation_and_resource() {
        let gate = Gate {
            authorization: Authorization::Acl,
            superusers: vec!["User:admin".into()],
            ..Gate::default()
        };
        let e = gate
            .check("User:alice", Operation::Write, Resource::topic("b"), &[])
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("User:alice") && msg.contains("write") && msg.contains("topic \"b\""),
            "{msg}"
        );
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            gate.check("User:admin", Operation::Alter, Resource::cluster(), &[])
                .is_ok()
        );
        assert!(
            Gate::default()
                .check("User:x", Operation::Delete, Resource::topic("t"), &[])
                .is_ok()
        );
    }

    #[test]
    fn a_refusal_clips_the_name_and_does_not_quote_the_denying_entry() {
        use fjord_meta::acl::{PatternType, Permission};
        let gate = Gate {
            authorization: Authorization::Acl,
            ..Gate::default()
        };
        let deny = AclEntry {
            principal: "User:*".into(),
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Prefixed,
            resource_name: "secret-prefix-".into(),
            operation: Operation::Read,
            permission: Permission::Deny,
        };
        let e = gate
            .check(
                "User:alice",
                Operation::Read,
                Resource::topic("secret-prefix-x"),
                &[deny],
            )
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret-prefix-\""), "{e}");
        let long = "t".repeat(100_000);
        let e = gate
            .check("User:alice", Operation::Read, Resource::topic(&long), &[])
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1_000, "{} bytes", e.len());
    }

    #[test]
    fn the_entries_of_a_request_are_its_principal_s_and_everyone_s() {
        use fjord_meta::acl::{PatternType, Permission};
        let mut state = MetaState::new();
        for p in ["User:alice", "User:bob", "User:*"] {
            state.acls.insert(AclEntry {
                principal: p.into(),
                resource_type: ResourceType::Topic,
                pattern_type: PatternType::Literal,
                resource_name: "t".into(),
                operation: Operation::Read,
                permission: Permission::Allow,
            });
        }
        let gate = Gate {
            authorization: Authorization::Acl,
            ..Gate::default()
        };
        let mine: Vec<String> = gate
            .entries_for("User:alice", &state)
            .into_iter()
            .map(|e| e.principal)
            .collect();
        assert_eq!(mine, ["User:*", "User:alice"]);
        assert!(Gate::default().entries_for("User:alice", &state).is_empty());
    }

    #[test]
    fn a_certificate_mapped_to_an_invalid_identity_is_unmapped() {
        let gate = Gate {
            rules: PrincipalRules::parse("RULE:^CN=([^,]*),.*$/$1/,DEFAULT").unwrap(),
            ..Gate::default()
        };
        assert_eq!(
            gate.principal_of_subject("CN=alice,O=acme"),
            Some("User:alice".into())
        );
        assert_eq!(gate.principal_of_subject("CN=*,O=acme"), None);
        assert_eq!(gate.principal_of_subject("CN=ANONYMOUS,O=acme"), None);
        assert_eq!(gate.principal_of_subject("CN=a\u{7}b,O=x"), None);
        // DEFAULT: the whole subject, commas included.
        assert_eq!(
            gate.principal_of_subject("O=acme"),
            Some("User:O=acme".into())
        );
    }

    #[test]
    fn tokens_differ_and_parse_back() {
        let (a, _) = new_token("u");
        let (b, _) = new_token("u");
        assert_ne!(a, b);
        let (user, _) = parse_token(&a).unwrap();
        assert_eq!(user, "u");
        assert!(parse_token("fjord__0000").is_none());
    }
}
