//! Tenants share the Docker engine: a build may use as a base or copy source only images of
//! its own namespace, of public namespaces, and of other registries. Every image reference
//! the Dockerfile makes the engine resolve is checked before the engine runs it: by its name
//! (pure, [`refusal`]) and by what the engine resolves it to ([`check`]).

use std::collections::{BTreeMap, BTreeSet};

use bollard::Docker;
use buildgrid_store::Store;

use crate::dockerfile::{ImageUse, Instruction, image_uses};
use crate::worker::{Stop, engine_error};

/// The repository prefix of the names buildgrid builds images under in the engine:
/// `buildgrid/builds/<secret hex>:<commit>`. No build may use it.
pub(crate) const BUILD_NAMES: &str = "buildgrid/builds/";

/// Who is building, and what buildgrid knows of the others.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    /// The build's own namespace.
    pub namespace: String,
    /// Namespaces buildgrid knows that are not public.
    pub private: BTreeSet<String>,
    /// The addresses (`host:port`) of buildgrid's own registry.
    pub registry_hosts: Vec<String>,
}

/// Why a reference may not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An image id, an id prefix or `sha256:<hex>`: the engine resolves it to any local image.
    ImageId,
    /// An image of another, private namespace.
    Namespace(String),
    /// One of the names buildgrid builds images under in the engine.
    BuildName,
    /// Not a reference this check can read.
    Invalid,
}

impl Refusal {
    fn explain(&self, own: &str) -> String {
        let allowed = format!(
            "a build of namespace {own} may use images of {own}, of public namespaces and of \
             other registries"
        );
        match self {
            Refusal::ImageId => format!(
                "names an image by id, which could be any tenant's: name the image instead \
                 ({allowed}), or an earlier stage"
            ),
            Refusal::Namespace(other) => {
                format!("names an image of namespace {other}, which is not public: {allowed}")
            }
            Refusal::BuildName => {
                format!("names an image buildgrid built in the engine: {allowed}")
            }
            Refusal::Invalid => format!(
                "is not an image reference (<name>[:<tag>][@<digest>]) buildgrid can check: \
                 {allowed}"
            ),
        }
    }
}

/// Why the name `reference` may not be used by a build of `tenancy.namespace`, if it may not.
pub fn refusal(reference: &str, tenancy: &Tenancy) -> Option<Refusal> {
    if reference == "scratch" {
        return None;
    }
    if is_image_id(reference) {
        return Some(Refusal::ImageId);
    }
    let Some((domain, path)) = parse_name(reference) else {
        return Some(Refusal::Invalid);
    };
    let components: Vec<&str> = path.split('/').collect();
    let namespace = match domain {
        // Docker Hub, which the engine looks up among its local names first.
        None => {
            if path.starts_with(BUILD_NAMES) {
                return Some(Refusal::BuildName);
            }
            (components.len() > 1).then_some(components[0])
        }
        Some(host) if is_own_registry(host, &tenancy.registry_hosts) => Some(components[0]),
        Some(_) => None,
    };
    match namespace {
        Some(ns) if ns != tenancy.namespace && tenancy.private.contains(ns) => {
            Some(Refusal::Namespace(ns.to_owned()))
        }
        _ => None,
    }
}

/// `4b`, a full 64-hex id, or `sha256:<hex>` (the engine also matches that as an id prefix).
fn is_image_id(reference: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let lower = reference.to_ascii_lowercase();
    (hex(reference) && reference.len() <= 64)
        || ["sha256:", "sha384:", "sha512:"]
            .iter()
            .any(|alg| lower.starts_with(alg))
}

