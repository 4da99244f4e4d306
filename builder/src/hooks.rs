//! The `post-receive` hook of an app's repository: a push to the app's branch queues a build,
//! and what the hook prints reaches the pusher as `remote:` lines.

use std::io::{BufRead, Write};
use std::path::Path;

use buildgrid_core::{AppRef, RequestId};
use buildgrid_store::{NewBuild, Queued, Store, StoreError};

/// Writes the hook that calls `exe hook post-receive` for this app.
pub fn install(git_dir: &Path, exe: &Path, data: &Path, app: &AppRef) -> std::io::Result<()> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\n# Written by buildgrid: queues a build of each push to the app's branch.\nexec {} hook post-receive --data {} --app '{app}'\n",
        quote(exe),
        quote(data),
    );
    let hooks = git_dir.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let path = hooks.join("post-receive");
    if std::fs::read_to_string(&path).is_ok_and(|old| old == script) {
        return Ok(());
    }
    // A temporary file of its own, so that two requests installing at once never mix.
    let mut temporary = tempfile::Builder::new()
        .prefix("post-receive.")
        .tempfile_in(&hooks)?;
    std::io::Write::write_all(&mut temporary, script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    temporary.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads `<old> <new> <ref>` lines and queues a build for a push to the app's branch; its log
/// names `request`, the HTTP request of the push, when there is one. A push that deletes a
/// branch records the deletion (retention lets the branch's builds go `drop_deleted_after` days
/// later), and a push of a deleted branch brings it back.
pub fn post_receive(
    store: &Store,
    app: &AppRef,
    public_url: &str,
    request: Option<&RequestId>,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<Vec<i64>, StoreError> {
    let Some(app) = store.db.app(app)? else {
        let _ = writeln!(
            out,
            "buildgrid: app {app} is not registered; nothing to build"
        );
        return Ok(Vec::new());
    };
    let branch_ref = format!("refs/heads/{}", app.branch);
    let mut queued = Vec::new();
    for line in input.lines().map_while(Result::ok) {
        let mut parts = line.split_whitespace();
        let (Some(_old), Some(new), Some(git_ref)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let deleted = new.bytes().all(|b| b == b'0');
        if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            if deleted {
                store
                    .db
                    .branch_deleted(app.id, None, branch, buildgrid_store::now(), None)?;
                let days = store
                    .db
                    .effective_retention(app.app.namespace(), Some(app.app.app()))?
                    .drop_deleted_after;
                let when = match days {
                    0 => "from now on".to_owned(),
                    1 => "in 1 day".to_owned(),
                    days => format!("in {days} days"),
                };
                let _ = writeln!(
                    out,
                    "buildgrid: branch {branch} deleted; retention stops keeping its builds \
                     {when} (pinned and deployed ones stay)"
                );
                continue;
            }
            if store.db.branch_pushed(app.id, None, branch)? {
                let _ = writeln!(
                    out,
                    "buildgrid: branch {branch} is back; retention keeps its builds again"
                );
            }
        }
        if git_ref != branch_ref {
            let _ = writeln!(
                out,
                "buildgrid: {git_ref} is not {branch_ref}, the branch {} builds; not building it",
                app.app
            );
            continue;
        }
        let new_build = NewBuild {
            app_id: app.id,
            git_ref: app.branch.clone(),
            commit_id: Some(new.to_owned()),
            trigger: "push".into(),
            force: false,
        };
        let result = store
            .db
            .enqueue_requested_build(&new_build, None, request)?;
        let short = &new[..new.len().min(12)];
        match result {
            Queued::New(id) => {
                let _ = writeln!(
                    out,
                    "buildgrid: build {id} queued for {short} ({})",
                    app.branch
                );
                queued.push(id);
            }
            Queued::Existing(id) => {
                let _ = writeln!(out, "buildgrid: {short} is already built by build {id}");
            }
        }
        let id = result.id();
        let _ = writeln!(out, "buildgrid: watch it at {public_url}/builds/{id}");
        let _ = writeln!(out, "buildgrid: or run: buildgrid build-log {id} --follow");
    }
    Ok(queued)
}
