//! The shipped Grafana dashboard (`deploy/grafana/eventbus.json`) and alert
//! rules (`deploy/prometheus/alerts.yml`) against what a running bus really
//! exports: a memory bus with published, handled, retried and dead-lettered
//! records is scraped over its `/metrics` route, and every metric name a
//! panel, a template variable or a rule reads must be among the names of
//! that exposition (the PromQL examples of `docs/observability.md` too). A
//! renamed metric, or a typo in a query, fails here
//! instead of leaving an empty panel or an alert that can never fire.
//! (`promtool check rules` / `promtool test rules` run in `scripts/test`.)
#![cfg(feature = "http")]

mod dashboards_support;
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dashboards_support::exposition::Exposed;
use dashboards_support::promql::{metric_names, variable_query_metric_names};
use dashboards_support::shipped;
use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::metrics::{BusMetrics, PartitionLabels, TopicLabels};
use jxt_eventbus::{BusConfig, EventBus, MemoryBroker, Message};
use prometheus_client::registry::Registry;
use support::http_get::get;
use support::metric_value;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn extractor_reads_metric_names_and_skips_everything_else() {
    let e = r#"histogram_quantile(0.99, sum by (topic, le) (rate(eventbus_handler_duration_seconds_bucket{job=~"$job", topic="a{b}"}[$__rate_interval])))"#;
    assert_eq!(
        metric_names(e).unwrap(),
        set(&["eventbus_handler_duration_seconds_bucket"])
    );
    let e = "sum without (result) (rate(a_total{result=\"error\"}[5m])) / on (topic) group_left (x) sum(rate(b_total[5m])) > 0.01";
    assert_eq!(metric_names(e).unwrap(), set(&["a_total", "b_total"]));
    let e = "increase(p_total[10m]) > 0 or (p_total > 0 unless p_total offset 10m)";
    assert_eq!(metric_names(e).unwrap(), set(&["p_total"]));
    // A bare name, at the end of the expression or before `)`.
    assert_eq!(metric_names("up").unwrap(), set(&["up"]));
    assert_eq!(metric_names("max(up)").unwrap(), set(&["up"]));
    assert_eq!(
        variable_query_metric_names(
            r#"label_values(eventbus_broker_reachable{job=~"$job"}, instance)"#
        )
        .unwrap(),
        set(&["eventbus_broker_reachable"])
    );
    assert!(variable_query_metric_names("label_values(job)")
        .unwrap()
        .is_empty());
}

