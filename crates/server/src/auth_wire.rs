//! ACL entries between their wire form (`fjord.v1.AclEntry`) and [`fjord_meta::acl::AclEntry`].

use fjord_meta::acl::{AclEntry, Operation, PatternType, Permission, ResourceType};
use fjord_proto::v1 as pb;

use crate::error::{ApiError, Invalid};

/// An entry from the wire; an unspecified or unknown enum value is INVALID_ARGUMENT (the
/// entry's own rules are checked by the metadata, [`fjord_meta::acl::validate_acl`]).
pub fn entry_from_wire(e: Option<pb::AclEntry>) -> Result<AclEntry, ApiError> {
    let e = e.ok_or(Invalid::MissingField { field: "entry" })?;
    let resource_type = match pb::AclResourceType::try_from(e.resource_type) {
        Ok(pb::AclResourceType::Topic) => ResourceType::Topic,
        Ok(pb::AclResourceType::Group) => ResourceType::Group,
        Ok(pb::AclResourceType::Cluster) => ResourceType::Cluster,
        Ok(pb::AclResourceType::Producer) => ResourceType::Producer,
        _ => {
            return Err(unknown(
                "resource_type",
                e.resource_type,
                ResourceType::names(),
            ));
        }
    };
    let pattern_type = match pb::AclPatternType::try_from(e.pattern_type) {
        Ok(pb::AclPatternType::Literal) => PatternType::Literal,
        Ok(pb::AclPatternType::Prefixed) => PatternType::Prefixed,
        _ => {
            return Err(unknown(
                "pattern_type",
                e.pattern_type,
                PatternType::names(),
            ));
        }
    };
    let operation = match pb::AclOperation::try_from(e.operation) {
        Ok(pb::AclOperation::Read) => Operation::Read,
        Ok(pb::AclOperation::Write) => Operation::Write,
        Ok(pb::AclOperation::Create) => Operation::Create,
        Ok(pb::AclOperation::Delete) => Operation::Delete,
        Ok(pb::AclOperation::Alter) => Operation::Alter,
        Ok(pb::AclOperation::Describe) => Operation::Describe,
        Ok(pb::AclOperation::All) => Operation::All,
        _ => return Err(unknown("operation", e.operation, Operation::names())),
    };
    Ok(AclEntry {
        principal: e.principal,
        resource_type,
        pattern_type,
        resource_name: e.resource_name,
        operation,
        permission: if e.deny {
            Permission::Deny
        } else {
            Permission::Allow
        },
    })
}

fn unknown(field: &'static str, value: i32, names: &'static str) -> ApiError {
    Invalid::UnknownEnum {
        field,
        value,
        names,
    }
    .into()
}

/// An entry for the wire.
pub fn entry_to_wire(e: &AclEntry) -> pb::AclEntry {
    pb::AclEntry {
        principal: e.principal.clone(),
        resource_type: match e.resource_type {
            ResourceType::Topic => pb::AclResourceType::Topic,
            ResourceType::Group => pb::AclResourceType::Group,
            ResourceType::Cluster => pb::AclResourceType::Cluster,
            ResourceType::Producer => pb::AclResourceType::Producer,
        } as i32,
        pattern_type: match e.pattern_type {
            PatternType::Literal => pb::AclPatternType::Literal,
            PatternType::Prefixed => pb::AclPatternType::Prefixed,
        } as i32,
        resource_name: e.resource_name.clone(),
        operation: match e.operation {
            Operation::Read => pb::AclOperation::Read,
            Operation::Write => pb::AclOperation::Write,
            Operation::Create => pb::AclOperation::Create,
            Operation::Delete => pb::AclOperation::Delete,
            Operation::Alter => pb::AclOperation::Alter,
            Operation::Describe => pb::AclOperation::Describe,
            Operation::All => pb::AclOperation::All,
        } as i32,
        deny: e.permission == Permission::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_unknown_values_are_refused() {
        let e = AclEntry {
            principal: "User:alice".into(),
            resource_type: ResourceType::Group,
            pattern_type: PatternType::Prefixed,
            resource_name: "g-".into(),
            operation: Operation::Read,
            permission: Permission::Deny,
        };
        assert_eq!(entry_from_wire(Some(entry_to_wire(&e))).unwrap(), e);
        let producer = AclEntry {
            resource_type: ResourceType::Producer,
            ..e.clone()
        };
        assert_eq!(
            entry_from_wire(Some(entry_to_wire(&producer))).unwrap(),
            producer
        );
        let mut bad = entry_to_wire(&e);
        bad.operation = 0;
        let err = entry_from_wire(Some(bad)).unwrap_err().to_string();
        assert!(
            err.contains("operation") && err.contains("describe"),
            "{err}"
        );
        assert!(entry_from_wire(None).is_err());
    }
}
