//! Why the next collection keeps a manifest, in terms the image page and `gc` show.

use buildgrid_core::Digest;

/// Why the next collection keeps a manifest: one root that names it, or the kept manifest it
/// comes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// Build `build` is among the newest `keep_last` successful builds of `branch`; `rank` 1 is
    /// the newest.
    RecentBuild {
        build: i64,
        branch: String,
        rank: usize,
        keep_last: u32,
    },
    /// Build `build` finished less than `keep_days` days ago.
    Young { build: i64, keep_days: u32 },
    /// Service `service` runs the image of build `build` now, on `servers`.
    Runs {
        build: i64,
        service: String,
        servers: Vec<String>,
    },
    /// A deploy of `service` newer than the one that runs it did not succeed and may have left
    /// containers of build `build` running.
    LeftRunning { build: i64, service: String },
    /// Service `service` ran the image of build `build` before; it keeps `keep_deployed` such.
    RollbackTarget {
        build: i64,
        service: String,
        keep_deployed: u32,
    },
    /// A deploy of build `build` is running.
    Deploying { build: i64 },
    /// The moving tag `tag` of `branch` names it.
    BranchTag { tag: String, branch: String },
    /// The tag `tag` no build made (`buildgrid import` made it).
    Imported { tag: String },
    /// Build `build` is in progress and its commit tag `tag` names it.
    BuildInProgress { build: i64, tag: String },
    /// Pinned by hand.
    Pinned,
    /// The kept index `index` lists it (a platform's image).
    InIndex { index: Digest },
    /// It refers to the kept manifest `subject` (a signature, an SBOM).
    RefersTo { subject: Digest },
}

impl std::fmt::Display for KeepReason {
    /// In plain words, as the image page shows it: "younger than 14 days".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::RecentBuild {
                branch,
                rank,
                keep_last,
                ..
            } => {
                let which = match rank {
                    1 => "the newest".to_owned(),
                    n => format!("the {} newest", ordinal(*n)),
                };
                write!(
                    f,
                    "{which} of the last {keep_last} successful builds of branch {branch}"
                )
            }
            KeepReason::Young { keep_days, .. } => write!(f, "younger than {keep_days} days"),
            KeepReason::Runs {
                service, servers, ..
            } => match servers.as_slice() {
                [] => write!(f, "runs now on service {service}"),
                [server] => write!(f, "runs now on service {service} of server {server}"),
                servers => {
                    let servers = servers.join(", ");
                    write!(f, "runs now on service {service} of servers {servers}")
                }
            },
            KeepReason::LeftRunning { service, .. } => write!(
                f,
                "may still run on service {service}: a deploy that did not finish left it there"
            ),
            KeepReason::RollbackTarget {
                service,
                keep_deployed,
                ..
            } => {
                write!(
                    f,
                    "a rollback target of service {service} ({keep_deployed} kept)"
                )
            }
            KeepReason::Deploying { .. } => write!(f, "a deploy in progress"),
            KeepReason::BranchTag { tag, branch } => {
                write!(f, "the tag {tag} of branch {branch} names it")
            }
            KeepReason::Imported { tag } => write!(f, "a tag buildgrid import made ({tag})"),
            KeepReason::BuildInProgress { .. } => write!(f, "a build in progress"),
            KeepReason::Pinned => write!(f, "pinned"),
            KeepReason::InIndex { index } => write!(f, "a platform of the kept index {index}"),
            KeepReason::RefersTo { subject } => {
                write!(f, "refers to the kept image {subject}")
            }
        }
    }
}

/// `2nd`, `3rd`, `11th`, `21st`.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
