//! The status page in a real browser: headless Chromium (installed by
//! `scripts/bootstrap`) loads `/`, runs its script until it refreshed, and
//! the test reads the rendered DOM — not the HTML source — and compares it
//! with what the bus itself reports. With `EVENTBUS_DEV_SCREENSHOT=<png>`
//! the first test also saves a screenshot of the page.
#![cfg(feature = "http")]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::{
    BusConfig, Delivery, EventBus, HandlerError, HealthState, Message, SubscribeOptions,
};
use scraper::{Html, Selector};
use support::wait_for;

const WAIT: Duration = Duration::from_secs(60);

/// The Chromium binary (`EVENTBUS_DEV_CHROMIUM` or `chromium` on PATH).
/// Missing: the test fails where brokers are required (CI), else is skipped.
fn chromium() -> Option<PathBuf> {
    let candidate = std::env::var_os("EVENTBUS_DEV_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("chromium"))
                    .find(|p| p.is_file())
            })
        });
    if candidate.is_none() {
        assert!(
            !support::brokers_required(),
            "chromium not found: run scripts/bootstrap (it installs Debian's chromium)"
        );
        eprintln!("skipped: chromium not found (scripts/bootstrap installs it)");
    }
    candidate
}

/// Loads `url` in headless Chromium, lets its script run for `budget` of
/// virtual time (which stands still while a request is pending, so every
/// refresh it started has finished), and returns the rendered DOM.
fn rendered_dom(chromium: &PathBuf, url: &str, budget: Duration) -> String {
    let out = Command::new(chromium)
        .args(browser_args(budget))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(chromium: &PathBuf, url: &str, path: &str) {
    let status = Command::new(chromium)
        .args(browser_args(Duration::from_secs(8)))
        .arg("--window-size=1280,1100")
        .arg("--hide-scrollbars")
        .arg(format!("--screenshot={path}"))
        .arg(url)
        .status()
        .expect("run chromium");
    assert!(status.success(), "screenshot failed");
}

fn browser_args(budget: Duration) -> Vec<String> {
    vec![
        "--headless".into(),
        // The CI user is root, where Chromium's sandbox cannot start.
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        format!("--virtual-time-budget={}", budget.as_millis()),
    ]
}

fn text(dom: &Html, selector: &str) -> Vec<String> {
    let s = Selector::parse(selector).unwrap();
    dom.select(&s)
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

fn one(dom: &Html, selector: &str) -> String {
    let all = text(dom, selector);
    assert_eq!(all.len(), 1, "{selector}: {all:?}");
    all.into_iter().next().unwrap()
}

fn refreshes(dom: &Html) -> u32 {
    let s = Selector::parse("body").unwrap();
    dom.select(&s)
        .next()
        .and_then(|b| b.value().attr("data-refreshes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A stall reason without its growing duration (`... for 4.2s with ...`).
fn without_duration(reason: &str) -> String {
    match (reason.find(" for "), reason.find(" with ")) {
        (Some(a), Some(b)) if a < b => format!("{} for … {}", &reason[..a], &reason[b..]),
        _ => reason.to_string(),
    }
}

/// The page's number format (`toLocaleString("en-US")`).
fn grouped(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_lag_dead_letters_and_health_reasons_as_the_bus_reports_them() {
    let Some(chromium) = chromium() else { return };
    let mut config = BusConfig {
        group: "billing".into(),
        ..BusConfig::default()
    };
    config.memory.partitions = 3;
    config.retry.max_attempts = 1;
    config.health.stall_after = Duration::from_secs(1);
    config.health.status.lag_max_age = Duration::from_millis(100);
    config.health.status.show_error_messages = true;
    let bus = EventBus::from_config(config).await.unwrap();
    // Once released, every record of the stuck key goes through.
    let (release, released) = tokio::sync::watch::channel(false);
    let handled = Arc::new(AtomicUsize::new(0));
    let (r, h) = (released, handled.clone());
    bus.subscribe(
        "orders",
        move |d: Delivery| {
            let (mut r, h) = (r.clone(), h.clone());
            async move {
                match d.key_str() {
                    // A handler hung on I/O: its partition stalls, lag stays.
                    Some("stuck") => {
                        let _ = r.wait_for(|released| *released).await;
                    }
                    Some("poison") => {
                        h.fetch_add(1, Ordering::SeqCst);
                        return Err(HandlerError::permanent("order 7 has no customer"));
                    }
                    _ => {}
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        },
        SubscribeOptions::new(),
    )
    .await
    .unwrap();
    bus.publish("orders", Message::new("hang").with_key("stuck"))
        .await
        .unwrap();
    for i in 0..20 {
        bus.publish(
            "orders",
            Message::new(format!("{i}")).with_key(format!("order-{i}")),
        )
        .await
        .unwrap();
    }
    // Behind the stuck record on its partition: lag that stays.
    for i in 0..5 {
        bus.publish(
            "orders",
            Message::new(format!("after-{i}")).with_key("stuck"),
        )
        .await
        .unwrap();
    }
    bus.publish("orders", Message::new("bad").with_key("poison"))
        .await
        .unwrap();
    wait_for("every other record handled", WAIT, || {
        handled.load(Ordering::SeqCst) == 21
    })
    .await;
    wait_for("the dead letter written", WAIT, || {
        bus.dead_lettered_by_topic() == vec![("orders".to_string(), 1)]
    })
    .await;
    let mut stalled = None;
    for _ in 0..600 {
        let health = bus.health().await;
        stalled = health
            .components
            .iter()
            .find(|c| c.state != HealthState::Healthy && c.reason.contains("stall"))
            .cloned();
        if stalled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalled = stalled.expect("the stuck partition is reported in health");

    let server = jxt_eventbus::http::serve(bus.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/#dlq=orders", server.local_addr());
    let lags = bus.lag().await.unwrap();
    let dom = tokio::task::spawn_blocking({
        let (chromium, url) = (chromium.clone(), url.clone());
        move || rendered_dom(&chromium, &url, Duration::from_secs(6))
    })
    .await
    .unwrap();
    // The lag cannot move while the stuck record holds its partition.
    assert_eq!(bus.lag().await.unwrap(), lags);
    let dom = Html::parse_document(&dom);

    assert!(refreshes(&dom) >= 2, "the page refreshed itself");
    assert_eq!(one(&dom, r#"[data-field="backend"]"#), "memory");
    assert_eq!(one(&dom, r#"[data-field="group"]"#), "billing");
    assert!(lags.iter().any(|l| l.lag() > 0), "{lags:?}");
    for l in &lags {
        let row = format!(
            r#"tr[data-partition="{}/{}"]"#,
            l.partition.topic, l.partition.partition
        );
        assert_eq!(
            one(&dom, &format!("{row} td.lag")),
            grouped(l.lag()),
            "{row}"
        );
        assert_eq!(
            one(&dom, &format!("{row} td.committed")),
            grouped(l.committed),
            "{row}"
        );
        assert_eq!(
            one(&dom, &format!("{row} td.end")),
            grouped(l.log_end),
            "{row}"
        );
    }
    assert_eq!(
        text(&dom, "td.stalled")
            .iter()
            .filter(|t| *t == "stalled")
            .count(),
        1
    );
    let component = format!(r#"tr[data-component="{}"]"#, stalled.name);
    assert_eq!(
        without_duration(&one(&dom, &format!("{component} td.reason"))),
        without_duration(&stalled.reason)
    );
    assert_eq!(
        one(&dom, &format!("{component} td.state")),
        stalled.state.as_str()
    );
    assert_eq!(one(&dom, r#"tr[data-dlq-topic="orders"] td.count"#), "1");
    // The dead-letter view, opened by the link's address.
    assert_eq!(one(&dom, "tr.dead-letter td.key"), "poison");
    assert_eq!(one(&dom, "tr.dead-letter td.kind"), "permanent");
    assert_eq!(
        one(&dom, "tr.dead-letter td.error"),
        "order 7 has no customer"
    );
    assert!(one(&dom, "#dlq-note").contains("Replay is off"));

    if let Ok(path) = std::env::var("EVENTBUS_DEV_SCREENSHOT") {
        let chromium = chromium.clone();
        tokio::task::spawn_blocking(move || screenshot(&chromium, &url, &path))
            .await
            .unwrap();
    }
    release.send(true).unwrap();
    drop(server);
    bus.shutdown().await.unwrap();
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_the_broker_is_unreachable_while_kafka_is_down() {
    use support::private_kafka::PrivateKafka;

    // The shared broker answering shows the rig (java, jars) is in place.
    if support::kafka_brokers().is_none() {
        return;
    }
    let Some(chromium) = chromium() else { return };
    let kafka = PrivateKafka::start();
    let mut config = BusConfig {
        backend: jxt_eventbus::BackendKind::Kafka,
        group: "g-page".into(),
        ..BusConfig::default()
    };
    config.kafka.brokers = vec![kafka.brokers.clone()];
    config.health.check_interval = Duration::from_millis(200);
    config.health.broker_unreachable_after = Duration::from_secs(2);
    config.kafka.connect_timeout = Duration::from_secs(2);
    let bus = EventBus::from_config(config).await.unwrap();
    let server = jxt_eventbus::http::serve(bus.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr: SocketAddr = server.local_addr();
    for _ in 0..600 {
        if bus.readiness().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bus.readiness().await, Ok(()), "ready while the broker runs");

    kafka.stop();
    let mut broker = None;
    for _ in 0..300 {
        let health = bus.health().await;
        if health.overall == HealthState::Unhealthy {
            broker = health
                .components
                .into_iter()
                .find(|c| c.state == HealthState::Unhealthy);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broker = broker.expect("the bus turns unhealthy while the broker is down");
    let dom = tokio::task::spawn_blocking(move || {
        rendered_dom(
            &chromium,
            &format!("http://{addr}/"),
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    let dom = Html::parse_document(&dom);
    assert!(refreshes(&dom) >= 2, "the page keeps refreshing");
    let component = format!(r#"tr[data-component="{}"]"#, broker.name);
    assert_eq!(one(&dom, &format!("{component} td.state")), "unhealthy");
    let reason = one(&dom, &format!("{component} td.reason"));
    assert!(reason.contains("unreachable"), "{reason}");
    assert_eq!(one(&dom, "#ready"), "not ready");
    assert_eq!(one(&dom, "#overall"), "unhealthy");
    drop(server);
    bus.shutdown().await.unwrap();
}
