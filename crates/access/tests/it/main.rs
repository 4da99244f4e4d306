//! Access rules against a real store.

mod limits;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use buildgrid_access::{Access, AuthError, Principal, Scope, bootstrap, create_token, create_user};
use buildgrid_core::{AppRef, RepoName};
use buildgrid_store::Store;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    access: Access,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let access = Access::new(store.clone())
        .unwrap()
        .with_login_limit(3, Duration::from_secs(60));
    Fixture {
        _dir: dir,
        store,
        access,
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn app(name: &str) -> AppRef {
    AppRef::parse(name).unwrap()
}

impl Fixture {
    fn login(&self, header: &str) -> Result<Principal, AuthError> {
        self.access.authenticate(Some(header), "127.0.0.1")
    }

    fn member(&self, name: &str, namespace: &str) -> (String, String) {
        let (user, _) = create_user(&self.store, name, false).unwrap();
        self.store.db.add_member(namespace, user.id).unwrap();
        let password = buildgrid_access::regenerate_registry_password(&self.store, &user).unwrap();
        (name.to_owned(), password)
    }

    fn token(&self, user: &str, scopes: &str, expires_at: Option<i64>) -> String {
        let user = buildgrid_access::user(&self.store, user).unwrap();
        let scopes = Scope::parse_list(scopes).unwrap();
        create_token(&self.store, &user, "t", &scopes, expires_at)
            .unwrap()
            .1
    }
}

#[test]
fn first_start_makes_one_admin_and_one_token() {
    let f = fixture();
    let made = bootstrap(&f.store).unwrap();
    let (name, password) = made.user.unwrap();
    assert_eq!(name, "admin");
    let admin = f.access.sign_in_web("admin", &password, "c").unwrap();
    assert!(admin.admin);
    let token = made.token.unwrap();
    let principal = f.login(&format!("Bearer {token}")).unwrap();
    assert!(f.access.is_admin(&principal));
    let again = bootstrap(&f.store).unwrap();
    assert!(again.user.is_none() && again.token.is_none());
}

#[test]
fn members_pull_their_namespace_only_and_public_is_for_everyone() {
    let f = fixture();
    let (ann, password) = f.member("ann", "acme");
    f.store.db.ensure_namespace("beta").unwrap();
    f.store.db.set_namespace_public("open", true).unwrap();
    let principal = f.login(&basic(&ann, &password)).unwrap();
    assert!(f.access.may_pull(&principal, &repo("acme/shop")).unwrap());
    assert!(!f.access.may_pull(&principal, &repo("beta/shop")).unwrap());
    assert!(f.access.may_pull(&principal, &repo("open/x")).unwrap());
    assert!(f.access.may_build(&principal, &app("acme/shop")).unwrap());
    assert!(!f.access.may_build(&principal, &app("beta/shop")).unwrap());
    assert!(!f.access.is_admin(&principal));
    let anonymous = Principal::anonymous();
    assert!(f.access.may_pull(&anonymous, &repo("open/x")).unwrap());
    assert!(!f.access.may_pull(&anonymous, &repo("acme/shop")).unwrap());
    assert!(!f.access.may_build(&anonymous, &app("open/x")).unwrap());
}

#[test]
fn the_web_password_is_not_a_registry_password() {
    let f = fixture();
    let (user, web_password) = create_user(&f.store, "ann", false).unwrap();
    assert!(f.login(&basic("ann", &web_password)).is_err());
    let registry = buildgrid_access::regenerate_registry_password(&f.store, &user).unwrap();
    assert!(f.login(&basic("ann", &registry)).is_ok());
    assert!(f.access.sign_in_web("ann", &registry, "c").is_err());
    assert!(f.access.sign_in_web("ann", &web_password, "c").is_ok());
}

#[test]
fn a_regenerated_registry_password_replaces_the_old_at_once() {
    let f = fixture();
    let (ann, old) = f.member("ann", "acme");
    f.login(&basic(&ann, &old)).unwrap();
    let user = buildgrid_access::user(&f.store, &ann).unwrap();
    let new = buildgrid_access::regenerate_registry_password(&f.store, &user).unwrap();
    assert!(matches!(
        f.login(&basic(&ann, &old)),
        Err(AuthError::Unauthorized(_))
    ));
    f.login(&basic(&ann, &new)).unwrap();
}

#[test]
fn tokens_do_no_more_than_their_scopes_and_their_user() {
    let f = fixture();
    f.member("ann", "acme");
    f.store.db.ensure_namespace("beta").unwrap();
    let read_only = f
        .login(&format!("Bearer {}", f.token("ann", "pull:acme", None)))
        .unwrap();
    assert!(f.access.may_pull(&read_only, &repo("acme/shop")).unwrap());
    assert!(!f.access.may_build(&read_only, &app("acme/shop")).unwrap());
    // `pull` on everything still reaches only what ann may see.
    let all = f.login(&basic("x", &f.token("ann", "pull", None))).unwrap();
    assert!(f.access.may_pull(&all, &repo("acme/shop")).unwrap());
    assert!(!f.access.may_pull(&all, &repo("beta/shop")).unwrap());
    let build = f
        .login(&basic("x", &f.token("ann", "build:acme/shop", None)))
        .unwrap();
    assert!(f.access.may_build(&build, &app("acme/shop")).unwrap());
    assert!(!f.access.may_build(&build, &app("acme/other")).unwrap());
    assert!(!f.access.may_pull(&build, &repo("acme/shop")).unwrap());
    let user = buildgrid_access::user(&f.store, "ann").unwrap();
    let error = create_token(&f.store, &user, "t", &[Scope::Admin], None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "user ann is not an admin, so its tokens cannot have the admin scope"
    );
}

#[test]
fn logs_are_for_members_through_tokens_that_reach_their_namespace() {
    let f = fixture();
    f.member("ann", "acme");
    f.store
        .db
        .add_member("pub", buildgrid_access::user(&f.store, "ann").unwrap().id)
        .unwrap();
    f.store.db.set_namespace_public("pub", true).unwrap();
    let all = f.login(&basic("x", &f.token("ann", "pull", None))).unwrap();
    assert!(f.access.may_read_logs(&all, "pub").unwrap());
    assert!(f.access.may_read_logs(&all, "acme").unwrap());
    // A token scoped to acme reads acme's logs, not those of pub: public images alone do not
    // make logs readable.
    let acme_only = f
        .login(&basic("x", &f.token("ann", "pull:acme", None)))
        .unwrap();
    assert!(f.access.may_read_logs(&acme_only, "acme").unwrap());
    assert!(!f.access.may_read_logs(&acme_only, "pub").unwrap());
    assert!(
        !f.access
            .may_read_logs(&Principal::anonymous(), "pub")
            .unwrap()
    );
    // Once pub publishes its logs, whoever may read pub reads them.
    f.store.db.set_namespace_logs_public("pub", true).unwrap();
    assert!(f.access.may_read_logs(&acme_only, "pub").unwrap());
    assert!(
        f.access
            .may_read_logs(&Principal::anonymous(), "pub")
            .unwrap()
    );
    assert!(
        !f.access
            .may_read_logs(&Principal::anonymous(), "acme")
            .unwrap()
    );
}

#[test]
fn expired_and_revoked_tokens_are_refused_on_the_next_request() {
    let f = fixture();
    f.member("ann", "acme");
    let expired = f.token("ann", "pull", Some(1));
    assert_eq!(
        f.login(&format!("Bearer {expired}"))
            .unwrap_err()
            .to_string(),
        "the token has expired"
    );
    let live = f.token("ann", "pull", None);
    f.login(&format!("Bearer {live}")).unwrap();
    let id = f.store.db.tokens(None).unwrap()[0].id;
    assert!(f.store.db.revoke_token(id, None).unwrap());
    assert_eq!(
        f.login(&format!("Bearer {live}")).unwrap_err().to_string(),
        "the token was revoked"
    );
}

#[test]
fn bearer_tokens_grant_pull_at_most_and_die_with_their_api_token() {
    let f = fixture();
    f.member("ann", "acme");
    f.store.db.ensure_namespace("beta").unwrap();
    let api = f.token("ann", "pull", None);
    let principal = f.login(&basic("ann", &api)).unwrap();
    let (bearer, ttl) = f
        .access
        .issue_registry_token(
            &principal,
            "registry",
            &["repository:acme/shop:pull,push", "repository:beta/x:pull"],
        )
        .unwrap();
    assert_eq!(ttl, 300);
    let held = f.login(&format!("Bearer {bearer}")).unwrap();
    let claims = held.claims.clone().unwrap();
    assert_eq!(claims.access[0].actions, vec!["pull"]);
    assert!(claims.access[1].actions.is_empty());
    assert!(f.access.may_pull(&held, &repo("acme/shop")).unwrap());
    assert!(!f.access.may_pull(&held, &repo("acme/other")).unwrap());
    assert!(!f.access.may_build(&held, &app("acme/shop")).unwrap());
    let id = f.store.db.tokens(None).unwrap()[0].id;
    f.store.db.revoke_token(id, None).unwrap();
    assert!(f.login(&format!("Bearer {bearer}")).is_err());
    let forged = format!("{}x", &bearer[..bearer.len() - 1]);
    assert!(f.login(&format!("Bearer {forged}")).is_err());
}

#[test]
fn failed_sign_ins_are_limited_per_client_and_user() {
    let f = fixture();
    let (ann, password) = f.member("ann", "acme");
    for _ in 0..3 {
        assert!(matches!(
            f.login(&basic(&ann, "wrong")),
            Err(AuthError::Unauthorized(_))
        ));
    }
    // Past the limit even the right password waits, and the message says how long.
    match f.login(&basic(&ann, &password)) {
        Err(AuthError::TooManyAttempts { retry_after }) => assert!((1..=60).contains(&retry_after)),
        other => panic!("expected too many attempts, got {other:?}"),
    }
    // Another client is not blocked for another user.
    let (bob, bob_password) = f.member("bob", "acme");
    f.access
        .authenticate(Some(&basic(&bob, &bob_password)), "10.0.0.2")
        .unwrap();
}

#[test]
fn audit_entries_are_written_on_flush() {
    let f = fixture();
    let (ann, _) = f.member("ann", "acme");
    let _ = f.login(&basic(&ann, "wrong"));
    f.access.flush_audit();
    let entries = f.store.db.audit(10).unwrap();
    let refused = entries
        .iter()
        .find(|e| e.action == "sign-in refused")
        .unwrap();
    assert_eq!(refused.actor, "ann");
    assert_eq!(refused.client.as_deref(), Some("127.0.0.1"));
    assert!(entries.iter().all(|e| !e.target.contains("wrong")));
}

#[test]
fn no_secret_is_stored_in_the_clear() {
    let f = fixture();
    let made = bootstrap(&f.store).unwrap();
    let (_, web_password) = made.user.unwrap();
    let (_, registry_password) = f.member("ann", "acme");
    let token = f.token("ann", "pull", None);
    f.access.flush_audit();
    // Every file of the data directory, the WAL included.
    for entry in std::fs::read_dir(f.store.root()).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in [
            &web_password,
            &registry_password,
            &token,
            &made.token.clone().unwrap(),
        ] {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(
                !found,
                "a secret is stored in the clear in {}",
                path.display()
            );
        }
    }
}

#[test]
fn web_sessions_open_and_end() {
    let f = fixture();
    let (user, _) = create_user(&f.store, "ann", false).unwrap();
    let session = buildgrid_access::create_session(&f.store, &user).unwrap();
    let (found, csrf) = buildgrid_access::session(&f.store, &session.secret)
        .unwrap()
        .unwrap();
    assert_eq!(found.name, "ann");
    assert_eq!(csrf, session.csrf);
    assert!(
        buildgrid_access::session(&f.store, "other")
            .unwrap()
            .is_none()
    );
    buildgrid_access::end_session(&f.store, &session.secret).unwrap();
    assert!(
        buildgrid_access::session(&f.store, &session.secret)
            .unwrap()
            .is_none()
    );
}
