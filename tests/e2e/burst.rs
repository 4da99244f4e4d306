//! A burst of build triggers: the concurrency limit holds, and every build runs to its end.

use serde_json::{Value, json};

use crate::fixtures::{Source, create_app, ensure_base_image, wait_for_build};
use crate::support::Buildgrid;

/// The most intervals that overlap at one instant.
fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // An end and a start at the same millisecond do not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn twenty_triggers_at_once_run_two_builds_at_a_time() {
    ensure_base_image();
    let buildgrid = Buildgrid::spawn();
    buildgrid.make_public("acme");
    buildgrid.cli_ok(&["namespace", "publish-logs", "acme", "on"]);
    let source = Source::example();
    source.write("index.html", "<p>hello from the burst test</p>\n");
    source.commit("a page of its own");
    let (_upstream, url) = source.bare_clone();
    create_app(&buildgrid, "acme/burst", &url);
    let token = buildgrid.token();

    // Twenty forced builds of one commit, triggered all at once: none supersedes another.
    let triggers: Vec<_> = (0..20)
        .map(|_| {
            let (url, token) = (buildgrid.url("/api/apps/acme/burst/builds"), token.clone());
            std::thread::spawn(move || -> Value {
                reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({ "ref": "main", "force": true }))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap()
            })
        })
        .collect();
    let ids: Vec<i64> = triggers
        .into_iter()
        .map(|t| {
            let queued = t.join().unwrap();
            queued["id"].as_i64().unwrap_or_else(|| panic!("{queued}"))
        })
        .collect();

    // Each build runs from its first log line to its last; the line that names the request a
    // build was queued by is written when it is queued, before it runs.
    let mut intervals = Vec::new();
    for &id in &ids {
        let build = wait_for_build(&buildgrid, id);
        let log: Value = reqwest::blocking::get(buildgrid.url(&format!("/api/builds/{id}/log")))
            .unwrap()
            .json()
            .unwrap();
        let lines = log["lines"].as_array().unwrap();
        assert_eq!(build["state"], "succeeded", "build {id}: {log}");
        let at = |line: &Value| line["at_ms"].as_i64().unwrap();
        let first = lines
            .iter()
            .find(|line| {
                !line["line"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("requested by request")
            })
            .unwrap_or_else(|| panic!("build {id} logged nothing: {log}"));
        intervals.push((at(first), at(lines.last().unwrap())));
    }
    assert_eq!(
        most_at_once(&intervals),
        2,
        "builds ran at once beyond the default limit of 2, or never side by side: {intervals:?}"
    );
}
