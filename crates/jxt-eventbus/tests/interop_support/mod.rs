//! Helpers shared by the jxt-core interop tests: the golden fixtures captured
//! from jxt-core v1.7.5 (`shared/interop/jxt-core/`, see its README).
//!
//! The folder sits beside the checkout (CI puts a copy of `shared/` there
//! too). Without it a test is skipped with a note, unless
//! `EVENTBUS_DEV_REQUIRE_BROKERS=1` (CI), where it fails.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod go;

use std::path::{Path, PathBuf};

/// Where the fixtures are, relative to this crate.
pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/interop/jxt-core"
);

/// The fixture folder, or `None` after a skip note; a panic when it is
/// missing and `EVENTBUS_DEV_REQUIRE_BROKERS=1`.
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(FIXTURES);
    if dir.join("README.md").is_file() {
        return Some(dir.to_path_buf());
    }
    let why = format!("the jxt-core fixtures are not at {FIXTURES}");
    assert!(!required(), "EVENTBUS_DEV_REQUIRE_BROKERS=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// Whether `EVENTBUS_DEV_REQUIRE_BROKERS` turns a skip into a failure.
pub fn required() -> bool {
    matches!(
        std::env::var("EVENTBUS_DEV_REQUIRE_BROKERS")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Bytes of a fixture file.
pub fn read(dir: &Path, file: &str) -> Vec<u8> {
    let path = dir.join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A fixture file as JSON.
pub fn json(dir: &Path, file: &str) -> serde_json::Value {
    serde_json::from_slice(&read(dir, file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A dumped Kafka key or header value (`{hex, text, len}`) as bytes.
pub fn dumped_bytes(v: &serde_json::Value) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    let hex = v["hex"].as_str().expect("hex");
    Some(
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect(),
    )
}
