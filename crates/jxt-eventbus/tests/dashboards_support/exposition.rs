//! The metric names an OpenMetrics/Prometheus text exposition makes
//! queryable: the names on its sample lines, as Prometheus stores them
//! (`_total`, `_bucket`, `_sum`, `_count` included).

use std::collections::{BTreeMap, BTreeSet};

/// What one scrape exposes.
#[derive(Debug, Default)]
pub struct Exposed {
    /// Names with at least one sample.
    pub sampled: BTreeSet<String>,
    /// Families declared by `# TYPE`, with their type.
    pub families: BTreeMap<String, String>,
}

impl Exposed {
    pub fn parse(text: &str) -> Exposed {
        let mut e = Exposed::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    e.families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                e.sampled.insert(line[..end].to_string());
            }
        }
        e
    }

    /// The sample names a declared family exposes once it has a series,
    /// by the OpenMetrics rules for its type.
    pub fn family_sample_names(&self, family: &str) -> Vec<String> {
        match self.families.get(family).map(String::as_str) {
            Some("counter") => vec![format!("{family}_total")],
            Some("histogram") => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            Some(_) => vec![family.to_string()],
            None => vec![],
        }
    }

    /// The family a sample name belongs to.
    pub fn family_of(&self, name: &str) -> Option<&str> {
        self.families
            .keys()
            .find(|f| self.family_sample_names(f).iter().any(|n| n == name))
            .map(String::as_str)
    }
}
