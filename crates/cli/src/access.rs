//! Users, namespaces, tokens and the audit log from the command line. Like every command but
//! `serve`, these work on the data directory directly: they are the operator's tools. Stored
//! names and fields are printed through `escape_control`: they may come from requests.

use anyhow::{Context, bail};
use buildgrid_access::Scope;
use buildgrid_core::escape_control;
use buildgrid_store::Store;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user and print its web password (shown once).
    Create {
        name: String,
        /// Make the user an admin: every namespace, every app, user management.
        #[arg(long)]
        admin: bool,
    },
    /// List users and their namespaces.
    List,
    /// Give a user a new web password and print it (shown once).
    ResetPassword { name: String },
    /// Give a user new registry credentials (for `docker login`) and print them (shown once).
    RegistryPassword { name: String },
}

#[derive(Subcommand)]
pub enum NamespaceCommand {
    /// List namespaces, whether they are public, and their members.
    List,
    /// Let anyone pull the namespace's images, without credentials.
    Public { namespace: String },
    /// Let only members, admins and their tokens pull the namespace's images (the default).
    Private { namespace: String },
    /// Let a user pull the namespace's images and build its apps.
    AddMember { namespace: String, user: String },
    /// Take a user's membership away.
    RemoveMember { namespace: String, user: String },
    /// Show the namespace's build logs, deploy logs and running containers to everyone who may
    /// read it (`on`), or to its members and admins only (`off`, the default).
    PublishLogs {
        namespace: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (shown once). A token never does more than its user may.
    Create {
        /// The token's name, to recognise it in listings.
        #[arg(long, default_value = "cli")]
        name: String,
        /// The user the token acts for.
        #[arg(long, default_value = "admin")]
        user: String,
        /// What it may do: `pull` (all the user can see), `pull:<namespace>`,
        /// `build:<namespace>/<app>`, `build:<namespace>/*`, `admin`. Repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. `90m`, `12h`, `30d` (default: until revoked).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens: name, scopes, last use. Secrets are never shown again.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token; the next request with it is refused.
    Revoke { id: i64 },
}

pub fn user(store: &Store, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { name, admin } => {
            let (user, password) = buildgrid_access::create_user(store, &name, admin)?;
            println!(
                "user {} created{}",
                user.name,
                if admin { " (admin)" } else { "" }
            );
            println!("web password (shown once): {password}");
            println!(
                "registry credentials: `buildgrid user registry-password {}`",
                user.name
            );
        }
        UserCommand::List => {
            let namespaces = store.db.namespaces()?;
            for user in store.db.users()? {
                let member_of: Vec<&str> = namespaces
                    .iter()
                    .filter(|ns| ns.members.contains(&user.name))
                    .map(|ns| ns.name.as_str())
                    .collect();
                println!(
                    "{}\t{}\tregistry credentials: {}\tnamespaces: {}",
                    escape_control(&user.name),
                    if user.admin { "admin" } else { "user" },
                    if user.registry_password_hash.is_some() {
                        "yes"
                    } else {
                        "none yet"
                    },
                    if member_of.is_empty() {
                        "-".to_owned()
                    } else {
                        escape_control(&member_of.join(", ")).into_owned()
                    }
                );
            }
        }
        UserCommand::ResetPassword { name } => {
            let user = buildgrid_access::user(store, &name)?;
            let password = buildgrid_access::reset_password(store, &user)?;
            println!("web password of {} (shown once): {password}", user.name);
        }
        UserCommand::RegistryPassword { name } => {
            let user = buildgrid_access::user(store, &name)?;
            let password = buildgrid_access::regenerate_registry_password(store, &user)?;
            println!(
                "registry credentials of {} (shown once; the old password no longer works):",
                user.name
            );
            println!("username: {}", user.name);
            println!("password: {password}");
        }
    }
    Ok(())
}

fn namespace_name(text: &str) -> anyhow::Result<String> {
    match Scope::parse(&format!("pull:{text}"))? {
        Scope::Pull(buildgrid_access::Target::Namespace(ns)) => Ok(ns),
        _ => bail!("invalid namespace {text:?}: use lowercase letters, digits and separators"),
    }
}

pub fn namespace(store: &Store, command: NamespaceCommand) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::List => {
            for ns in store.db.namespaces()? {
                println!(
                    "{}\t{}\tmembers: {}",
                    escape_control(&ns.name),
                    if ns.public { "public" } else { "private" },
                    if ns.members.is_empty() {
                        "-".to_owned()
                    } else {
                        escape_control(&ns.members.join(", ")).into_owned()
                    }
                );
            }
        }
        NamespaceCommand::Public { namespace } => {
            let namespace = namespace_name(&namespace)?;
            store.db.set_namespace_public(&namespace, true)?;
            buildgrid_access::audit_now(store, "admin", "namespace made public", &namespace)?;
            println!("namespace {namespace} is public: anyone may pull its images");
        }
        NamespaceCommand::PublishLogs { namespace, state } => {
            let namespace = namespace_name(&namespace)?;
            let on = state == "on";
            store.db.set_namespace_logs_public(&namespace, on)?;
            let action = if on {
                "namespace logs published"
            } else {
                "namespace logs unpublished"
            };
            buildgrid_access::audit_now(store, "admin", action, &namespace)?;
            if on {
                println!(
                    "namespace {namespace} publishes its logs: whoever may read it sees its build and deploy logs and running containers"
                );
            } else {
                println!(
                    "namespace {namespace} shows its build and deploy logs and running containers to members only"
                );
            }
        }
        NamespaceCommand::Private { namespace } => {
            let namespace = namespace_name(&namespace)?;
            store.db.set_namespace_public(&namespace, false)?;
            buildgrid_access::audit_now(store, "admin", "namespace made private", &namespace)?;
            println!("namespace {namespace} is private");
        }
        NamespaceCommand::AddMember { namespace, user } => {
            let namespace = namespace_name(&namespace)?;
            let user = buildgrid_access::user(store, &user)?;
            store.db.add_member(&namespace, user.id)?;
            buildgrid_access::audit_now(
                store,
                "admin",
                "member added",
                &format!("{} to {namespace}", user.name),
            )?;
            println!("{} is a member of {namespace}", user.name);
        }
        NamespaceCommand::RemoveMember { namespace, user } => {
            let user = buildgrid_access::user(store, &user)?;
            if !store.db.remove_member(&namespace, user.id)? {
                bail!("{} is not a member of {namespace}", user.name);
            }
            buildgrid_access::audit_now(
                store,
                "admin",
                "member removed",
                &format!("{} from {namespace}", user.name),
            )?;
            println!("{} is no longer a member of {namespace}", user.name);
        }
    }
    Ok(())
}

