//! Every configuration file shipped with the examples loads and validates,
//! commented-out parts aside.

use jxt_eventbus::BusConfig;

#[test]
fn every_example_yaml_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            BusConfig::from_yaml_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} example configurations");
}
