//! Reading a service's master key file, refusing one others could read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use onionlb_core::MasterKey;

use crate::config::{ConfigError, ServiceConfig};

/// Permission bits that let group or others read or change the file.
const SHARED_BITS: u32 = 0o077;
/// Bound on a key file: tor's format is 96 bytes, a PEM key about 120.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Loads the master key of service number `index`. Errors point at its
/// `key:` line in `config_path`.
pub fn load(
    config_path: &Path,
    index: usize,
    service: &ServiceConfig,
    allow_shared: bool,
) -> Result<MasterKey, ConfigError> {
    let error = |problem: String| ConfigError {
        file: config_path.to_owned(),
        line: service.key_line,
        key: format!("services[{index}].key"),
        problem,
    };
    let path = &service.key;
    let metadata = std::fs::metadata(path)
        .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
    let mode = metadata.permissions().mode();
    if mode & SHARED_BITS != 0 && !allow_shared {
        return Err(error(format!(
            "{} has mode {:04o}: group or others can read the master key. Run `chmod 600 {}`, or pass --allow-shared-key-file if this is intended",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    let bytes = torctl::file::read_capped(path, MAX_KEY_FILE)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| error(onionlb_core::error_chain(&e)))?;
    MasterKey::from_bytes(&bytes).map_err(|e| {
        error(format!(
            "{}: {}",
            path.display(),
            onionlb_core::error_chain(&e)
        ))
    })
}

#[cfg(test)]
mod test {
    use super::*;
    use std::path::PathBuf;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n";

    fn service(dir: &Path, mode: u32, contents: &str) -> ServiceConfig {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("master.pem");
        std::fs::write(&key, contents).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        ServiceConfig {
            key,
            key_line: 4,
            instances: Vec::new(),
            instances_line: 5,
            max_intro_points: None,
        }
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("onionlb-keyfile-{name}-{}", std::process::id()))
    }

    #[test]
    fn private_key_loads() {
        let service = service(&dir("ok"), 0o600, PEM);
        let key = load(Path::new("c.yaml"), 0, &service, false).unwrap();
        assert_eq!(
            key.address().to_string(),
            "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead.onion"
        );
    }

    #[test]
    fn readable_key_is_refused_unless_allowed() {
        let service = service(&dir("shared"), 0o644, PEM);
        let err = load(Path::new("c.yaml"), 0, &service, false).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.problem.contains("mode 0644"), "{err}");
        assert!(err.problem.contains("chmod 600"), "{err}");
        assert!(load(Path::new("c.yaml"), 0, &service, true).is_ok());
    }

    #[test]
    fn bad_or_missing_key_names_the_config_line() {
        let service = service(&dir("bad"), 0o600, "not a key");
        let err = load(Path::new("c.yaml"), 0, &service, false).unwrap_err();
        assert!(
            err.to_string().starts_with("c.yaml:4: services[0].key: "),
            "{err}"
        );
        let mut missing = service.clone();
        missing.key = dir("bad").join("absent.key");
        assert!(load(Path::new("c.yaml"), 0, &missing, false)
            .unwrap_err()
            .problem
            .contains("cannot read"));
    }
}
