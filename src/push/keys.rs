//! The relay's push identities, each a secret key kept in a file that only the relay's user can read: the Nostr
//! push key that apps register with, and the VAPID key that signs Web Push requests.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nostr::key::Keys;
use web_push::{PartialVapidSignatureBuilder, VapidSignatureBuilder};

/// Reads the key (hex or nsec) from `path`, or creates the file with a new key (mode 0600) if it is missing.
pub fn load_or_create(path: &Path) -> Result<Keys, String> {
    let text = read_or_create(path, "push key", || Keys::generate().secret_key().to_secret_hex())?;
    Keys::parse(&text).map_err(|e| format!("push key file {}: not a secret key: {e}", path.display()))
}

/// The VAPID key of Web Push (RFC 8292): a P-256 secret, base64url, the form most Web Push libraries exchange.
pub struct VapidKey {
    pub signer: PartialVapidSignatureBuilder,
    /// The uncompressed public point, base64url: what browsers subscribe with (`applicationServerKey`).
    pub public_key: String,
}

/// Reads the VAPID key from `path`, or creates the file with a new key (mode 0600) if it is missing.
pub fn load_or_create_vapid(path: &Path) -> Result<VapidKey, String> {
    let text = read_or_create(path, "VAPID key", || {
        loop {
            // Almost every 32-byte string is a valid P-256 scalar; the rare one that is not is drawn again.
            let candidate = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
            if VapidSignatureBuilder::from_base64_no_sub(&candidate).is_ok() {
                break candidate;
            }
        }
    })?;
    let signer = VapidSignatureBuilder::from_base64_no_sub(&text)
        .map_err(|e| format!("VAPID key file {}: not a base64url P-256 secret key: {e}", path.display()))?;
    let public_key = URL_SAFE_NO_PAD.encode(signer.get_public_key());
    Ok(VapidKey { signer, public_key })
}

/// The trimmed text of a secret file, or a new secret written to a new file only the relay's user can read.
fn read_or_create(path: &Path, what: &str, generate: impl FnOnce() -> String) -> Result<String, String> {
    let name = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, what, generate),
        Err(e) => Err(format!("cannot read {what} file {name}: {e}")),
    }
}

/// Writes a new secret to a new file; when another node sharing the folder created it first, reads theirs.
fn create(path: &Path, what: &str, generate: impl FnOnce() -> String) -> Result<String, String> {
    let name = path.display();
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| format!("cannot create folder for {name}: {e}"))?;
    }
    let secret = generate();
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Give the other writer a moment to finish its one line.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} file {name}: {e}"))?;
            return Ok(text.trim().to_owned());
        }
        Err(e) => return Err(format!("cannot create {what} file {name}: {e}")),
    };
    writeln!(file, "{secret}").map_err(|e| format!("cannot write {what} file {name}: {e}"))?;
    tracing::info!(file = %name, "created a new {what}");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_once_with_private_mode_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/push.key");
        let created = load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap().public_key(), created.public_key());
    }

    #[test]
    fn the_vapid_key_is_created_once_and_its_public_key_is_an_uncompressed_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.key");
        let created = load_or_create_vapid(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let point = URL_SAFE_NO_PAD.decode(&created.public_key).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4));
        assert_eq!(load_or_create_vapid(&path).unwrap().public_key, created.public_key);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push.key");
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("push.key"));
    }
}
