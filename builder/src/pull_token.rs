//! The engine pulls a build's `FROM` images of buildgrid's own registry with a pull-only
//! token of the build's namespace: images of its own namespace (which are in no other name
//! the engine knows) and of public ones, never another tenant's.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use buildgrid_store::Store;

use crate::worker::Stop;

/// The non-admin user whose tokens builds pull with; a member of each namespace that builds.
const BUILD_USER: &str = "buildgrid-builder";

/// A build's token, deleted when dropped.
pub(crate) struct PullToken<'a> {
    store: &'a Store,
    id: i64,
    secret: String,
}

impl<'a> PullToken<'a> {
    /// A token that pulls from `namespace`, expiring after the build's time limit.
    pub(crate) fn create(
        store: &'a Store,
        namespace: &str,
        build: i64,
        limit: Duration,
    ) -> Result<PullToken<'a>, Stop> {
        let user = buildgrid_access::system_user(store, BUILD_USER)?;
        store.db.add_member(namespace, user.id)?;
        let scope = buildgrid_access::Scope::parse(&format!("pull:{namespace}"))?;
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
            + limit.as_secs() as i64
            + 60;
        let (id, secret) = buildgrid_access::create_token(
            store,
            &user,
            &format!("build {build}"),
            &[scope],
            Some(expires),
        )?;
        Ok(PullToken { store, id, secret })
    }

    /// The engine's credentials for each of buildgrid's registry addresses.
    pub(crate) fn credentials(&self, hosts: &[String]) -> HashMap<String, DockerCredentials> {
        hosts
            .iter()
            .map(|host| {
                let credentials = DockerCredentials {
                    username: Some(BUILD_USER.to_owned()),
                    password: Some(self.secret.clone()),
                    serveraddress: Some(host.clone()),
                    ..Default::default()
                };
                (host.clone(), credentials)
            })
            .collect()
    }
}

impl Drop for PullToken<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.store.db.delete_token(self.id) {
            tracing::warn!(%error, "cannot delete a build's pull token");
        }
    }
}
