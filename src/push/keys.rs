//! The relay's push identity: a secret key kept in a file that only the relay's user can read.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nostr::key::Keys;

/// Reads the key (hex or nsec) from `path`, or creates the file with a new key (mode 0600) if it is missing.
pub fn load_or_create(path: &Path) -> Result<Keys, String> {
    let name = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => Keys::parse(text.trim()).map_err(|e| format!("push key file {name}: not a secret key: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder).map_err(|e| format!("cannot create folder for {name}: {e}"))?;
            }
            let keys = Keys::generate();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create push key file {name}: {e}"))?;
            writeln!(file, "{}", keys.secret_key().to_secret_hex())
                .map_err(|e| format!("cannot write push key file {name}: {e}"))?;
            tracing::info!(file = %name, "created a new push key");
            Ok(keys)
        }
        Err(e) => Err(format!("cannot read push key file {name}: {e}")),
    }
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
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push.key");
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("push.key"));
    }
}
