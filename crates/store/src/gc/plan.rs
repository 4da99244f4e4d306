//! What a collection keeps and deletes, computed from a snapshot of the store's rows (pure).

use std::collections::{BTreeMap, HashMap, HashSet};

use buildgrid_core::Digest;

use super::KeepReason;
use crate::db::{DEFAULT_RETENTION, Retention, RetentionRule, branch_name};

/// The rows a collection decides on, read in the transaction that deletes.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    /// Seconds since the epoch, for `keep_days`.
    pub now: i64,
    pub repos: HashMap<i64, String>,
    pub manifests: Vec<ManifestNode>,
    pub tags: Vec<TagNode>,
    pub builds: Vec<BuildNode>,
    /// What each service of each deploy ran.
    pub deploy_images: Vec<DeployNode>,
    /// Builds of deploys still running.
    pub running_deploys: Vec<i64>,
    pub pins: Vec<(i64, Digest)>,
    /// The servers of each service, by app id and service name.
    pub servers: HashMap<(i64, String), Vec<String>>,
    pub rules: Vec<(String, RetentionRule)>,
    /// Branches deleted upstream.
    pub deleted_branches: Vec<DeletedBranchNode>,
    pub blobs: Vec<(Digest, u64)>,
    pub repo_blobs: Vec<(i64, Digest)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ManifestNode {
    pub repo_id: i64,
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Its config and layers.
    pub blobs: Vec<Digest>,
    /// An index's manifests.
    pub children: Vec<Digest>,
}

#[derive(Debug, Clone)]
pub(crate) struct TagNode {
    pub repo_id: i64,
    pub name: String,
    pub digest: Digest,
    /// The branch whose moving tag this is.
    pub branch: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct BuildNode {
    pub id: i64,
    pub app_id: i64,
    /// `<ns>/<app>`.
    pub app: String,
    pub namespace: String,
    /// The repository its image goes to, when it has a row.
    pub repo_id: Option<i64>,
    pub source_id: Option<i64>,
    pub git_ref: String,
    pub finished: bool,
    pub succeeded: bool,
    pub commit_id: Option<String>,
    pub image_digest: Option<Digest>,
    pub finished_at: Option<i64>,
    pub image_removed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DeployNode {
    pub app_id: i64,
    pub service: String,
    pub deploy_id: i64,
    pub succeeded: bool,
    pub build_id: i64,
}

/// A branch of an app's repository or of one of its sources that a push deleted.
#[derive(Debug, Clone)]
pub(crate) struct DeletedBranchNode {
    pub app_id: i64,
    /// `<ns>/<app>`.
    pub app: String,
    pub namespace: String,
    pub source_id: Option<i64>,
    /// The repository its builds' images go to, when it has a row.
    pub repo_id: Option<i64>,
    pub branch: String,
    pub deleted_at: i64,
}

/// What a collection deletes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub manifests: Vec<(i64, Digest)>,
    pub tags: Vec<(i64, String)>,
    pub repo_blobs: Vec<(i64, Digest)>,
    pub blobs: Vec<(Digest, u64)>,
    /// Builds whose image goes.
    pub builds: Vec<i64>,
}

/// The rule that applies to `app` in `namespace`: the app's, else the namespace's, else the
/// server's, else [`DEFAULT_RETENTION`], value by value.
pub(crate) fn rule_for(rules: &[(String, RetentionRule)], namespace: &str, app: &str) -> Retention {
    let find = |scope: &str| {
        rules
            .iter()
            .find(|(s, _)| s == scope)
            .map(|(_, r)| *r)
            .unwrap_or_default()
    };
    find(app).over(find(namespace).over(find("").over(DEFAULT_RETENTION)))
}

/// Branches deleted upstream at least their rule's `drop_deleted_after` days ago: retention
/// keeps none of their builds (neither keep-last nor keep-days) and their branch tags keep
/// nothing, so only a pin, a deploy or a build in flight keeps their images.
#[derive(Default)]
struct Dropped<'a> {
    /// By app, source and branch name, as builds name them.
    branches: HashSet<(i64, Option<i64>, &'a str)>,
    /// By repository and branch name, as branch tags name them.
    tags: HashSet<(i64, &'a str)>,
}

impl Dropped<'_> {
    fn build(&self, build: &BuildNode) -> bool {
        let branch = branch_name(&build.git_ref);
        self.branches
            .contains(&(build.app_id, build.source_id, branch))
    }
}

fn dropped_branches(graph: &Graph) -> Dropped<'_> {
    let mut dropped = Dropped::default();
    for deleted in &graph.deleted_branches {
        let rule = rule_for(&graph.rules, &deleted.namespace, &deleted.app);
        let after = i64::from(rule.drop_deleted_after) * 86_400;
        if graph.now - deleted.deleted_at < after {
            continue;
        }
        let branch = deleted.branch.as_str();
        dropped
            .branches
            .insert((deleted.app_id, deleted.source_id, branch));
        if let Some(repo_id) = deleted.repo_id {
            dropped.tags.insert((repo_id, branch));
        }
    }
    dropped
}

