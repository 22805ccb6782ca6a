//! Users and ACL entries: the admin calls behind `fjord user` and `fjord acl`. Each is a
//! metadata write or read that any node answers (see `proto/fjord.proto`, "Users and ACLs").

use fjord_proto::v1;

pub use fjord_meta::acl::{AclEntry, Operation, PatternType, Permission, ResourceType};

use crate::client::{Client, request};
use crate::error::ClientError;

/// A user just created: its principal and its token, shown this once.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedUser {
    /// `User:NAME`.
    pub principal: String,
    /// Send as `ClientConfig::token`; the cluster keeps only a hash of it.
    pub token: String,
}

impl std::fmt::Debug for CreatedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedUser({}, token ..)", self.principal)
    }
}

impl Client {
    /// Creates a user and answers its token. Not retried after a timeout of its first
    /// attempt on the same terms: a retry of a create that took effect is ALREADY_EXISTS.
    pub async fn create_user(&self, name: &str) -> Result<CreatedUser, ClientError> {
        let req = v1::CreateUserRequest { name: name.into() };
        let answer = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.create_user(request(req, t)).await }
            })
            .await?;
        Ok(CreatedUser {
            principal: answer.principal,
            token: answer.token,
        })
    }

    /// Deletes a user: its token no longer authenticates.
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        let req = v1::DeleteUserRequest { name: name.into() };
        self.any_node(|mut c, t| {
            let req = req.clone();
            async move { c.delete_user(request(req, t)).await }
        })
        .await
        .map(|_| ())
    }

    /// The users' principals, in order.
    pub async fn list_users(&self) -> Result<Vec<String>, ClientError> {
        self.any_node(
            |mut c, t| async move { c.list_users(request(v1::ListUsersRequest {}, t)).await },
        )
        .await
        .map(|a| a.principals)
    }

    /// Adds an ACL entry (one that exists is kept as is).
    pub async fn add_acl(&self, entry: &AclEntry) -> Result<(), ClientError> {
        let req = v1::AddAclRequest {
            entry: Some(to_wire(entry)),
        };
        self.any_node(|mut c, t| {
            let req = req.clone();
            async move { c.add_acl(request(req, t)).await }
        })
        .await
        .map(|_| ())
    }

    /// Removes an ACL entry; [`ClientError::NotFound`] if there is none such.
    pub async fn remove_acl(&self, entry: &AclEntry) -> Result<(), ClientError> {
        let req = v1::RemoveAclRequest {
            entry: Some(to_wire(entry)),
        };
        self.any_node(|mut c, t| {
            let req = req.clone();
            async move { c.remove_acl(request(req, t)).await }
        })
        .await
        .map(|_| ())
    }

    /// The ACL entries, of one principal if given.
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<AclEntry>, ClientError> {
        let req = v1::ListAclsRequest {
            principal: principal.map(str::to_string),
        };
        let answer = self
            .any_node(|mut c, t| {
                let req = req.clone();
                async move { c.list_acls(request(req, t)).await }
            })
            .await?;
        answer.entries.into_iter().map(from_wire).collect()
    }
}

fn to_wire(e: &AclEntry) -> v1::AclEntry {
    v1::AclEntry {
        principal: e.principal.clone(),
        resource_type: match e.resource_type {
            ResourceType::Topic => v1::AclResourceType::Topic,
            ResourceType::Group => v1::AclResourceType::Group,
            ResourceType::Cluster => v1::AclResourceType::Cluster,
            ResourceType::Producer => v1::AclResourceType::Producer,
        } as i32,
        pattern_type: match e.pattern_type {
            PatternType::Literal => v1::AclPatternType::Literal,
            PatternType::Prefixed => v1::AclPatternType::Prefixed,
        } as i32,
        resource_name: e.resource_name.clone(),
        operation: match e.operation {
            Operation::Read => v1::AclOperation::Read,
            Operation::Write => v1::AclOperation::Write,
            Operation::Create => v1::AclOperation::Create,
            Operation::Delete => v1::AclOperation::Delete,
            Operation::Alter => v1::AclOperation::Alter,
            Operation::Describe => v1::AclOperation::Describe,
            Operation::All => v1::AclOperation::All,
        } as i32,
        deny: e.permission == Permission::Deny,
    }
}

fn from_wire(e: v1::AclEntry) -> Result<AclEntry, ClientError> {
    let bad = |what: &str| ClientError::Protocol(format!("an ACL entry with an unknown {what}"));
    Ok(AclEntry {
        resource_type: match v1::AclResourceType::try_from(e.resource_type) {
            Ok(v1::AclResourceType::Topic) => ResourceType::Topic,
            Ok(v1::AclResourceType::Group) => ResourceType::Group,
            Ok(v1::AclResourceType::Cluster) => ResourceType::Cluster,
            Ok(v1::AclResourceType::Producer) => ResourceType::Producer,
            _ => return Err(bad("resource type")),
        },
        pattern_type: match v1::AclPatternType::try_from(e.pattern_type) {
            Ok(v1::AclPatternType::Literal) => PatternType::Literal,
            Ok(v1::AclPatternType::Prefixed) => PatternType::Prefixed,
            _ => return Err(bad("pattern type")),
        },
        operation: match v1::AclOperation::try_from(e.operation) {
            Ok(v1::AclOperation::Read) => Operation::Read,
            Ok(v1::AclOperation::Write) => Operation::Write,
            Ok(v1::AclOperation::Create) => Operation::Create,
            Ok(v1::AclOperation::Delete) => Operation::Delete,
            Ok(v1::AclOperation::Alter) => Operation::Alter,
            Ok(v1::AclOperation::Describe) => Operation::Describe,
            Ok(v1::AclOperation::All) => Operation::All,
            _ => return Err(bad("operation")),
        },
        permission: if e.deny {
            Permission::Deny
        } else {
            Permission::Allow
        },
        principal: e.principal,
        resource_name: e.resource_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_to_the_wire_and_back() {
        let e = AclEntry {
            principal: "User:*".into(),
            resource_type: ResourceType::Cluster,
            pattern_type: PatternType::Literal,
            resource_name: "cluster".into(),
            operation: Operation::Alter,
            permission: Permission::Deny,
        };
        assert_eq!(from_wire(to_wire(&e)).unwrap(), e);
        let mut w = to_wire(&e);
        w.operation = 99;
        assert!(from_wire(w).is_err());
    }
}
