//! Secrets sealed at rest: values the database keeps but must not hold in plain text (the
//! secret env of services). Each value is sealed with XChaCha20-Poly1305 under a 256-bit key
//! kept outside the database, with a random 192-bit nonce and the value's purpose as associated
//! data (a value sealed for one purpose does not open as another's).
//!
//! The key comes from `BUILDGRID_SECRET_KEY` (base64 of 32 bytes; for deployments that keep
//! the database apart from the data directory), else from `<data>/secret.key` (mode 0600),
//! which is made the first time a value is sealed. Losing the key loses the sealed values.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::StoreError;

/// The key file in the data directory.
pub const KEY_FILE: &str = "secret.key";
/// The environment variable that gives the key instead of the key file.
pub const KEY_ENV: &str = "BUILDGRID_SECRET_KEY";
/// What a sealed value starts with; the rest is base64 of nonce and ciphertext.
const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;

/// Seals and opens secrets with the data directory's key, loaded (or made) on first need.
pub struct Secrets {
    key_file: PathBuf,
    /// The key given in the environment, as given (checked on first use).
    from_env: Option<String>,
    key: Mutex<Option<[u8; 32]>>,
}

impl Secrets {
    /// Keys from `from_env` (the value of [`KEY_ENV`]) when given, else from `<root>/secret.key`.
    pub fn new(root: &Path, from_env: Option<String>) -> Secrets {
        Secrets {
            key_file: root.join(KEY_FILE),
            from_env: from_env.filter(|text| !text.trim().is_empty()),
            key: Mutex::new(None),
        }
    }

    /// Whether `stored` is a sealed value (rather than plain text stored before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// `plain` sealed for `purpose`, as text to store.
    pub fn seal(&self, purpose: &str, plain: &str) -> Result<String, StoreError> {
        let cipher = XChaCha20Poly1305::new(&self.key(true)?.into());
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Secret(format!("no randomness for a nonce: {e}")))?;
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Secret(format!("cannot seal a {purpose}")))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// The plain text of a value [`Secrets::seal`] made for `purpose`. Text that is not sealed
    /// (stored before sealing existed) is returned as it is.
    pub fn open(&self, purpose: &str, stored: &str) -> Result<String, StoreError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let damaged = || StoreError::Secret(format!("a sealed {purpose} is damaged"));
        let bytes = STANDARD.decode(encoded).map_err(|_| damaged())?;
        if bytes.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(&self.key(false)?.into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Secret(format!(
                    "cannot open a sealed {purpose}: it was sealed with another key than {}; set {KEY_ENV} or restore the key file it was sealed with",
                    self.key_source()
                ))
            })?;
        String::from_utf8(plain).map_err(|_| damaged())
    }

    fn key_source(&self) -> String {
        match self.from_env {
            Some(_) => KEY_ENV.to_owned(),
            None => self.key_file.display().to_string(),
        }
    }

    /// The key; made and written to the key file when `make` and there is none yet.
    fn key(&self, make: bool) -> Result<[u8; 32], StoreError> {
        let mut cached = self.key.lock().unwrap();
        if let Some(key) = *cached {
            return Ok(key);
        }
        let key = match &self.from_env {
            Some(text) => parse_key(text).ok_or_else(|| {
                StoreError::Secret(format!(
                    "{KEY_ENV} is not the base64 of 32 bytes: make a key with `head -c 32 /dev/urandom | base64`"
                ))
            })?,
            None => self.key_from_file(make)?,
        };
        *cached = Some(key);
        Ok(key)
    }

    fn key_from_file(&self, make: bool) -> Result<[u8; 32], StoreError> {
        let path = &self.key_file;
        match std::fs::read_to_string(path) {
            Ok(text) => parse_key(&text).ok_or_else(|| {
                StoreError::Secret(format!(
                    "{} is not the base64 of 32 bytes: restore the key file sealed secrets were sealed with",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && make => self.make_key_file(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Secret(format!(
                "the key of sealed secrets, {}, is missing: restore it, or set {KEY_ENV} to the key they were sealed with",
                path.display()
            ))),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Writes a new random key to the key file (0600), unless another process just did: then
    /// that key is the one.
    fn make_key_file(&self) -> Result<[u8; 32], StoreError> {
        let path = &self.key_file;
        let dir = path
            .parent()
            .expect("the key file is in the data directory");
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| StoreError::Secret(format!("no randomness for a key: {e}")))?;
        // tempfile makes its files 0600.
        let mut file = tempfile::Builder::new()
            .prefix(".secret.key-")
            .tempfile_in(dir)
            .map_err(|e| StoreError::io(dir, e))?;
        writeln!(file, "{}", STANDARD.encode(key))
            .and_then(|()| file.as_file().sync_all())
            .map_err(|e| StoreError::io(file.path(), e))?;
        match file.persist_noclobber(path) {
            Ok(_) => {
                tracing::info!(path = %path.display(), "made the key of sealed secrets");
                Ok(key)
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                self.key_from_file(false)
            }
            Err(e) => Err(StoreError::io(path, e.error)),
        }
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(dir.path(), None);
        let sealed = secrets.seal("service secret env", "hunter2").unwrap();
        assert!(Secrets::is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            secrets.seal("service secret env", "hunter2").unwrap()
        );
        // Another process reads the same key file.
        let again = Secrets::new(dir.path(), None);
        assert_eq!(
            again.open("service secret env", &sealed).unwrap(),
            "hunter2"
        );
        assert!(again.open("build secret", &sealed).is_err());
        assert_eq!(again.open("x", "plain").unwrap(), "plain");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn keys_from_the_environment_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let key = STANDARD.encode([7u8; 32]);
        let secrets = Secrets::new(dir.path(), Some(key.clone()));
        let sealed = secrets.seal("p", "v").unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
        assert_eq!(
            Secrets::new(dir.path(), Some(key))
                .open("p", &sealed)
                .unwrap(),
            "v"
        );
        let missing = Secrets::new(dir.path(), None)
            .open("p", &sealed)
            .unwrap_err();
        assert!(missing.to_string().contains("is missing"), "{missing}");
        let other = Secrets::new(dir.path(), Some(STANDARD.encode([8u8; 32])));
        let wrong = other.open("p", &sealed).unwrap_err();
        assert!(wrong.to_string().contains("another key"), "{wrong}");
        let bad = Secrets::new(dir.path(), Some("short".into())).seal("p", "v");
        assert!(bad.is_err());
    }
}