/// Builds whose images retention keeps, each with why (a build may have several reasons).
fn kept_builds(graph: &Graph, dropped: &Dropped<'_>) -> Vec<(i64, KeepReason)> {
    let mut kept = Vec::new();
    let mut branches: BTreeMap<(i64, Option<i64>, &str), Vec<&BuildNode>> = BTreeMap::new();
    // A build whose image went still counts: raising N never brings older builds' images
    // back into the count, which would make an image kept only by a pin or a deploy stay when
    // the pin or deploy goes.
    let has_image = |b: &BuildNode| b.succeeded && b.image_digest.is_some();
    for build in graph
        .builds
        .iter()
        .filter(|b| has_image(b) && !dropped.build(b))
    {
        branches
            .entry((build.app_id, build.source_id, build.git_ref.as_str()))
            .or_default()
            .push(build);
        let rule = rule_for(&graph.rules, &build.namespace, &build.app);
        let age = graph.now - build.finished_at.unwrap_or(graph.now);
        if rule.keep_days > 0 && age < i64::from(rule.keep_days) * 86_400 {
            let keep_days = rule.keep_days;
            kept.push((
                build.id,
                KeepReason::Young {
                    build: build.id,
                    keep_days,
                },
            ));
        }
    }
    for builds in branches.values_mut() {
        builds.sort_by_key(|b| std::cmp::Reverse(b.id));
        let rule = rule_for(&graph.rules, &builds[0].namespace, &builds[0].app);
        for (i, build) in builds.iter().take(rule.keep_last as usize).enumerate() {
            let reason = KeepReason::RecentBuild {
                build: build.id,
                branch: build.git_ref.clone(),
                rank: i + 1,
                keep_last: rule.keep_last,
            };
            kept.push((build.id, reason));
        }
    }
    let apps: HashMap<i64, &BuildNode> = graph.builds.iter().map(|b| (b.app_id, b)).collect();
    let mut services: BTreeMap<(i64, &str), Vec<&DeployNode>> = BTreeMap::new();
    for node in &graph.deploy_images {
        services
            .entry((node.app_id, node.service.as_str()))
            .or_default()
            .push(node);
    }
    for ((app_id, service), mut nodes) in services {
        nodes.sort_by_key(|n| std::cmp::Reverse(n.deploy_id));
        // Deploys newer than the newest that succeeded may have left containers running (an
        // interrupted deploy's are adopted): their images stay with the one that runs.
        let current = nodes
            .iter()
            .position(|n| n.succeeded)
            .unwrap_or(nodes.len() - 1);
        let servers = graph
            .servers
            .get(&(app_id, service.to_owned()))
            .cloned()
            .unwrap_or_default();
        for node in &nodes[..current] {
            let service = service.to_owned();
            let reason = KeepReason::LeftRunning {
                build: node.build_id,
                service,
            };
            kept.push((node.build_id, reason));
        }
        let running = nodes[current].build_id;
        let service = service.to_owned();
        let reason = match nodes[current].succeeded {
            true => KeepReason::Runs {
                build: running,
                service: service.clone(),
                servers,
            },
            false => KeepReason::LeftRunning {
                build: running,
                service: service.clone(),
            },
        };
        kept.push((running, reason));
        let keep_deployed = apps
            .get(&app_id)
            .map(|b| rule_for(&graph.rules, &b.namespace, &b.app).keep_deployed)
            .unwrap_or(DEFAULT_RETENTION.keep_deployed);
        let mut before = Vec::new();
        for node in nodes[current + 1..].iter().filter(|n| n.succeeded) {
            if before.len() == keep_deployed as usize {
                break;
            }
            if !before.contains(&node.build_id) && node.build_id != running {
                before.push(node.build_id);
            }
        }
        for build in before {
            let service = service.clone();
            let reason = KeepReason::RollbackTarget {
                build,
                service,
                keep_deployed,
            };
            kept.push((build, reason));
        }
    }
    for &build in &graph.running_deploys {
        kept.push((build, KeepReason::Deploying { build }));
    }
    kept
}

