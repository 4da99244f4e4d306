//! Pure formatting: ages, durations, times, short ids, pull references and Kubernetes names.

use buildgrid_store::Build;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How long ago `then` was, at `now` (both in seconds): "just now", "5 min ago", "3 days ago".
pub fn age(now: i64, then: i64) -> String {
    let seconds = (now - then).max(0);
    match seconds {
        0..10 => "just now".to_owned(),
        10..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86400 => format!("{} h ago", seconds / 3600),
        86400..172800 => "yesterday".to_owned(),
        _ => format!("{} days ago", seconds / 86400),
    }
}

/// A duration in seconds: "42 s", "3 min 5 s", "2 h 10 min".
pub fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// How long a build ran (or has been running, at `now`); `None` before it started.
pub fn build_duration(build: &Build, now: i64) -> Option<i64> {
    let started = build.started_at?;
    Some(build.finished_at.unwrap_or(now) - started)
}

/// A time as `2026-05-01 12:34:56 UTC`.
pub fn datetime(seconds: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A time as RFC 3339, for `<time datetime>`.
pub fn iso(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The time of day of a log line, `HH:MM:SS` in UTC, from milliseconds since the epoch.
pub fn clock(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000).rem_euclid(86400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The first 7 characters of a commit id, as git abbreviates it.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// An image id as docker shows it: the first 12 hex digits of the digest.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

/// The first line of a commit message.
pub fn subject(message: &str) -> &str {
    message.lines().next().unwrap_or("").trim()
}

/// `host/repo:tag`, or `host/repo@digest` when the reference is a digest.
pub fn pull_reference(host: &str, repo: &str, reference: &str) -> String {
    let separator = if reference.contains(':') { '@' } else { ':' };
    format!("{host}/{repo}{separator}{reference}")
}

/// A token's stored scopes as people type them: `pull`, not `pull:*`.
pub fn scopes(stored: &str) -> String {
    match buildgrid_access::Scope::parse_list(stored) {
        Ok(scopes) => scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => stored.to_owned(),
    }
}

/// A choice of the timeline's status filter, with the badges it stands for.
pub fn status_choice(status: &str) -> String {
    match status {
        "running" => "running (fetching, building, storing)".into(),
        other => other.into(),
    }
}

/// What a build that has not finished is doing, as a sentence.
pub fn build_progress(state: buildgrid_store::BuildState) -> &'static str {
    use buildgrid_store::BuildState;
    match state {
        BuildState::Queued => "Waiting for a builder.",
        BuildState::Fetching => "Fetching the source.",
        BuildState::Building => "Building.",
        BuildState::Storing => "Storing the image.",
        BuildState::Succeeded => "Succeeded.",
        BuildState::Failed => "Failed.",
        BuildState::Cancelled => "Cancelled.",
        BuildState::Skipped => "Skipped.",
    }
}

/// Who or what started a build, after "by"-less labels such as "Triggered": `git push`,
/// `a GitHub webhook`, `ann on the web`, `the command line`.
pub fn build_trigger(trigger: &str) -> String {
    match trigger {
        "push" => "git push".into(),
        "web" => "the web".into(),
        "cli" => "the command line".into(),
        "api" => "the API".into(),
        "github" => "a GitHub webhook".into(),
        "gitlab" => "a GitLab webhook".into(),
        "gitea" => "a Gitea webhook".into(),
        other => match other.strip_suffix(" (web)") {
            Some(user) => format!("{user} on the web"),
            None => other.to_owned(),
        },
    }
}

/// How a deploy started, as a phrase: `by ann on the web`, `rollback by ann on the web`,
/// `automatic, after build #5`, `from the command line, build chosen`.
pub fn deploy_trigger(trigger: &str) -> String {
    if let Some(rest) = trigger.strip_prefix("rollback by ") {
        return format!("rollback by {}", build_trigger(rest));
    }
    if let Some(build) = trigger.strip_prefix("build ")
        && build.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("automatic, after build #{build}");
    }
    match trigger {
        "cli" => "from the command line".into(),
        "cli (chosen build)" => "from the command line, build chosen".into(),
        other => format!("by {}", build_trigger(other)),
    }
}

/// A Kubernetes object name (an RFC 1123 label) for an image: its repository's last part up to
/// the first dot (the app name of `<ns>/<app>.<repo>`), lowercase letters, digits and dashes.
pub fn kubernetes_name(repo: &str) -> String {
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let base = last.split('.').next().unwrap_or(last);
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-');
    if name.is_empty() {
        "app".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(actual: impl AsRef<str>, expected: &str) {
        assert_eq!(actual.as_ref(), expected);
    }

    #[test]
    fn ages_and_durations() {
        check(age(1000, 995), "just now");
        check(age(1000, 1005), "just now");
        check(age(1000, 958), "42 s ago");
        check(age(10_000, 10_000 - 5 * 60), "5 min ago");
        check(age(100_000, 100_000 - 7200), "2 h ago");
        check(age(1_000_000, 1_000_000 - 90_000), "yesterday");
        check(age(1_000_000, 1_000_000 - 3 * 86400), "3 days ago");
        check(duration(42), "42 s");
        check(duration(185), "3 min 5 s");
        check(duration(7800), "2 h 10 min");
    }

    #[test]
    fn times() {
        check(datetime(1_700_000_000), "2023-11-14 22:13:20 UTC");
        check(iso(1_700_000_000), "2023-11-14T22:13:20Z");
        check(clock(1_700_000_000_123), "22:13:20");
    }

    #[test]
    fn ids_and_references() {
        check(short_commit("0123456789abcdef"), "0123456");
        check(short_commit("abc"), "abc");
        check(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "abababababab",
        );
        check(subject("Fix the thing\n\nLonger text"), "Fix the thing");
        check(
            pull_reference("127.0.0.1:5000", "acme/hello.git-example-com", "abc123"),
            "127.0.0.1:5000/acme/hello.git-example-com:abc123",
        );
        check(
            pull_reference("reg.example.com", "acme/x", "sha256:00ff"),
            "reg.example.com/acme/x@sha256:00ff",
        );
    }

    #[test]
    fn words() {
        check(scopes("pull:* build:acme/*"), "pull build:acme/*");
        check(scopes("pull:acme"), "pull:acme");
        check(build_trigger("push"), "git push");
        check(build_trigger("ann (web)"), "ann on the web");
        check(deploy_trigger("ann (web)"), "by ann on the web");
        check(
            deploy_trigger("rollback by ann (web)"),
            "rollback by ann on the web",
        );
        check(deploy_trigger("build 12"), "automatic, after build #12");
        check(deploy_trigger("cli"), "from the command line");
        check(
            deploy_trigger("cli (chosen build)"),
            "from the command line, build chosen",
        );
    }

    #[test]
    fn kubernetes_names() {
        check(kubernetes_name("acme/hello.github-com-acme-hello"), "hello");
        check(kubernetes_name("acme/my_app.x"), "my-app");
        check(kubernetes_name("library/app"), "app");
        check(kubernetes_name("acme/__"), "app");
        check(
            kubernetes_name(&format!("a/{}", "x".repeat(80))),
            &"x".repeat(63),
        );
    }
}
