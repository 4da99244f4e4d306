//! The build context's errors: what is missing from the commit, and a disk that fills up.

use buildgrid_builder::context::{ContextError, write_context};
use git2::Oid;

use crate::context::{Fixture, SUBMODULE_COMMIT, fixture};

/// `expected` is the error's `Debug` form, `{commit}` standing for the commit id.
#[track_caller]
fn check_error(fixture: &Fixture, context_dir: &str, dockerfile: &str, expected: &str) {
    let result = write_context(
        &fixture.repo,
        fixture.commit,
        context_dir,
        dockerfile,
        Vec::new(),
    );
    let error = result.expect_err("the context must not be written");
    let expected = expected.replace("{commit}", &fixture.commit.to_string());
    assert_eq!(format!("{error:?}"), expected);
}

#[test]
fn missing_dockerfile_or_context_directory() {
    let fixture = fixture();
    check_error(
        &fixture,
        "",
        "nope/Dockerfile",
        r#"MissingDockerfile("nope/Dockerfile", "{commit}")"#,
    );
    // A directory is no Dockerfile.
    check_error(
        &fixture,
        "",
        "src",
        r#"MissingDockerfile("src", "{commit}")"#,
    );
    check_error(
        &fixture,
        "app",
        "app/Dockerfile.dev",
        r#"MissingDockerfile("app/Dockerfile.dev", "{commit}")"#,
    );
    check_error(
        &fixture,
        "nope",
        "Dockerfile",
        r#"MissingContext("nope", "{commit}")"#,
    );
    // A file is no context directory.
    check_error(
        &fixture,
        "README.md",
        "Dockerfile",
        r#"MissingContext("README.md", "{commit}")"#,
    );
    // The context is looked for first; paths are reported cleaned.
    check_error(
        &fixture,
        "./nope/",
        "nope/Dockerfile",
        r#"MissingContext("nope", "{commit}")"#,
    );

    let message = |context_dir: &str, dockerfile: &str| {
        let result = write_context(
            &fixture.repo,
            fixture.commit,
            context_dir,
            dockerfile,
            Vec::new(),
        );
        result
            .expect_err("the context must not be written")
            .to_string()
    };
    let commit = fixture.commit;
    assert_eq!(
        message("", "nope/Dockerfile"),
        format!(r#"the Dockerfile "nope/Dockerfile" is not in commit {commit}"#)
    );
    assert_eq!(
        message("nope", "Dockerfile"),
        format!(r#"the context directory "nope" is not in commit {commit}"#)
    );
}

#[test]
fn unknown_commit_is_a_git_error() {
    let fixture = fixture();
    let result = write_context(
        &fixture.repo,
        Oid::from_str(SUBMODULE_COMMIT).unwrap(),
        "",
        "Dockerfile",
        Vec::new(),
    );
    let error = result.expect_err("the commit is not in the repository");
    assert!(matches!(error, ContextError::Git(_)), "{error:?}");
}

/// A writer with room for `room` bytes, then a full disk.
struct FullDisk {
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_while_writing_says_so() {
    let fixture = fixture();
    for room in [0, 1024, 4096] {
        let error = write_context(
            &fixture.repo,
            fixture.commit,
            "",
            "Dockerfile",
            FullDisk { room },
        )
        .expect_err("the disk is full");
        assert!(matches!(error, ContextError::Io(_)), "{room}: {error:?}");
        assert_eq!(
            error.to_string(),
            "writing the build context: No space left on device (os error 28)"
        );
    }
}