/// The roots of a collection: every manifest a rule keeps by itself, with why, once per
/// reason (see `gc`). A root may name a manifest no longer stored.
fn roots(graph: &Graph) -> Vec<((i64, &Digest), KeepReason)> {
    let dropped = dropped_branches(graph);
    // Per commit tag: a build of it in flight, if any.
    let mut commits: HashMap<(i64, &str), Option<i64>> = HashMap::new();
    for build in &graph.builds {
        if let (Some(repo_id), Some(commit)) = (build.repo_id, build.commit_id.as_deref()) {
            let in_flight = commits.entry((repo_id, commit)).or_default();
            if !build.finished {
                *in_flight = Some(build.id);
            }
        }
    }
    let mut roots = Vec::new();
    for tag in &graph.tags {
        let key = (tag.repo_id, &tag.digest);
        // Branch tags, tags that no build made (imports), and commit tags of builds in flight.
        let name = tag.name.clone();
        let reason = match (&tag.branch, commits.get(&(tag.repo_id, tag.name.as_str()))) {
            (Some(branch), _) if dropped.tags.contains(&(tag.repo_id, branch.as_str())) => {
                continue;
            }
            (Some(branch), _) => KeepReason::BranchTag {
                tag: name,
                branch: branch.clone(),
            },
            (None, None) => KeepReason::Imported { tag: name },
            (None, Some(Some(build))) => KeepReason::BuildInProgress {
                build: *build,
                tag: name,
            },
            (None, Some(None)) => continue,
        };
        roots.push((key, reason));
    }
    let builds: HashMap<i64, &BuildNode> = graph.builds.iter().map(|b| (b.id, b)).collect();
    for (id, reason) in kept_builds(graph, &dropped) {
        let Some(build) = builds.get(&id) else {
            continue;
        };
        if let (Some(repo_id), Some(digest)) = (build.repo_id, &build.image_digest) {
            roots.push(((repo_id, digest), reason));
        }
    }
    for (repo_id, digest) in &graph.pins {
        roots.push(((*repo_id, digest), KeepReason::Pinned));
    }
    roots
}

/// The kept manifest another was first reached from and whether it is that one's index child
/// (else its referrer); `None` for a root itself.
type Via<'a> = Option<(&'a Digest, bool)>;

/// Every manifest the roots keep, each with how it was reached.
type Reached<'a> = HashMap<(i64, &'a Digest), Via<'a>>;

