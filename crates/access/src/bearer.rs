//! Short-lived registry bearer tokens, as the Docker token flow hands them out: a JSON claim set
//! and its HMAC-SHA256, `bgr.<claims>.<mac>` in unpadded base64url. Clients treat them as opaque.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const BEARER_PREFIX: &str = "bgr.";

/// One entry of the token's `access` list, as the Docker token specification names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user, when not anonymous.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sub: Option<i64>,
    /// The API token the user logged in with, when it was one: checked again on each request,
    /// so revoking it takes effect at once.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tok: Option<i64>,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub access: Vec<Grant>,
}

impl Claims {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|g| g.kind == kind && g.name == name && g.actions.iter().any(|a| a == action))
    }
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    mac
}

pub fn sign(key: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{BEARER_PREFIX}{payload}.{tag}")
}

#[derive(Debug, PartialEq, Eq)]
pub enum BearerError {
    Malformed,
    BadSignature,
    Expired,
}

/// The claims of a token signed with `key` that has not expired at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, BearerError> {
    let rest = token
        .strip_prefix(BEARER_PREFIX)
        .ok_or(BearerError::Malformed)?;
    let (payload, tag) = rest.split_once('.').ok_or(BearerError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| BearerError::Malformed)?;
    mac(key, payload)
        .verify_slice(&tag)
        .map_err(|_| BearerError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| BearerError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| BearerError::Malformed)?;
    if claims.exp <= now {
        return Err(BearerError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Some(1),
            tok: None,
            aud: "registry".into(),
            iat: 0,
            exp,
            access: vec![Grant {
                kind: "repository".into(),
                name: "acme/shop".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let token = sign(b"key", &claims(100));
        assert_eq!(verify(b"key", &token, 99), Ok(claims(100)));
        assert_eq!(verify(b"key", &token, 100), Err(BearerError::Expired));
        assert_eq!(
            verify(b"other key", &token, 99),
            Err(BearerError::BadSignature)
        );
        assert!(claims(1).allows("repository", "acme/shop", "pull"));
        assert!(!claims(1).allows("repository", "acme/shop", "push"));
    }

    #[test]
    fn changed_claims_fail_the_signature() {
        let token = sign(b"key", &claims(100));
        let (_, tag) = token.rsplit_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(999)).unwrap());
        let forged = format!("{BEARER_PREFIX}{forged_payload}.{tag}");
        assert_eq!(verify(b"key", &forged, 99), Err(BearerError::BadSignature));
        assert_eq!(verify(b"key", "bgr.x", 0), Err(BearerError::Malformed));
        assert_eq!(verify(b"key", "nope", 0), Err(BearerError::Malformed));
    }
}
