//! onionlb's configuration loader on arbitrary text: never a panic, and
//! every error names a line and a key.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/etc/onionlb/config.yaml");
    if let Err(error) = onionlb_fuzz::config::Config::parse(path, text) {
        assert!(!error.key.is_empty());
        assert_eq!(error.file, path);
    }
});
