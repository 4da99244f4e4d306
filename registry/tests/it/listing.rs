use serde_json::{Value, json};

use crate::support::{TestApp, error, oci_error, spawn_app};

/// A page of a list: its JSON body and its `Link` header.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    status: u16,
    body: Value,
    link: Option<String>,
}

fn page(body: Value, next: Option<&str>) -> Page {
    Page {
        status: 200,
        body,
        link: next.map(|uri| format!("<{uri}>; rel=\"next\"")),
    }
}

fn tags(list: &[&str], next: Option<&str>) -> Page {
    page(json!({"name": "library/app", "tags": list}), next)
}

fn repositories(list: &[&str], next: Option<&str>) -> Page {
    page(json!({"repositories": list}), next)
}

#[track_caller]
fn check(app: &TestApp, uri: &str, expected: Page) {
    let response = app.get(uri);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{uri}"
    );
    let actual = Page {
        status: response.status.as_u16(),
        body: response.json(),
        link: response.header("link").map(str::to_owned),
    };
    assert_eq!(actual, expected, "{uri}");
}

/// The entries of every page, following `Link` from `uri` on.
fn walk(app: &TestApp, uri: &str, field: &str) -> (Vec<String>, usize) {
    let mut entries = Vec::new();
    let mut next = Some(uri.to_owned());
    let mut pages = 0;
    while let Some(uri) = next {
        let response = app.get(&uri);
        assert_eq!(response.status.as_u16(), 200, "{uri}");
        let body = response.json();
        for entry in body[field].as_array().unwrap() {
            entries.push(entry.as_str().unwrap().to_owned());
        }
        pages += 1;
        assert!(pages < 20, "the pages never end");
        next = response.header("link").map(|link| {
            let (target, rel) = link.split_once("; ").unwrap();
            assert_eq!(rel, "rel=\"next\"");
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        });
    }
    (entries, pages)
}

const ALL_TAGS: [&str; 7] = ["1.0", "1.1", "10", "2.0", "A", "latest", "v1"];

#[test]
fn tags_in_lexical_order_with_pagination() {
    let app = spawn_app();
    let base = "/v2/library/app/tags/list";
    let next = |n: usize, last: &str| format!("{base}?n={n}&last={last}");
    check(&app, base, tags(&ALL_TAGS, None));
    check(
        &app,
        &format!("{base}?n=2"),
        tags(&["1.0", "1.1"], Some(&next(2, "1.1"))),
    );
    check(
        &app,
        &next(2, "1.1"),
        tags(&["10", "2.0"], Some(&next(2, "2.0"))),
    );
    check(
        &app,
        &next(2, "2.0"),
        tags(&["A", "latest"], Some(&next(2, "latest"))),
    );
    check(&app, &next(2, "latest"), tags(&["v1"], None));
    // A page that ends exactly at the last tag has no next page.
    check(&app, &next(3, "A"), tags(&["latest", "v1"], None));
    check(&app, &format!("{base}?n=7"), tags(&ALL_TAGS, None));
    check(
        &app,
        &format!("{base}?n=6"),
        tags(&ALL_TAGS[..6], Some(&next(6, "latest"))),
    );
    check(
        &app,
        &format!("{base}?last=2.0"),
        tags(&["A", "latest", "v1"], None),
    );
    // `last` need not be a tag.
    check(
        &app,
        &format!("{base}?last=1.05"),
        tags(&["1.1", "10", "2.0", "A", "latest", "v1"], None),
    );
    check(&app, &format!("{base}?last=v1"), tags(&[], None));
    check(&app, &format!("{base}?last=zzz"), tags(&[], None));
    check(&app, &format!("{base}?n=0"), tags(&[], None));
    check(&app, &format!("{base}?n=5000"), tags(&ALL_TAGS, None));
    check(
        &app,
        "/v2/other/tool/tags/list",
        page(json!({"name": "other/tool", "tags": ["latest"]}), None),
    );

    for n in 1..=8 {
        let (entries, pages) = walk(&app, &format!("{base}?n={n}"), "tags");
        assert_eq!(entries, ALL_TAGS, "n={n}");
        assert_eq!(pages, ALL_TAGS.len().div_ceil(n).max(1), "n={n}");
    }
}

#[test]
fn catalog_with_pagination() {
    let app = spawn_app();
    let all = ["acme/sbom", "library/app", "other/tool"];
    check(&app, "/v2/_catalog", repositories(&all, None));
    check(
        &app,
        "/v2/_catalog?n=2",
        repositories(&all[..2], Some("/v2/_catalog?n=2&last=library/app")),
    );
    check(
        &app,
        "/v2/_catalog?n=2&last=library/app",
        repositories(&all[2..], None),
    );
    check(&app, "/v2/_catalog?n=3", repositories(&all, None));
    check(
        &app,
        "/v2/_catalog?last=acme/sbom",
        repositories(&all[1..], None),
    );
    check(
        &app,
        "/v2/_catalog?last=other/tool",
        repositories(&[], None),
    );
    check(&app, "/v2/_catalog?n=0", repositories(&[], None));
    for n in 1..=4 {
        let (entries, _) = walk(&app, &format!("/v2/_catalog?n={n}"), "repositories");
        assert_eq!(entries, all, "n={n}");
    }
}

#[test]
fn bad_page_sizes_and_unknown_repositories() {
    let app = spawn_app();
    let cases = [
        (
            "/v2/library/app/tags/list?n=abc",
            error(400, "PAGINATION_NUMBER_INVALID"),
        ),
        (
            "/v2/library/app/tags/list?n=-1",
            error(400, "PAGINATION_NUMBER_INVALID"),
        ),
        (
            "/v2/library/app/tags/list?n=1.5",
            error(400, "PAGINATION_NUMBER_INVALID"),
        ),
        (
            "/v2/_catalog?n=abc",
            error(400, "PAGINATION_NUMBER_INVALID"),
        ),
        ("/v2/_catalog?n=-2", error(400, "PAGINATION_NUMBER_INVALID")),
        ("/v2/nobody/nothing/tags/list", error(404, "NAME_UNKNOWN")),
        (
            "/v2/nobody/nothing/tags/list?n=1",
            error(404, "NAME_UNKNOWN"),
        ),
    ];
    for (uri, expected) in cases {
        let response = app.get(uri);
        let (answer, message) = oci_error(&response);
        assert_eq!(answer, expected, "{uri}");
        if expected.code == "PAGINATION_NUMBER_INVALID" {
            assert!(
                message.starts_with("n must be a whole number of entries"),
                "{uri}: {message}"
            );
        } else {
            assert_eq!(
                message,
                "repository nobody/nothing is not known to this registry"
            );
        }
    }
}
