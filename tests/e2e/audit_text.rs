//! Text from requests reaches the operator's terminal escaped: a registry sign-in whose user name
//! holds a newline and an escape sequence shows in `buildgrid audit` as one visible entry.

use std::time::{Duration, Instant};

use crate::support::Buildgrid;

#[test]
fn a_user_name_with_control_characters_cannot_forge_an_audit_entry() {
    let buildgrid = Buildgrid::spawn();
    // Basic credentials end the user name at the first colon.
    let forged = "evil\n2026-01-01 0000 UTC\tadmin\tuser created\tforged\x1b[31m";
    let refused = reqwest::blocking::Client::new()
        .get(buildgrid.url("/v2/"))
        .basic_auth(forged, Some("wrong password"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Refused sign-ins are written to the audit log within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let audit = loop {
        let output = buildgrid.cli(&["audit"]);
        assert!(output.status.success());
        if output.stdout.windows(15).any(|w| w == b"sign-in refused") {
            break output.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "no refused sign-in in the audit log:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        !audit.contains(&0x1b),
        "an escape byte reached the terminal"
    );
    let audit = String::from_utf8(audit).unwrap();
    let entry = audit
        .lines()
        .find(|line| line.contains("sign-in refused"))
        .unwrap();
    assert!(
        entry.contains(
            "\tevil\\n2026-01-01 0000 UTC\\tadmin\\tuser created\\tforged\\x1b[31m\tsign-in refused\tregistry\t127.0.0.1"
        ),
        "{entry}"
    );
    assert!(
        !audit.lines().any(|line| line.starts_with("2026-01-01")),
        "a forged entry:\n{audit}"
    );
}