#[test]
fn extractor_refuses_what_it_cannot_check() {
    assert!(metric_names("rat(x_total[5m])")
        .unwrap_err()
        .contains("unknown function"));
    assert!(metric_names(r#"rate({__name__="x_total"}[5m])"#).is_err());
    assert!(
        metric_names("sum(rate(x_total[5m])").is_ok(),
        "the extractor is not a parser"
    );
    assert!(metric_names(r#"x{a="b}"#).is_err());
}

#[test]
fn a_misspelled_metric_name_is_caught() {
    // The same check as the scrape test below, on a made-up exposition.
    let exposed = Exposed::parse(
        "# TYPE eventbus_retries counter\neventbus_retries_total{topic=\"a\"} 1\n# EOF\n",
    );
    let used =
        metric_names("rate(eventbus_retrys_total[5m]) + rate(eventbus_retries_total[5m])").unwrap();
    let unknown: Vec<_> = used
        .iter()
        .filter(|n| !exposed.sampled.contains(*n))
        .collect();
    assert_eq!(unknown, ["eventbus_retrys_total"]);
}

#[test]
fn dashboard_parses_with_job_instance_and_group_variables() {
    let d = shipped::dashboard();
    let vars: Vec<_> = shipped::dashboard_variables(&d)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for v in ["job", "instance", "group"] {
        assert!(
            vars.contains(&v.to_string()),
            "variable {v} missing: {vars:?}"
        );
    }
    let exprs = shipped::dashboard_exprs(&d);
    assert!(exprs.len() > 20, "{} expressions", exprs.len());
    for (at, e) in &exprs {
        for v in ["$job", "$instance", "$group"] {
            assert!(e.contains(v), "{at}: {e} does not filter by {v}");
        }
    }
    let ids: BTreeSet<_> = shipped::panels(&d)
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), shipped::panels(&d).len(), "panel ids are unique");
}

#[test]
fn every_rule_says_what_to_do() {
    let file = shipped::rules();
    let rules: Vec<_> = file.groups.iter().flat_map(|g| &g.rules).collect();
    assert!(rules.len() >= 8);
    for r in rules {
        let name = r.alert.as_deref().expect("alerting rules only");
        for a in ["summary", "description", "runbook"] {
            assert!(
                r.annotations.get(a).is_some_and(|t| !t.trim().is_empty()),
                "{name}: annotation {a} missing"
            );
        }
        assert!(r.labels.contains_key("severity"), "{name}: no severity");
    }
}

fn config() -> BusConfig {
    let mut c = BusConfig {
        group: support::unique_name("dashboards"),
        ..BusConfig::default()
    };
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c.retry.max_attempts = 3;
    c.retry.jitter = false;
    c.backlog.check_interval = Duration::from_millis(100);
    c
}

/// A bus that published, handled, retried and dead-lettered, scraped on its
/// `/metrics` route once all of that shows.
///
/// Two families get their first series only from events a memory bus cannot
/// produce (a Kafka offset reset; a dead letter the broker refuses for good,
/// written as a pointer): an empty family is not exposed at all, so the test
/// gives each one series through the bus's own metric handles, as the Kafka
/// consumer and the dead-letter writer do. Their names and suffixes still
/// come from the library's registration and encoder.
async fn scrape_a_busy_bus() -> String {
    let broker = MemoryBroker::new(MemoryConfig::default());
    let mut registry = Registry::default();
    let metrics = BusMetrics::new();
    metrics.register(&mut registry);
    let bus = EventBus::builder()
        .config(config())
        .memory_broker(broker)
        .metrics(metrics.clone())
        .build()
        .await
        .unwrap();
    support::workload::subscribe_bad_and_flaky(&bus, "orders").await;
    for (i, payload) in ["good", "bad", "flaky", "good"].iter().enumerate() {
        bus.publish("orders", Message::new(*payload).with_key(format!("k{i}")))
            .await
            .unwrap();
    }
    metrics
        .offset_resets
        .get_or_create(&PartitionLabels {
            topic: "orders".into(),
            backend: "memory",
            partition: 0,
        })
        .inc();
    metrics
        .dead_letter_pointers
        .get_or_create(&TopicLabels {
            topic: "orders".into(),
            backend: "memory",
        })
        .inc();
    let app = jxt_eventbus::http::router_with_registry(bus.clone(), Some(Arc::new(registry)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let t = "{topic=\"orders\",backend=\"memory\"}";
    let mut text = String::new();
    support::eventually("handled, retried, dead-lettered and lag measured", 10, || {
        text = futures::executor::block_on(get(addr, "/metrics")).body;
        metric_value(&text, &format!("eventbus_retries_total{t}")) == Some(1.0)
            && metric_value(&text, &format!("eventbus_dead_lettered_total{t}")) == Some(1.0)
            && metric_value(
                &text,
                r#"eventbus_messages_consumed_total{topic="orders",backend="memory",result="ok"}"#,
            ) == Some(3.0)
            && text.contains("\neventbus_consumer_lag{")
    })
    .await;
    // `/readyz` reads health, which sets the stalled-partitions gauge.
    assert_eq!(get(addr, "/readyz").await.status, 200);
    bus.shutdown().await.unwrap();
    server.abort();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_read_only_metrics_the_bus_exports() {
    let exposed = Exposed::parse(&scrape_a_busy_bus().await);
    let known = &exposed.sampled;

    let d = shipped::dashboard();
    let mut sources = shipped::dashboard_exprs(&d);
    for (name, q) in shipped::dashboard_variables(&d) {
        sources.push((format!("variable {name}"), q));
    }
    let mut used_by_dashboard = BTreeSet::new();
    let mut unknown = Vec::new();
    for (at, expr) in &sources {
        let names = if at.starts_with("variable") {
            variable_query_metric_names(expr)
        } else {
            metric_names(expr)
        }
        .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            !names.is_empty() || at.starts_with("variable"),
            "{at} reads no metric: {expr}"
        );
        for n in names {
            if !known.contains(&n) {
                unknown.push(format!("{at}: {n}"));
            }
            used_by_dashboard.insert(n);
        }
    }
    let docs = shipped::doc_exprs();
    assert!(
        docs.len() >= 5,
        "the PromQL examples of docs/observability.md: {docs:?}"
    );
    for expr in &docs {
        let names = metric_names(expr).unwrap_or_else(|e| panic!("docs: {e}"));
        assert!(!names.is_empty(), "docs: {expr} reads no metric");
        for n in names {
            if !known.contains(&n) {
                unknown.push(format!("docs/observability.md: {n}"));
            }
        }
    }
    for r in shipped::rules().groups.iter().flat_map(|g| &g.rules) {
        let at = format!("rule {}", r.alert.as_deref().unwrap_or("?"));
        let names = metric_names(&r.expr).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(!names.is_empty(), "{at} reads no metric");
        for n in names {
            if !known.contains(&n) {
                unknown.push(format!("{at}: {n}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names the bus does not export:\n  {}\nexported:\n  {}",
        unknown.join("\n  "),
        known.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );

    // And the other way round: every family the bus exports has a panel,
    // so a new metric is not forgotten on the dashboard.
    let unshown: Vec<_> = exposed
        .families
        .keys()
        .filter(|f| {
            !exposed
                .family_sample_names(f)
                .iter()
                .any(|n| used_by_dashboard.contains(n))
        })
        .collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
    eprintln!(
        "checked {} dashboard queries and the rules against {} exported names",
        sources.len(),
        known.len()
    );
}
