//! Guessing limits under concurrency and under attack at a name.

use std::sync::Arc;
use std::time::Duration;

use buildgrid_access::{Access, AuthError, create_user, regenerate_registry_password};
use buildgrid_store::Store;

use crate::basic;

fn access(dir: &tempfile::TempDir, limit: u32) -> (Arc<Store>, Access) {
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let access = Access::new(store.clone())
        .unwrap()
        .with_login_limit(limit, Duration::from_secs(60));
    (store, access)
}

/// How many of `outcomes` were let through to a password check, and whether every other one
/// was refused by the limit.
#[track_caller]
fn checked<T: std::fmt::Debug>(outcomes: &[Result<T, AuthError>]) -> usize {
    let mut checked = 0;
    for outcome in outcomes {
        match outcome {
            Err(AuthError::Unauthorized(_)) => checked += 1,
            Err(AuthError::TooManyAttempts { .. }) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    checked
}

#[test]
fn of_sixty_concurrent_guesses_at_most_the_limit_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, access) = access(&dir, 10);
    create_user(&store, "ann", false).unwrap();
    let (bob, _) = create_user(&store, "bob", false).unwrap();
    regenerate_registry_password(&store, &bob).unwrap();

    let access = &access;
    let web: Vec<_> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..60)
            .map(|i| {
                scope.spawn(move || access.sign_in_web("ann", &format!("guess {i}"), "10.0.0.1"))
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let web_checked = checked(&web);
    assert!((1..=10).contains(&web_checked), "{web_checked} checked");

    let header = basic("bob", "guess");
    let registry: Vec<_> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..60)
            .map(|_| scope.spawn(|| access.authenticate(Some(&header), "10.0.0.2")))
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let registry_checked = checked(&registry);
    assert!(
        (1..=10).contains(&registry_checked),
        "{registry_checked} checked"
    );
}

#[test]
fn the_right_password_from_a_fresh_client_passes_while_its_name_is_under_attack() {
    let dir = tempfile::tempdir().unwrap();
    let (store, access) = access(&dir, 3);
    let (ann, web_password) = create_user(&store, "ann", false).unwrap();
    let registry_password = regenerate_registry_password(&store, &ann).unwrap();

    // Twenty addresses guess both passwords, each until it is refused.
    for attacker in 0..20 {
        let client = format!("10.1.0.{attacker}");
        let _ = access.sign_in_web("ann", "guess", &client);
        let _ = access.authenticate(Some(&basic("ann", "guess")), &client);
    }
    let attacker = "10.1.0.7";
    assert!(matches!(
        access.sign_in_web("ann", "another guess", attacker),
        Err(AuthError::TooManyAttempts { .. })
    ));
    // An attacker that has failed is refused even the right password while the name is attacked.
    assert!(matches!(
        access.sign_in_web("ann", &web_password, attacker),
        Err(AuthError::TooManyAttempts { .. })
    ));

    // Its owner, from an address that has not failed, signs in on the web and the registry.
    let owner = "192.168.1.5";
    let user = access.sign_in_web("ann", &web_password, owner).unwrap();
    assert_eq!(user.name, "ann");
    let principal = access
        .authenticate(Some(&basic("ann", &registry_password)), owner)
        .unwrap();
    assert_eq!(principal.actor(), "ann");
    // Right passwords are not failures: the owner keeps signing in.
    for _ in 0..5 {
        access.sign_in_web("ann", &web_password, owner).unwrap();
    }

    // A fresh address gets a guess, and after failing is refused like the others.
    let newcomer = "10.2.0.1";
    assert!(matches!(
        access.sign_in_web("ann", "guess", newcomer),
        Err(AuthError::Unauthorized(_))
    ));
    assert!(matches!(
        access.sign_in_web("ann", "guess", newcomer),
        Err(AuthError::TooManyAttempts { .. })
    ));
}

#[test]
fn empty_basic_credentials_are_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let (_, access) = access(&dir, 3);
    let principal = access
        .authenticate(Some(&basic("", "")), "10.0.0.1")
        .unwrap();
    assert!(principal.is_anonymous());
    assert!(matches!(
        access.authenticate(Some(&basic("", "x")), "10.0.0.1"),
        Err(AuthError::Unauthorized(_))
    ));
}
