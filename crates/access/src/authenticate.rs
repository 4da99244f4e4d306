//! Authentication: what an `Authorization` header proves (a password, an API token or a
//! registry bearer token), with failed sign-ins limited and verified registry passwords
//! remembered; and signing in to the web pages.

use buildgrid_store::{StoreError, TokenRow, User};
use sha2::{Digest as _, Sha256};

use crate::limiter::{Attempt, HashingTurn};
use crate::{
    Access, AuthError, BEARER_PREFIX, Claims, Credentials, HASHING_RETRY_AFTER, Principal, Scope,
    TOUCH_INTERVAL, bearer, decoy_hash, now, registry_decoy_hash, secret,
};

impl Access {
    /// The principal an `Authorization` header proves; anonymous without one.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        client: &str,
    ) -> Result<Principal, AuthError> {
        let Some(header) = authorization else {
            return Ok(Principal::anonymous());
        };
        match Credentials::parse(header) {
            None => Err(AuthError::Unauthorized(
                "the Authorization header is neither Basic nor Bearer",
            )),
            Some(Credentials::Bearer(token)) if token.starts_with(BEARER_PREFIX) => {
                self.limit(client, None)?;
                match bearer::verify(&self.key, &token, now()) {
                    Ok(claims) => self.claims_principal(claims),
                    Err(bearer::BearerError::Expired) => Err(AuthError::Unauthorized(
                        "the bearer token has expired: ask the token endpoint for a new one",
                    )),
                    Err(_) => {
                        self.limiter.fail(client);
                        Err(AuthError::Unauthorized("the bearer token is not valid"))
                    }
                }
            }
            Some(Credentials::Bearer(token)) => self.token_principal(&token, client),
            Some(Credentials::Basic { password, .. })
                if password.starts_with(secret::TOKEN_PREFIX) =>
            {
                self.token_principal(&password, client)
            }
            // What clients send for "no credentials" (Docker's token flow without a login).
            Some(Credentials::Basic { user, password })
                if user.is_empty() && password.is_empty() =>
            {
                Ok(Principal::anonymous())
            }
            Some(Credentials::Basic { user, password }) => {
                self.password_principal(&user, &password, client)
            }
        }
    }

    fn limit(&self, client: &str, user: Option<&str>) -> Result<(), AuthError> {
        self.limiter
            .check(client, user)
            .map_err(|retry_after| AuthError::TooManyAttempts { retry_after })
    }

    fn begin(&self, client: &str, user: &str) -> Result<Attempt<'_>, AuthError> {
        self.limiter
            .begin(client, Some(user))
            .map_err(|retry_after| AuthError::TooManyAttempts { retry_after })
    }

    /// A turn to run argon2 (see `Hashing`); refused like a limit when none comes free in time.
    fn hashing_turn(&self) -> Result<HashingTurn<'_>, AuthError> {
        self.hashing.turn().ok_or(AuthError::TooManyAttempts {
            retry_after: HASHING_RETRY_AFTER,
        })
    }

    fn token_principal(&self, secret: &str, client: &str) -> Result<Principal, AuthError> {
        self.limit(client, None)?;
        let row = self.store.db.token_by_hash(&secret::sha256_hex(secret))?;
        let refused = |message| {
            self.limiter.fail(client);
            Err(AuthError::Unauthorized(message))
        };
        let Some(row) = row else {
            return refused("unknown token");
        };
        if row.revoked_at.is_some() {
            return refused("the token was revoked");
        }
        if row.expires_at.is_some_and(|at| at <= now()) {
            return refused("the token has expired");
        }
        let Some(user) = self.token_user(&row)? else {
            return refused("the token's user no longer exists");
        };
        self.touch(row.id);
        let scopes = Scope::parse_list(&row.scopes).unwrap_or_default();
        Ok(Principal {
            user: Some(user),
            token: Some((row.id, scopes)),
            claims: None,
        })
    }

    fn token_user(&self, row: &TokenRow) -> Result<Option<User>, StoreError> {
        match row.user_id {
            Some(id) => self.store.db.user_by_id(id),
            None => Ok(None),
        }
    }

    fn touch(&self, token_id: i64) {
        let at = now();
        {
            let mut touched = self.touched.lock().unwrap();
            if touched
                .get(&token_id)
                .is_some_and(|last| at - last < TOUCH_INTERVAL)
            {
                return;
            }
            touched.insert(token_id, at);
        }
        if let Err(error) = self.store.db.touch_token(token_id, at) {
            tracing::warn!(%error, token_id, "cannot record the token's use");
        }
    }

    fn password_principal(
        &self,
        name: &str,
        password: &str,
        client: &str,
    ) -> Result<Principal, AuthError> {
        let attempt = self.begin(client, name)?;
        let user = self.store.db.user_by_name(name)?;
        let matched = match user
            .as_ref()
            .and_then(|u| u.registry_password_hash.as_ref())
        {
            Some(hash) => {
                self.registry_password_matches(user.as_ref().unwrap().id, password, hash)?
            }
            None => {
                let mut turn = self.hashing_turn()?;
                secret::verify_password_in(password, registry_decoy_hash(), &mut turn.memory);
                false
            }
        };
        if !matched {
            attempt.fail();
            self.record_as(name, "sign-in refused", "registry", client);
            return Err(AuthError::Unauthorized(
                "wrong user name or registry password (the web password does not work here)",
            ));
        }
        Ok(Principal {
            user,
            token: None,
            claims: None,
        })
    }

    fn verified_key(user_id: i64, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(user_id.to_be_bytes())
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }

    fn recently_verified(&self, key: &[u8; 32], hash: &str) -> bool {
        self.verified
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|h| h == hash)
    }

    fn registry_password_matches(
        &self,
        user_id: i64,
        password: &str,
        hash: &str,
    ) -> Result<bool, AuthError> {
        let key = Access::verified_key(user_id, password);
        if self.recently_verified(&key, hash) {
            return Ok(true);
        }
        let mut turn = self.hashing_turn()?;
        // A parallel request with the same password may have checked it while this one waited.
        if self.recently_verified(&key, hash) {
            return Ok(true);
        }
        if !secret::verify_password_in(password, hash, &mut turn.memory) {
            return Ok(false);
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() > 10_000 {
            verified.clear();
        }
        verified.insert(key, hash.to_owned());
        Ok(true)
    }

    /// What `authenticate` answers, when that needs no password hashing: `None` when it would
    /// (Basic credentials with a password not verified lately). Lets async callers skip a thread
    /// hop for every request of a pull.
    pub fn authenticate_without_hashing(
        &self,
        authorization: Option<&str>,
        client: &str,
    ) -> Option<Result<Principal, AuthError>> {
        if let Some(Credentials::Basic { user, password }) =
            authorization.and_then(Credentials::parse)
            && !password.starts_with(secret::TOKEN_PREFIX)
        {
            let found = match self.store.db.user_by_name(&user) {
                Ok(found) => found,
                Err(error) => return Some(Err(error.into())),
            };
            let known = found.as_ref().and_then(|u| {
                let hash = u.registry_password_hash.as_ref()?;
                self.recently_verified(&Access::verified_key(u.id, &password), hash)
                    .then_some(())
            });
            let limited = self.limit(client, Some(&user));
            return match (known, limited) {
                (_, Err(error)) => Some(Err(error)),
                (Some(()), Ok(())) => Some(Ok(Principal {
                    user: found,
                    token: None,
                    claims: None,
                })),
                (None, Ok(())) => None,
            };
        }
        Some(self.authenticate(authorization, client))
    }

    fn claims_principal(&self, claims: Claims) -> Result<Principal, AuthError> {
        let user = match claims.sub {
            Some(id) => match self.store.db.user_by_id(id)? {
                Some(user) => Some(user),
                None => return Err(AuthError::Unauthorized("the token's user no longer exists")),
            },
            None => None,
        };
        let token = match claims.tok {
            Some(id) => {
                let row = self.store.db.token_by_id(id)?;
                match row {
                    Some(row)
                        if row.revoked_at.is_none()
                            && row.expires_at.is_none_or(|at| at > now()) =>
                    {
                        Some((id, Scope::parse_list(&row.scopes).unwrap_or_default()))
                    }
                    _ => {
                        return Err(AuthError::Unauthorized(
                            "the token this bearer token was issued for is revoked or expired",
                        ));
                    }
                }
            }
            None => None,
        };
        Ok(Principal {
            user,
            token,
            claims: Some(claims),
        })
    }

    /// Signs in to the web pages with the web password.
    pub fn sign_in_web(&self, name: &str, password: &str, client: &str) -> Result<User, AuthError> {
        let attempt = self.begin(client, name)?;
        let found = self.store.db.user_by_name(name)?;
        let matched = {
            let mut turn = self.hashing_turn()?;
            let hash = found.as_ref().map_or(decoy_hash(), |u| &u.password_hash);
            secret::verify_password_in(password, hash, &mut turn.memory)
        };
        match found {
            Some(user) if matched => {
                self.record_as(&user.name, "sign-in", "web", client);
                Ok(user)
            }
            _ => {
                attempt.fail();
                self.record_as(name, "sign-in refused", "web", client);
                Err(AuthError::Unauthorized("wrong user name or password"))
            }
        }
    }
}