/// Seconds in a lifetime like `90m`, `12h` or `30d`.
fn lifetime(text: &str) -> anyhow::Result<i64> {
    let invalid =
        || anyhow::anyhow!("invalid lifetime {text:?}: use a number and m, h or d, e.g. 30d");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let unit = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    if number <= 0 {
        return Err(invalid());
    }
    number.checked_mul(unit).ok_or_else(invalid)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn token(store: &Store, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            user,
            scopes,
            expires,
        } => {
            let user = buildgrid_access::user(store, &user)?;
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let expires_at = expires
                .as_deref()
                .map(lifetime)
                .transpose()?
                .map(|seconds| now() + seconds);
            let (_, secret) =
                buildgrid_access::create_token(store, &user, &name, &scopes, expires_at)?;
            println!("{secret}");
        }
        TokenCommand::List { user } => {
            let user_id = match user {
                Some(name) => Some(buildgrid_access::user(store, &name)?.id),
                None => None,
            };
            let users = store.db.users()?;
            for token in store.db.tokens(user_id)? {
                let owner = users
                    .iter()
                    .find(|u| Some(u.id) == token.user_id)
                    .map_or("-", |u| u.name.as_str());
                let state = if token.revoked_at.is_some() {
                    "revoked".to_owned()
                } else if token.expires_at.is_some_and(|at| at <= now()) {
                    "expired".to_owned()
                } else {
                    match token.expires_at {
                        Some(at) => format!("expires {}", time_text(at)),
                        None => "no expiry".to_owned(),
                    }
                };
                let used = token.last_used_at.map_or("never used".to_owned(), |at| {
                    format!("last used {}", time_text(at))
                });
                println!(
                    "{}\t{}\t{}\t{}\t{state}\t{used}",
                    token.id,
                    escape_control(&token.name),
                    escape_control(owner),
                    escape_control(&token.scopes)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.db.revoke_token(id, None)? {
                bail!("no live token {id}: `buildgrid token list` shows them");
            }
            buildgrid_access::audit_now(store, "admin", "token revoked", &format!("token {id}"))?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
fn time_text(at: i64) -> String {
    let days = at.div_euclid(86_400);
    let seconds = at.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        seconds / 3600,
        seconds % 3600 / 60
    )
}

pub fn audit(store: &Store, limit: usize) -> anyhow::Result<()> {
    let entries = store.db.audit(limit).context("cannot read the audit log")?;
    for entry in entries.iter().rev() {
        let times = if entry.count > 1 {
            format!("\t×{}", entry.count)
        } else {
            String::new()
        };
        // Actors, targets and clients come from requests: a sign-in may name any user.
        println!(
            "{}\t{}\t{}\t{}\t{}{times}",
            time_text(entry.at),
            escape_control(&entry.actor),
            escape_control(&entry.action),
            escape_control(&entry.target),
            escape_control(entry.client.as_deref().unwrap_or("-"))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_times() {
        assert_eq!(lifetime("90m").unwrap(), 5400);
        assert_eq!(lifetime("30d").unwrap(), 2_592_000);
        assert!(lifetime("0d").is_err());
        assert!(lifetime("30").is_err());
        assert!(lifetime("").is_err());
        assert_eq!(time_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(time_text(1_795_600_000), "2026-11-25 09:46 UTC");
    }
}
