//! Token scopes: what a token may do, at most. A token never does more than its user may.

use std::fmt;

use buildgrid_core::{AppRef, RepoName};

/// What a scope reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Everything the token's user may reach.
    All,
    Namespace(String),
    App(AppRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Pull images.
    Pull(Target),
    /// Push code and start builds.
    Build(Target),
    /// Everything the user may do, administration included.
    Admin,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid scope {0:?}: use `pull`, `pull:<namespace>`, `build:<namespace>/<app>`, `build:<namespace>/*` or `admin`"
)]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let error = || ScopeError(text.chars().take(100).collect());
        let (kind, target) = match text.split_once(':') {
            Some((kind, target)) => (kind, Some(target)),
            None => (text, None),
        };
        let namespace = |name: &str| match RepoName::parse(name) {
            Ok(repo) if !name.contains('/') => Ok(Target::Namespace(repo.as_str().to_owned())),
            _ => Err(error()),
        };
        match (kind, target) {
            ("admin", None) => Ok(Scope::Admin),
            ("pull", None | Some("*")) => Ok(Scope::Pull(Target::All)),
            ("pull", Some(name)) => Ok(Scope::Pull(namespace(name)?)),
            ("build", None | Some("*")) => Ok(Scope::Build(Target::All)),
            ("build", Some(name)) => match name.strip_suffix("/*") {
                Some(ns) => Ok(Scope::Build(namespace(ns)?)),
                None => AppRef::parse(name)
                    .map(|app| Scope::Build(Target::App(app)))
                    .map_err(|_| error()),
            },
            _ => Err(error()),
        }
    }

    /// Parses a stored list: scopes separated by spaces or commas.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, ScopeError> {
        text.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(Scope::parse)
            .collect()
    }

    pub fn allows_pull(&self, namespace: &str) -> bool {
        match self {
            Scope::Admin | Scope::Pull(Target::All) => true,
            Scope::Pull(Target::Namespace(ns)) => ns == namespace,
            _ => false,
        }
    }

    pub fn allows_build(&self, app: &AppRef) -> bool {
        match self {
            Scope::Admin | Scope::Build(Target::All) => true,
            Scope::Build(Target::Namespace(ns)) => ns == app.namespace(),
            Scope::Build(Target::App(one)) => one == app,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, target) = match self {
            Scope::Admin => return f.write_str("admin"),
            Scope::Pull(target) => ("pull", target),
            Scope::Build(target) => ("build", target),
        };
        match target {
            // `pull` and `build` as people type them; `pull:*` still parses.
            Target::All => f.write_str(kind),
            Target::Namespace(ns) if kind == "build" => write!(f, "{kind}:{ns}/*"),
            Target::Namespace(ns) => write!(f, "{kind}:{ns}"),
            Target::App(app) => write!(f, "{kind}:{app}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: &str) {
        let actual = match Scope::parse(text) {
            Ok(scope) => scope.to_string(),
            Err(error) => format!("error: {error}"),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn parses_and_prints_scopes() {
        check("admin", "admin");
        check("pull", "pull");
        check("pull:*", "pull");
        check("pull:acme", "pull:acme");
        check("build", "build");
        check("build:acme/shop", "build:acme/shop");
        check("build:acme/*", "build:acme/*");
        check(
            "push:acme",
            "error: invalid scope \"push:acme\": use `pull`, `pull:<namespace>`, `build:<namespace>/<app>`, `build:<namespace>/*` or `admin`",
        );
        assert!(Scope::parse("pull:Acme").is_err());
        assert!(Scope::parse("pull:acme/shop").is_err());
        assert!(Scope::parse("admin:x").is_err());
        assert!(Scope::parse("build:acme").is_err());
    }

    #[test]
    fn scopes_reach_only_their_target() {
        let shop = AppRef::parse("acme/shop").unwrap();
        let other = AppRef::parse("beta/shop").unwrap();
        let pull = Scope::parse("pull:acme").unwrap();
        assert!(pull.allows_pull("acme") && !pull.allows_pull("beta"));
        assert!(!pull.allows_build(&shop));
        let build = Scope::parse("build:acme/shop").unwrap();
        assert!(build.allows_build(&shop) && !build.allows_build(&other));
        assert!(!build.allows_pull("acme"));
        assert!(Scope::Admin.allows_pull("x") && Scope::Admin.allows_build(&other));
        assert_eq!(
            Scope::parse_list("pull:acme, build:acme/*").unwrap().len(),
            2
        );
    }
}