/// `(domain, path)` of a reference, the way the engine splits it: the first component is a
/// registry when it has a `.` or `:`, is `localhost`, or has capitals; `docker.io` and
/// `index.docker.io` are Docker Hub (`None`), as is no registry at all.
fn parse_name(reference: &str) -> Option<(Option<&str>, &str)> {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (alg, hex) = digest.split_once(':')?;
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b));
        if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].find(':') {
        Some(colon) => {
            let tag = &name[last_slash + colon + 1..];
            let tag_ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !tag_ok {
                return None;
            }
            &name[..last_slash + colon]
        }
        None => name,
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            if !is_domain(first) {
                return None;
            }
            (Some(first), rest)
        }
        _ => (None, name),
    };
    if !path.split('/').all(is_path_component) {
        return None;
    }
    match domain {
        Some(host) if host == "docker.io" || host == "index.docker.io" => Some((None, path)),
        domain => Some((domain, path)),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(part: &str) -> bool {
    buildgrid_core::RepoName::parse(part).is_ok() && !part.contains('/')
}

/// `host[:port]`, the host a DNS name, an IPv4 address or `[IPv6]`.
fn is_domain(domain: &str) -> bool {
    let (host, port) = split_host_port(domain);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'))
    } else {
        host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    port_ok && host_ok
}

fn split_host_port(domain: &str) -> (&str, Option<&str>) {
    let host_end = if domain.starts_with('[') {
        domain.find(']').map_or(domain.len(), |i| i + 1)
    } else {
        domain.find(':').unwrap_or(domain.len())
    };
    let (host, rest) = domain.split_at(host_end);
    (host, rest.strip_prefix(':'))
}

/// Whether `domain` is one of buildgrid's registry addresses, or the same port on another
/// name of the loopback interface.
fn is_own_registry(domain: &str, registry_hosts: &[String]) -> bool {
    let loopback = |host: &str| {
        let host = host.to_ascii_lowercase();
        host == "localhost"
            || host == "[::1]"
            || host == "0.0.0.0"
            || host.strip_prefix("127.").is_some_and(|rest| {
                rest.split('.').count() == 3 && rest.split('.').all(|o| o.parse::<u8>().is_ok())
            })
    };
    let (host, port) = split_host_port(domain);
    registry_hosts.iter().any(|own| {
        let (own_host, own_port) = split_host_port(own);
        port == own_port
            && (host.eq_ignore_ascii_case(own_host) || (loopback(host) && loopback(own_host)))
    })
}

/// The build's tenancy, from the store.
pub(crate) fn tenancy(
    store: &Store,
    namespace: &str,
    registry_hosts: Vec<String>,
) -> Result<Tenancy, Stop> {
    let private = store
        .db
        .known_namespaces()?
        .into_iter()
        .filter(|(_, public)| !public)
        .map(|(name, _)| name)
        .collect();
    Ok(Tenancy {
        namespace: namespace.to_owned(),
        private,
        registry_hosts,
    })
}

/// Checks every image `dockerfile` makes the engine resolve, by name and by what the engine
/// resolves it to; the refusals, one line each (empty when the build may go on).
pub(crate) async fn check(
    docker: &Docker,
    store: &Store,
    tenancy: &Tenancy,
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<Vec<String>, Stop> {
    let uses = image_uses(dockerfile, build_args).map_err(|e| Stop::Failed(e.to_string()))?;
    let mut refused = Vec::new();
    for used in &uses {
        if let Some(refusal) = refusal(&used.reference, tenancy) {
            refused.push(line(used, &refusal.explain(&tenancy.namespace)));
            continue;
        }
        if let Some(reason) = engine_refusal(docker, store, tenancy, used, build_args).await? {
            refused.push(line(used, &reason));
        }
    }
    Ok(refused)
}

fn line(used: &ImageUse, reason: &str) -> String {
    let note = match used.instruction {
        Instruction::MountFrom => " (and RUN --mount needs BuildKit, which buildgrid does not use)",
        _ => "",
    };
    format!("refused: {used} {reason}{note}")
}

/// What the engine would resolve `used` to, if it is an image buildgrid stored only for other
/// private namespaces (an image a deploy pulled, say), or one whose ONBUILD triggers name
/// such an image.
async fn engine_refusal(
    docker: &Docker,
    store: &Store,
    tenancy: &Tenancy,
    used: &ImageUse,
    build_args: &BTreeMap<String, String>,
) -> Result<Option<String>, Stop> {
    let image = match docker.inspect_image(&used.reference).await {
        Ok(image) => image,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(error) => {
            return Err(Stop::Failed(format!(
                "cannot check {used} with the Docker engine: {}",
                engine_error(&error)
            )));
        }
    };
    if let Some(id) = image
        .id
        .as_deref()
        .and_then(|id| buildgrid_core::Digest::parse(id).ok())
    {
        let owners = store.db.blob_namespaces(&id)?;
        let foreign = |ns: &String| *ns != tenancy.namespace && tenancy.private.contains(ns);
        if let Some(other) = owners.iter().find(|ns| foreign(ns))
            && owners.iter().all(foreign)
        {
            return Ok(Some(format!(
                "resolves in the Docker engine to an image of namespace {other}, which is not \
                 public: a build of namespace {own} may use images of {own}, of public \
                 namespaces and of other registries",
                own = tenancy.namespace
            )));
        }
    }
    let triggers = image
        .config
        .and_then(|c| c.on_build)
        .unwrap_or_default()
        .join("\n");
    for trigger in image_uses(&triggers, build_args).unwrap_or_default() {
        if let Some(refusal) = refusal(&trigger.reference, tenancy) {
            return Ok(Some(format!(
                "has an ONBUILD trigger that {}",
                refusal.explain(&tenancy.namespace)
            )));
        }
    }
    Ok(None)
}

/// The name the engine builds `repo`'s image under: `buildgrid/builds/<hex>:<commit>`, the
/// hex a hash of the repository and a key kept in the store, so no tenant can guess another's
/// (and [`refusal`] refuses the prefix anyway). The image keeps it after the build, so the
/// engine's build cache keeps its last step.
pub(crate) fn build_name(store: &Store, repo: &str, tag: &str) -> Result<String, Stop> {
    use sha2::Digest as _;
    let key = store.db.setting_or_insert("engine_build_name_key", || {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        hex::encode(bytes)
    })?;
    let hash = sha2::Sha256::digest(format!("{key}\n{repo}"));
    Ok(format!("{BUILD_NAMES}{}:{tag}", &hex::encode(hash)[..32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenancy() -> Tenancy {
        Tenancy {
            namespace: "bee".into(),
            private: ["acme", "bee", "library"].map(String::from).into(),
            registry_hosts: vec!["127.0.0.1:5000".into(), "registry.example.com".into()],
        }
    }

    /// `expected`: `ok`, `id`, `ns <name>`, `build name` or `invalid`.
    #[track_caller]
    fn check(reference: &str, expected: &str) {
        let got = match refusal(reference, &tenancy()) {
            None => "ok".to_owned(),
            Some(Refusal::ImageId) => "id".to_owned(),
            Some(Refusal::Namespace(ns)) => format!("ns {ns}"),
            Some(Refusal::BuildName) => "build name".to_owned(),
            Some(Refusal::Invalid) => "invalid".to_owned(),
        };
        assert_eq!(got, expected, "{reference}");
    }

    #[test]
    fn docker_hub_and_other_registries() {
        check("scratch", "ok");
        check("busybox", "ok");
        check("busybox:1.36", "ok");
        check("library/alpine", "ns library");
        check("alpine", "ok");
        check("docker.io/alpine", "ok");
        check("someone/tool:2", "ok");
        check("gcr.io/distroless/static", "ok");
        check("ghcr.io/acme/x.y:1", "ok");
        check("localhost:5001/acme/x.y:1", "ok");
        check("registry.example.com:443/acme/x.y:1", "ok");
        check(
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ok",
        );
    }

    #[test]
    fn names_of_other_private_namespaces() {
        check("acme/shop.github-com-acme-shop:0123", "ns acme");
        check("acme/anything", "ns acme");
        check("docker.io/acme/shop.x:1", "ns acme");
        check("index.docker.io/acme/shop.x:1", "ns acme");
        check(
            "acme/shop.x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ns acme",
        );
        // buildgrid's own registry, under any loopback name, is a local name.
        check("127.0.0.1:5000/acme/shop.x:1", "ns acme");
        check("localhost:5000/acme/shop.x:1", "ns acme");
        check("127.0.0.2:5000/acme/shop.x:1", "ns acme");
        check("[::1]:5000/acme/shop.x:1", "ns acme");
        check("registry.example.com/acme/shop.x:1", "ns acme");
        check("REGISTRY.example.com/acme/shop.x:1", "ns acme");
        // Its own namespace, public ones and unknown ones are fine.
        check("bee/app.x:1", "ok");
        check("127.0.0.1:5000/bee/app.x:1", "ok");
        check("pub/app.x:1", "ok");
        check("127.0.0.1:5000/pub/app.x:1", "ok");
    }

    #[test]
    fn image_ids_and_build_names() {
        check("4b", "id");
        check("0", "id");
        check("cafe", "id");
        check(&"ab".repeat(32), "id");
        check("sha256:4b", "id");
        check(
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "id",
        );
        check("SHA256:4b", "id");
        check("4b:latest", "ok");
        check("buildgrid/builds/0123abcd:0123", "build name");
        check("docker.io/buildgrid/builds/0123abcd:0123", "build name");
        check("buildgrid/tool", "ok");
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        check("", "invalid");
        // A capital makes the first component a registry host, as the engine reads it.
        check("Acme/x", "ok");
        check("$X", "invalid");
        check("busybox:", "invalid");
        check("busybox@sha256:4b", "invalid");
        check("a b", "invalid");
        check("acme//x", "invalid");
    }
}
