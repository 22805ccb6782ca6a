//! `fjord user create|list|delete` and `fjord acl add|list|remove`: identities and ACL
//! entries, kept in the metadata group (see `docs/architecture.md`, "Identities and ACLs").

use fjord_client::Client;
use fjord_client::security::{AclEntry, Operation, PatternType, Permission, ResourceType};
use serde::Serialize;

use crate::output::{Output, to_json};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user and print its bearer token, once (the cluster keeps only a hash).
    /// Clients send it with --token or FJORD_TOKEN.
    Create {
        /// 1 to 128 characters of a-z, A-Z, 0-9, '.', '_' and '-'.
        name: String,
    },
    /// List the users' principals (json: one object per user).
    List,
    /// Delete a user: its token no longer authenticates. Its ACL entries stay.
    Delete { name: String },
}

/// The entry an `acl add` or `acl remove` names.
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    /// `User:NAME`, or `User:*` for every principal.
    #[arg(long)]
    principal: String,
    /// read, write, create, delete, alter, describe or all.
    #[arg(long)]
    operation: Operation,
    /// topic, group, cluster or producer (a named producer's name: a named InitProducer
    /// needs write on it).
    #[arg(long)]
    resource_type: ResourceType,
    /// A name, a prefix (with --pattern prefixed), or `*` for every resource of the type;
    /// `cluster` for the cluster.
    #[arg(long)]
    resource: String,
    /// literal (the name, or `*`) or prefixed.
    #[arg(long, default_value = "literal")]
    pattern: PatternType,
    /// Deny instead of allow (a deny wins over every allow).
    #[arg(long)]
    deny: bool,
}

impl AclArgs {
    fn entry(self) -> AclEntry {
        AclEntry {
            principal: self.principal,
            resource_type: self.resource_type,
            pattern_type: self.pattern,
            resource_name: self.resource,
            operation: self.operation,
            permission: if self.deny {
                Permission::Deny
            } else {
                Permission::Allow
            },
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Add an ACL entry.
    #[command(
        after_help = "Examples:\n  fjord acl add --principal User:alice --operation write \
        --resource-type topic --resource orders\n  fjord acl add --principal User:alice \
        --operation read --resource-type group --resource app- --pattern prefixed\n  fjord acl \
        add --principal User:* --operation all --resource-type topic --resource secret- \
        --pattern prefixed --deny\n  fjord acl add --principal User:app --operation write \
        --resource-type producer --resource app- --pattern prefixed"
    )]
    Add(AclArgs),
    /// List the ACL entries (json: one object per entry).
    List {
        /// Only this principal's entries.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Remove an ACL entry (named as it was added).
    Remove(AclArgs),
}

#[derive(Serialize)]
struct UserOut<'a> {
    principal: &'a str,
}

#[derive(Serialize)]
struct CreatedOut<'a> {
    principal: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct AclOut<'a> {
    principal: &'a str,
    resource_type: &'static str,
    resource: &'a str,
    pattern: &'static str,
    operation: &'static str,
    permission: &'static str,
}

fn acl_json(e: &AclEntry) -> String {
    to_json(&AclOut {
        principal: &e.principal,
        resource_type: e.resource_type.as_str(),
        resource: &e.resource_name,
        pattern: e.pattern_type.as_str(),
        operation: e.operation.as_str(),
        permission: e.permission.as_str(),
    })
}

fn acl_text(e: &AclEntry) -> String {
    format!(
        "{:<6} {:<20} {:<9} {:<8} {:<9} {}",
        e.permission.as_str(),
        e.principal,
        e.operation.as_str(),
        e.resource_type.as_str(),
        e.pattern_type.as_str(),
        e.resource_name
    )
}

pub async fn run_user(client: Client, out: Output, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { name } => {
            let u = client.create_user(&name).await?;
            out.emit(
                || {
                    format!(
                        "created {}\ntoken (shown once; send it with --token or FJORD_TOKEN):\n{}",
                        u.principal, u.token
                    )
                },
                || {
                    to_json(&CreatedOut {
                        principal: &u.principal,
                        token: &u.token,
                    })
                },
            )?;
        }
        UserCommand::List => {
            for p in client.list_users().await? {
                out.emit(|| p.clone(), || to_json(&UserOut { principal: &p }))?;
            }
        }
        UserCommand::Delete { name } => {
            client.delete_user(&name).await?;
            out.emit(
                || format!("deleted User:{name}"),
                || serde_json::json!({ "deleted": format!("User:{name}") }).to_string(),
            )?;
        }
    }
    Ok(())
}

pub async fn run_acl(client: Client, out: Output, command: AclCommand) -> anyhow::Result<()> {
    match command {
        AclCommand::Add(args) => {
            let e = args.entry();
            client.add_acl(&e).await?;
            out.emit(
                || format!("added: {e}"),
                || format!("{{\"added\":{}}}", acl_json(&e)),
            )?;
        }
        AclCommand::Remove(args) => {
            let e = args.entry();
            client.remove_acl(&e).await?;
            out.emit(
                || format!("removed: {e}"),
                || format!("{{\"removed\":{}}}", acl_json(&e)),
            )?;
        }
        AclCommand::List { principal } => {
            let entries = client.list_acls(principal.as_deref()).await?;
            if !out.is_json() && !entries.is_empty() {
                out.line(&format!(
                    "{:<6} {:<20} {:<9} {:<8} {:<9} RESOURCE",
                    "PERM", "PRINCIPAL", "OPERATION", "TYPE", "PATTERN"
                ))?;
            }
            for e in &entries {
                out.emit(|| acl_text(e), || acl_json(e))?;
            }
        }
    }
    Ok(())
}
