//! The build context: a commit's tree written as a tar straight from git objects (no
//! checkout), honouring `.dockerignore`, symlinks and executable bits.

use std::io::Write;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Where the Dockerfile goes in the context when it sits outside the context directory.
pub const OUTSIDE_DOCKERFILE: &str = ".buildgrid.Dockerfile";

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the context directory {0:?} is not in commit {1}")]
    MissingContext(String, String),
    #[error("the Dockerfile {0:?} is not in commit {1}")]
    MissingDockerfile(String, String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("writing the build context: {0}")]
    Io(#[from] std::io::Error),
    #[error(".dockerignore: {0}")]
    Ignore(#[from] ignore::Error),
}

/// What the builder needs besides the tar.
#[derive(Debug)]
pub struct Context {
    /// The Dockerfile's path inside the tar.
    pub dockerfile: String,
    /// The Dockerfile's text.
    pub dockerfile_text: String,
    pub files: usize,
    pub skipped_submodules: Vec<String>,
}

fn clean(path: &str) -> String {
    path.trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes the tar of `context_dir` in `commit` to `out`.
pub fn write_context(
    repo: &Repository,
    commit: Oid,
    context_dir: &str,
    dockerfile: &str,
    out: impl Write,
) -> Result<Context, ContextError> {
    let commit_obj = repo.find_commit(commit)?;
    let root = commit_obj.tree()?;
    let context_dir = clean(context_dir);
    let dockerfile = clean(dockerfile);
    let tree = if context_dir.is_empty() {
        root.clone()
    } else {
        let entry = root
            .get_path(Path::new(&context_dir))
            .map_err(|_| ContextError::MissingContext(context_dir.clone(), commit.to_string()))?;
        repo.find_tree(entry.id())
            .map_err(|_| ContextError::MissingContext(context_dir.clone(), commit.to_string()))?
    };
    let dockerfile_blob = resolve_blob(repo, &root, &dockerfile)
        .ok_or_else(|| ContextError::MissingDockerfile(dockerfile.clone(), commit.to_string()))?;
    let dockerfile_text = String::from_utf8_lossy(dockerfile_blob.content()).into_owned();
    let dockerfile_in_context = if context_dir.is_empty() {
        Some(dockerfile.clone())
    } else {
        dockerfile
            .strip_prefix(&format!("{context_dir}/"))
            .map(str::to_owned)
    };

    let ignore = match tree.get_path(Path::new(".dockerignore")) {
        Ok(entry) => {
            let blob = repo.find_blob(entry.id())?;
            DockerIgnore::parse(&String::from_utf8_lossy(blob.content()))?
        }
        Err(_) => DockerIgnore {
            patterns: Vec::new(),
        },
    };
    // The commit time, so the same commit always gives the same tar.
    let mtime = commit_obj.time().seconds().max(0) as u64;

    let mut tar = tar::Builder::new(out);
    let mut files = 0;
    let mut skipped_submodules = Vec::new();
    let mut failure: Option<ContextError> = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let path = format!("{dir}{name}");
        let is_dir = entry.kind() == Some(ObjectType::Tree);
        let always_sent =
            path == ".dockerignore" || Some(path.as_str()) == dockerfile_in_context.as_deref();
        if !always_sent && ignore.excludes(&path, is_dir) {
            // A later `!pattern` may take back a file inside an ignored directory.
            return if is_dir {
                TreeWalkResult::Ok
            } else {
                TreeWalkResult::Skip
            };
        }
        let result = match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => append_header(
                &mut tar,
                &path,
                tar::EntryType::Directory,
                0o755,
                0,
                mtime,
                None,
            ),
            (Some(ObjectType::Blob), mode) => match repo.find_blob(entry.id()) {
                Ok(blob) if mode == 0o120000 => {
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    append_header(
                        &mut tar,
                        &path,
                        tar::EntryType::Symlink,
                        0o777,
                        0,
                        mtime,
                        Some(&target),
                    )
                }
                Ok(blob) => {
                    files += 1;
                    let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    let mut header =
                        header(tar::EntryType::Regular, perm, blob.size() as u64, mtime);
                    tar.append_data(&mut header, &path, blob.content())
                }
                Err(error) => {
                    failure = Some(error.into());
                    return TreeWalkResult::Abort;
                }
            },
            (Some(ObjectType::Commit), _) => {
                skipped_submodules.push(path);
                return TreeWalkResult::Skip;
            }
            _ => return TreeWalkResult::Skip,
        };
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(error) => {
                failure = Some(error.into());
                TreeWalkResult::Abort
            }
        }
    });
    // An aborted walk reports only that its callback said stop: the reason is the failure.
    if let Some(error) = failure {
        return Err(error);
    }
    walked?;
    let dockerfile_path = match dockerfile_in_context {
        Some(path) => path,
        None => {
            let mut header = header(
                tar::EntryType::Regular,
                0o644,
                dockerfile_blob.size() as u64,
                mtime,
            );
            tar.append_data(&mut header, OUTSIDE_DOCKERFILE, dockerfile_blob.content())?;
            OUTSIDE_DOCKERFILE.to_owned()
        }
    };
    tar.into_inner()?.flush()?;
    Ok(Context {
        dockerfile: dockerfile_path,
        dockerfile_text,
        files,
        skipped_submodules,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_header(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    mtime: u64,
    link: Option<&str>,
) -> std::io::Result<()> {
    let mut header = header(kind, mode, size, mtime);
    match link {
        Some(target) => tar.append_link(&mut header, path, target),
        None => tar.append_data(&mut header, path, std::io::empty()),
    }
}

/// `.dockerignore`: patterns relative to the context root, applied in order to a path or any of
/// its parents; the last pattern that matches decides, and `!` takes a path back.
struct DockerIgnore {
    patterns: Vec<(bool, Gitignore)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> Result<DockerIgnore, ignore::Error> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            // Docker cleans patterns: `./a/`, `/a` and `a/` all mean `a`.
            let pattern = pattern.trim_start_matches("./").trim_matches('/');
            if pattern.is_empty() {
                continue;
            }
            // Anchored with a leading `/`, a gitignore pattern matches from the root only.
            let mut builder = GitignoreBuilder::new("");
            builder.add_line(None, &format!("/{pattern}"))?;
            patterns.push((negate, builder.build()?));
        }
        Ok(DockerIgnore { patterns })
    }

    fn excludes(&self, path: &str, is_dir: bool) -> bool {
        let mut excluded = false;
        for (negate, pattern) in &self.patterns {
            if pattern
                .matched_path_or_any_parents(path, is_dir)
                .is_ignore()
            {
                excluded = !negate;
            }
        }
        excluded
    }
}

/// Follows a symlink in the tree to the blob it names (relative to the link's directory).
fn resolve_blob<'r>(
    repo: &'r Repository,
    root: &git2::Tree<'_>,
    path: &str,
) -> Option<git2::Blob<'r>> {
    let mut path = path.to_owned();
    for _ in 0..8 {
        let entry = root.get_path(Path::new(&path)).ok()?;
        let blob = repo.find_blob(entry.id()).ok()?;
        if entry.filemode() != 0o120000 {
            return Some(blob);
        }
        let target = String::from_utf8_lossy(blob.content()).into_owned();
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let joined = if target.starts_with('/') {
            target
        } else {
            format!("{dir}/{target}")
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                part => parts.push(part),
            }
        }
        path = parts.join("/");
    }
    None
}
