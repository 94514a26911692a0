//! The PromQL expressions of the shipped Grafana dashboard
//! (`deploy/grafana/eventbus.json`) and alert rules
//! (`deploy/prometheus/alerts.yml`).

use std::path::PathBuf;

use figment::providers::Format as _;
use serde::Deserialize;
use serde_json::Value;

pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The dashboard, parsed.
pub fn dashboard() -> Value {
    let path = repo_file("deploy/grafana/eventbus.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        for p in v.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (where, expression) of every panel target.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                (format!("panel {title:?}"), expr.to_string())
            })
        })
        .collect()
}

/// (name, query) of every query template variable.
pub fn dashboard_variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a query");
            (v["name"].as_str().unwrap().to_string(), q.to_string())
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The alert rules, parsed (with figment's YAML reader, which the library
/// already uses for its configuration).
pub fn rules() -> RuleFile {
    let path = repo_file("deploy/prometheus/alerts.yml");
    assert!(path.is_file(), "{path:?} missing");
    figment::Figment::from(figment::providers::Yaml::file_exact(&path))
        .extract()
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The expressions of the ```promql blocks in docs/observability.md: one per
/// line, indented lines continuing the one before, `#` lines skipped.
pub fn doc_exprs() -> Vec<String> {
    let path = repo_file("docs/observability.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut exprs: Vec<String> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = line.trim() == "```promql";
            continue;
        }
        if !inside || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match exprs.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => exprs.push(line.trim().to_string()),
        }
    }
    exprs
}
