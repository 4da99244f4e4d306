//! The URL grammar of the distribution API, as a pure function.

/// What a path under `/v2` asks for. Names, references and digests are still raw text: the
/// handlers validate them, so that each answers with its own OCI error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    /// `/blobs/uploads/…`: writes only.
    Upload {
        name: String,
    },
    Referrers {
        name: String,
        digest: String,
    },
    Unknown,
}

impl Route {
    /// Parses the path after `/v2`, e.g. `/library/busybox/manifests/latest`.
    pub fn parse(path: &str) -> Route {
        let Some(rest) = path.strip_prefix('/') else {
            return if path.is_empty() {
                Route::Base
            } else {
                Route::Unknown
            };
        };
        if rest.is_empty() {
            return Route::Base;
        }
        if rest == "_catalog" {
            return Route::Catalog;
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Route::Tags { name: name.into() };
        }
        let markers = [("/manifests/", 0), ("/blobs/", 1), ("/referrers/", 2)];
        let found = |pick_last: bool| {
            markers
                .iter()
                .filter_map(|(marker, kind)| {
                    let at = if pick_last {
                        rest.rfind(marker)
                    } else {
                        rest.find(marker)
                    };
                    at.map(|at| (at, *marker, *kind))
                })
                .max_by_key(|(at, _, _)| {
                    if pick_last {
                        *at as isize
                    } else {
                        -(*at as isize)
                    }
                })
        };
        // The last marker splits a well-formed path; when what follows it holds a `/`, the
        // first marker does, so that e.g. `blobs/sha256:../../x` gets a digest error.
        let Some(mut best) = found(true) else {
            return Route::Unknown;
        };
        if rest[best.0 + best.1.len()..].contains('/') {
            best = found(false).expect("a marker exists");
        }
        let (at, marker, kind) = best;
        let name = rest[..at].to_owned();
        let last = rest[at + marker.len()..].to_owned();
        if name.is_empty() || last.is_empty() {
            return Route::Unknown;
        }
        let is_upload = last == "uploads" || last.starts_with("uploads/");
        match kind {
            1 if is_upload => Route::Upload { name },
            0 => Route::Manifest {
                name,
                reference: last,
            },
            1 => Route::Blob { name, digest: last },
            _ => Route::Referrers { name, digest: last },
        }
    }

    /// The repository name the route concerns, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Upload { name }
            | Route::Referrers { name, .. } => Some(name),
            Route::Base | Route::Catalog | Route::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[track_caller]
    fn check(path: &str, expected: Route) {
        assert_eq!(Route::parse(path), expected, "{path}");
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn routes() {
        check("", Route::Base);
        check("/", Route::Base);
        check("/_catalog", Route::Catalog);
        check("/a/b/tags/list", Route::Tags { name: s("a/b") });
        check(
            "/acme/shop.github-com-acme-shop/manifests/0123",
            Route::Manifest {
                name: s("acme/shop.github-com-acme-shop"),
                reference: s("0123"),
            },
        );
        check(
            "/manifests/manifests/latest",
            Route::Manifest {
                name: s("manifests"),
                reference: s("latest"),
            },
        );
        check(
            "/a/blobs/sha256:00",
            Route::Blob {
                name: s("a"),
                digest: s("sha256:00"),
            },
        );
        check("/a/blobs/uploads/", Route::Upload { name: s("a") });
        check("/a/blobs/uploads", Route::Upload { name: s("a") });
        check(
            "/mirror/blobs/uploads/manifests/latest",
            Route::Manifest {
                name: s("mirror/blobs/uploads"),
                reference: s("latest"),
            },
        );
        check("/a/blobs/uploads/1234-5678", Route::Upload { name: s("a") });
        check(
            "/a/blobs/uploads/?mount=sha256:00&from=b",
            Route::Upload { name: s("a") },
        );
        check(
            "/a/referrers/sha256:00",
            Route::Referrers {
                name: s("a"),
                digest: s("sha256:00"),
            },
        );
        check("/a/manifests/", Route::Unknown);
        check(
            "/a/manifests/x/y",
            Route::Manifest {
                name: s("a"),
                reference: s("x/y"),
            },
        );
        check(
            "/a/blobs/sha256:../../etc/passwd",
            Route::Blob {
                name: s("a"),
                digest: s("sha256:../../etc/passwd"),
            },
        );
        check("/a", Route::Unknown);
        check("/a/tags", Route::Unknown);
        check("/manifests/latest", Route::Unknown);
        check(
            "/../../etc/manifests/latest",
            Route::Manifest {
                name: s("../../etc"),
                reference: s("latest"),
            },
        );
    }
}
