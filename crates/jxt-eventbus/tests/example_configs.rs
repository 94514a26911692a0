//! Every configuration file shipped with the examples loads and validates:
//! a bus configuration file whole, a service's file by its `eventbus`
//! section. Commented-out settings (`# key: value`, as the TLS and SASL
//! blocks are written) load too once uncommented, so they name real fields.

use std::path::{Path, PathBuf};

use jxt_eventbus::BusConfig;

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

/// Loads the file as a bus configuration, or its `eventbus` section when it
/// has one (environment overrides included, as the service would).
fn load(path: &Path, text: &str) -> jxt_eventbus::Result<BusConfig> {
    if text.lines().any(|l| l.starts_with("eventbus:")) {
        BusConfig::load_section(path, "eventbus")
    } else {
        BusConfig::from_yaml_str(text)
    }
}

/// `# key: value` and `#   key:` become settings; prose comments (which
/// start with a capital or do not read `key:`) stay comments.
fn uncommented(text: &str) -> (String, usize) {
    let mut count = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            let Some(rest) = line.trim_start().strip_prefix("# ") else {
                return line.to_string();
            };
            let key = rest.trim_start().split(':').next().unwrap_or("");
            let is_setting = rest.contains(':')
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if is_setting {
                count += 1;
                format!("{indent}{rest}")
            } else {
                line.to_string()
            }
        })
        .collect();
    (lines.join("\n"), count)
}

/// The commented settings name files (`/etc/kafka/ca.pem`) that a NATS
/// configuration checks exist: point them at empty files in `dir`.
fn with_scratch_files(text: &str, dir: &Path) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let path = word.trim_end();
            let is_file = path.starts_with('/')
                && [".pem", ".key", ".creds"].iter().any(|e| path.ends_with(e));
            if !is_file {
                return word.to_string();
            }
            let scratch = dir.join(path.trim_start_matches('/').replace('/', "_"));
            std::fs::write(&scratch, "").unwrap();
            word.replace(path, scratch.to_str().unwrap())
        })
        .collect()
}

#[test]
fn every_example_yaml_loads_with_its_commented_settings_too() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(files.len() >= 2, "found {files:?}");
    let scratch = tempfile::tempdir().unwrap();
    let mut uncommented_settings = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        load(path, &text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let (all, count) = uncommented(&text);
        let all = with_scratch_files(&all, scratch.path());
        let copy = scratch.path().join(path.file_name().unwrap());
        std::fs::write(&copy, &all).unwrap();
        load(&copy, &all).unwrap_or_else(|e| panic!("{path:?} uncommented: {e}\n{all}"));
        uncommented_settings += count;
    }
    assert!(
        uncommented_settings >= 10,
        "the TLS/SASL blocks were checked: {uncommented_settings} settings"
    );
}

#[test]
fn uncommenting_keeps_prose() {
    let (text, count) =
        uncommented("a: 1\n# Prose: stays\n  # tls:\n  #   ca_location: x.pem\n# x y: no\n");
    assert_eq!(
        text,
        "a: 1\n# Prose: stays\n  tls:\n    ca_location: x.pem\n# x y: no"
    );
    assert_eq!(count, 2);
}