/// The manifests `roots` keep: the roots stored, their index children and their referrers in
/// the same repository, transitively.
fn reach<'a>(graph: &'a Graph, roots: &[((i64, &'a Digest), KeepReason)]) -> Reached<'a> {
    let existing: HashMap<(i64, &Digest), &ManifestNode> = graph
        .manifests
        .iter()
        .map(|m| ((m.repo_id, &m.digest), m))
        .collect();
    let mut referrers: HashMap<(i64, &Digest), Vec<&Digest>> = HashMap::new();
    for manifest in &graph.manifests {
        if let Some(subject) = &manifest.subject {
            referrers
                .entry((manifest.repo_id, subject))
                .or_default()
                .push(&manifest.digest);
        }
    }
    let mut kept: Reached<'a> = HashMap::new();
    let mut work: Vec<((i64, &Digest), Via<'a>)> = roots
        .iter()
        .map(|(key, _)| (*key, None))
        .filter(|(key, _)| existing.contains_key(key))
        .collect();
    while let Some((key, from)) = work.pop() {
        if kept.contains_key(&key) {
            continue;
        }
        kept.insert(key, from);
        let manifest = existing[&key];
        let children = manifest.children.iter().map(|c| (c, true));
        let referring = referrers
            .get(&key)
            .into_iter()
            .flatten()
            .map(|r| (*r, false));
        for (next, child) in children.chain(referring) {
            let next = (key.0, next);
            if existing.contains_key(&next) && !kept.contains_key(&next) {
                work.push((next, Some((key.1, child))));
            }
        }
    }
    kept
}

/// Why the next collection would keep the manifest `digest` of repository `repo_id`: every
/// root that names it, else the kept manifest it comes with. Empty: the collection deletes it.
pub(crate) fn reasons(graph: &Graph, repo_id: i64, digest: &Digest) -> Vec<KeepReason> {
    let roots = roots(graph);
    let mut reasons: Vec<KeepReason> = roots
        .iter()
        .filter(|(key, _)| *key == (repo_id, digest))
        .map(|(_, reason)| reason.clone())
        .collect();
    if reasons.is_empty() {
        let kept = reach(graph, &roots);
        if let Some(Some((from, child))) = kept.get(&(repo_id, digest)) {
            let from = (*from).clone();
            reasons.push(match child {
                true => KeepReason::InIndex { index: from },
                false => KeepReason::RefersTo { subject: from },
            });
        }
    }
    reasons.dedup();
    reasons
}

/// What to delete: everything not reachable from the roots (see `gc`).
pub(crate) fn plan(graph: &Graph) -> Plan {
    let roots = roots(graph);
    let reached = reach(graph, &roots);
    let kept: HashSet<(i64, &Digest)> = reached.into_keys().collect();
    let existing: HashMap<(i64, &Digest), &ManifestNode> = graph
        .manifests
        .iter()
        .map(|m| ((m.repo_id, &m.digest), m))
        .collect();
    let mut kept_blobs: HashSet<&Digest> = HashSet::new();
    let mut kept_repo_blobs: HashSet<(i64, &Digest)> = HashSet::new();
    for &(repo_id, digest) in &kept {
        kept_blobs.insert(digest);
        for blob in &existing[&(repo_id, digest)].blobs {
            kept_blobs.insert(blob);
            kept_repo_blobs.insert((repo_id, blob));
        }
    }
    let mut plan = Plan {
        manifests: graph
            .manifests
            .iter()
            .filter(|m| !kept.contains(&(m.repo_id, &m.digest)))
            .map(|m| (m.repo_id, m.digest.clone()))
            .collect(),
        tags: graph
            .tags
            .iter()
            .filter(|t| !kept.contains(&(t.repo_id, &t.digest)))
            .map(|t| (t.repo_id, t.name.clone()))
            .collect(),
        repo_blobs: graph
            .repo_blobs
            .iter()
            .filter(|(repo_id, digest)| !kept_repo_blobs.contains(&(*repo_id, digest)))
            .cloned()
            .collect(),
        blobs: graph
            .blobs
            .iter()
            .filter(|(digest, _)| !kept_blobs.contains(digest))
            .cloned()
            .collect(),
        builds: graph
            .builds
            .iter()
            .filter(|b| b.succeeded && !b.image_removed)
            .filter(|b| match (b.repo_id, &b.image_digest) {
                (Some(repo_id), Some(digest)) => !kept.contains(&(repo_id, digest)),
                _ => false,
            })
            .map(|b| b.id)
            .collect(),
    };
    plan.manifests.sort();
    plan.tags.sort();
    plan.repo_blobs.sort();
    plan.blobs.sort();
    plan.builds.sort();
    plan
}

/// Storage of one app or namespace: bytes of the blobs its repositories' manifests use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `<ns>/<app>` for an app (a repository outside apps counts as its own), `<ns>` for a
    /// namespace.
    pub name: String,
    pub stored: u64,
    /// Of `stored`, bytes of blobs others use too.
    pub shared: u64,
    /// Of `stored`, bytes the collection deletes.
    pub reclaimable: u64,
}

/// Usage per app (`<ns>/<app>`, the repository name up to its first `.`) and per namespace,
/// apps first, each by name.
pub(crate) fn usage(graph: &Graph, plan: &Plan) -> Vec<Usage> {
    let sizes: HashMap<&Digest, u64> = graph.blobs.iter().map(|(d, s)| (d, *s)).collect();
    let deleted: HashSet<&Digest> = plan.blobs.iter().map(|(d, _)| d).collect();
    let app_of = |repo_id: i64| {
        let name = graph.repos.get(&repo_id).map(String::as_str).unwrap_or("");
        let (namespace, rest) = name.split_once('/').unwrap_or(("", name));
        let app = rest.split('.').next().unwrap_or(rest);
        (format!("{namespace}/{app}"), namespace.to_owned())
    };
    let mut by_app: BTreeMap<String, HashSet<&Digest>> = BTreeMap::new();
    let mut by_namespace: BTreeMap<String, HashSet<&Digest>> = BTreeMap::new();
    for manifest in &graph.manifests {
        let (app, namespace) = app_of(manifest.repo_id);
        let uses = std::iter::once(&manifest.digest).chain(&manifest.blobs);
        for digest in uses.filter(|d| sizes.contains_key(d)) {
            by_app.entry(app.clone()).or_default().insert(digest);
            by_namespace
                .entry(namespace.clone())
                .or_default()
                .insert(digest);
        }
    }
    let mut usages = Vec::new();
    for groups in [by_app, by_namespace] {
        let mut users: HashMap<&Digest, usize> = HashMap::new();
        for digests in groups.values() {
            for digest in digests {
                *users.entry(digest).or_default() += 1;
            }
        }
        for (name, digests) in &groups {
            let mut usage = Usage {
                name: name.clone(),
                ..Usage::default()
            };
            for digest in digests {
                let size = sizes[digest];
                usage.stored += size;
                if users[digest] > 1 {
                    usage.shared += size;
                }
                if deleted.contains(digest) {
                    usage.reclaimable += size;
                }
            }
            usages.push(usage);
        }
    }
    usages
}
