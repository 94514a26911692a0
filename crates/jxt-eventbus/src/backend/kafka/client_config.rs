//! From [`BusConfig`] to librdkafka client configurations.
//!
//! Three clients share one base (brokers, client id, network, security,
//! `kafka.properties`): the producer, the bus's one consumer and the admin
//! client. Properties the backend's guarantees depend on are set last, so
//! nothing can override them (validation already refuses them in the maps).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::config::{BusConfig, KafkaConfig};
use crate::error::{Error, Result};

/// How much longer than `dispatch.revoke_timeout` the poll thread waits for
/// the dispatcher's answer to a revoke (the dispatcher answers at its
/// deadline at the latest; this only covers a dispatcher that vanished).
pub(super) const REVOKE_GRACE: Duration = Duration::from_secs(5);

/// Delay before refetching a partition whose prefetch was full; overridable
/// through `kafka.consumer.properties`.
const FETCH_QUEUE_BACKOFF: &str = "fetch.queue.backoff.ms";

fn ms(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        "1".into()
    } else {
        ms.to_string()
    }
}

fn base(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    // librdkafka's own log level; lines are forwarded to `tracing`, where the
    // subscriber filters further. Debug contexts come from the `debug`
    // property.
    c.set_log_level(RDKafkaLogLevel::Info);
    c.set("bootstrap.servers", k.brokers.join(","));
    c.set("client.id", &k.client_id);
    c.set("socket.connection.setup.timeout.ms", ms(k.net.dial_timeout));
    c.set("socket.timeout.ms", ms(k.net.socket_timeout));
    c.set("socket.keepalive.enable", k.net.keepalive.to_string());
    let protocol = match (&k.tls, &k.sasl) {
        (None, None) => None,
        (Some(_), None) => Some("ssl"),
        (None, Some(_)) => Some("sasl_plaintext"),
        (Some(_), Some(_)) => Some("sasl_ssl"),
    };
    if let Some(p) = protocol {
        c.set("security.protocol", p);
    }
    if let Some(tls) = &k.tls {
        if let Some(v) = &tls.ca_location {
            c.set("ssl.ca.location", v);
        }
        if let Some(v) = &tls.certificate_location {
            c.set("ssl.certificate.location", v);
        }
        if let Some(v) = &tls.key_location {
            c.set("ssl.key.location", v);
        }
        if let Some(v) = &tls.key_password {
            c.set("ssl.key.password", v.expose());
        }
        c.set(
            "ssl.endpoint.identification.algorithm",
            if tls.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(sasl) = &k.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_property());
        c.set("sasl.username", &sasl.username);
        c.set("sasl.password", sasl.password.expose());
    }
    extend(&mut c, &k.properties);
    // Topics are created by the topic strategy, never by a metadata request.
    c.set("allow.auto.create.topics", "false");
    c
}

fn extend(c: &mut ClientConfig, props: &BTreeMap<String, String>) {
    for (k, v) in props {
        c.set(k.trim(), v);
    }
}

/// The producer's configuration.
pub(super) fn producer(config: &BusConfig) -> ClientConfig {
    let k = &config.kafka;
    let p = &k.producer;
    let mut c = base(k);
    extend(&mut c, &p.properties);
    c.set("acks", p.required_acks.as_property());
    c.set("enable.idempotence", p.idempotent.to_string());
    c.set("compression.codec", p.compression.as_property());
    c.set("linger.ms", format!("{}", p.linger.as_secs_f64() * 1000.0));
    c.set("batch.num.messages", p.batch_max_messages.to_string());
    c.set("batch.size", p.batch_max_bytes.to_string());
    c.set(
        "queue.buffering.max.messages",
        p.buffer_max_messages.to_string(),
    );
    c.set("message.send.max.retries", p.retries.to_string());
    c.set("retry.backoff.ms", ms(p.retry_backoff));
    c.set("message.timeout.ms", ms(p.message_timeout));
    c.set("partitioner", p.partitioner.as_property());
    c
}

/// The configuration of the bus's one consumer in `group`.
pub(super) fn consumer(config: &BusConfig, group: &str) -> ClientConfig {
    let k = &config.kafka;
    let cc = &k.consumer;
    let mut c = base(k);
    extend(&mut c, &cc.properties);
    if c.get(FETCH_QUEUE_BACKOFF).is_none() {
        // librdkafka waits this long before fetching again once its prefetch
        // queue was full (default 1s): a consumer that drains the queue
        // faster than that would sit idle for the rest of the second.
        c.set(FETCH_QUEUE_BACKOFF, "10");
    }
    c.set("group.id", group);
    if let Some(id) = &k.group_instance_id {
        c.set("group.instance.id", id);
    }
    // Only for positions that are gone: where a partition the group never
    // committed starts (`start_from`) is set at assignment
    // (`rebalance::RebalanceContext`), so that `start_from: latest` never
    // skips a backlog whose committed position fell out of retention.
    c.set("auto.offset.reset", cc.offset_reset.as_property());
    c.set("session.timeout.ms", ms(cc.session_timeout));
    c.set("heartbeat.interval.ms", ms(cc.heartbeat_interval));
    c.set("max.poll.interval.ms", ms(cc.max_processing_time));
    c.set("fetch.min.bytes", cc.fetch_min_bytes.to_string());
    c.set("fetch.max.bytes", cc.fetch_max_bytes.to_string());
    c.set(
        "max.partition.fetch.bytes",
        cc.max_partition_fetch_bytes.to_string(),
    );
    c.set("fetch.wait.max.ms", ms(cc.fetch_max_wait));
    c.set(
        "queued.max.messages.kbytes",
        cc.prefetch_kbytes().to_string(),
    );
    // The guarantees: positions come from the dispatcher only for finished
    // records and are committed by the backend itself (as they advance, with
    // finished offsets in the metadata, and synchronously on revoke), never
    // by librdkafka's timer; the cooperative assignor keeps owned
    // partitions across subscription changes.
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("partition.assignment.strategy", "cooperative-sticky");
    c.set("enable.partition.eof", "false");
    c.set("group.protocol", "classic");
    c
}

/// The admin client's configuration (also used for metadata requests).
pub(super) fn admin(config: &BusConfig) -> ClientConfig {
    base(&config.kafka)
}

/// Checks every client configuration with librdkafka itself (unknown
/// property names, bad values) and the timing rules that span sections.
///
/// # Errors
/// [`Error::Config`] naming the property as a `kafka.` field path.
pub(crate) fn validate(config: &BusConfig) -> Result<()> {
    let k = &config.kafka;
    let revoke_wait = config.dispatch.revoke_timeout + REVOKE_GRACE;
    if revoke_wait >= k.consumer.max_processing_time {
        return Err(Error::config(
            "kafka.consumer.max_processing_time",
            format!(
                "{:?} must be longer than dispatch.revoke_timeout ({:?}) plus {:?}: a revoke \
                 waits that long inside the poll loop",
                k.consumer.max_processing_time, config.dispatch.revoke_timeout, REVOKE_GRACE
            ),
        ));
    }
    for (what, c) in [
        ("producer", producer(config)),
        ("consumer", consumer(config, &config.group)),
        ("admin client", admin(config)),
    ] {
        if let Err(e) = c.create_native_config() {
            return Err(config_error(k, what, &e));
        }
    }
    Ok(())
}

/// Checks every raw property on its own with librdkafka (its name, and
/// its value where librdkafka checks values), without connecting. It needs
/// no other setting to be valid, so it runs with the rest of the
/// validation and every bad property is reported at once.
///
/// # Errors
/// [`Error::Config`] (or a list) naming each property as a `kafka.` field
/// path; a secret property's value is never shown.
pub(crate) fn check_properties(k: &KafkaConfig) -> Result<()> {
    let mut problems = crate::config::Problems::default();
    for map in [
        &k.properties,
        &k.producer.properties,
        &k.consumer.properties,
    ] {
        // Empty names, and names with a field of their own, are refused by
        // the field checks already.
        let free = |(k, _): &(&String, &String)| {
            !k.trim().is_empty() && !crate::config::property_has_own_field(k)
        };
        for (key, value) in map.iter().filter(free) {
            let mut c = ClientConfig::new();
            c.set(key, value);
            if let Err(e) = c.create_native_config() {
                problems.push(config_error(k, "Kafka client", &e));
            }
        }
    }
    problems.finish()
}

/// A librdkafka configuration error as a field error, naming the map the
/// property came from.
pub(super) fn config_error(k: &KafkaConfig, client: &str, e: &KafkaError) -> Error {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => {
            let field = if k.producer.properties.contains_key(key.as_str()) {
                format!("kafka.producer.properties.{key}")
            } else if k.consumer.properties.contains_key(key.as_str()) {
                format!("kafka.consumer.properties.{key}")
            } else if k.properties.contains_key(key.as_str()) {
                format!("kafka.properties.{key}")
            } else {
                format!("kafka ({key})")
            };
            // librdkafka quotes a refused value; a secret's is masked.
            let mut desc = desc.clone();
            if crate::config::is_secret_property(key) {
                for map in [
                    &k.properties,
                    &k.producer.properties,
                    &k.consumer.properties,
                ] {
                    if let Some(value) = map.get(key.as_str()).filter(|v| !v.is_empty()) {
                        desc = desc.replace(value.as_str(), "***");
                    }
                }
            }
            Error::config(
                field,
                format!("librdkafka refused it for the {client}: {desc}"),
            )
        }
        other => Error::config(
            "kafka",
            format!("librdkafka refused the {client} configuration: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_librdkafka() {
        validate(&BusConfig::default()).unwrap();
    }

    #[test]
    fn guarantees_cannot_be_overridden() {
        let c = consumer(&BusConfig::default(), "g");
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        let p = producer(&BusConfig::default());
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn unknown_properties_are_config_errors() {
        let mut config = BusConfig::default();
        config
            .kafka
            .consumer
            .properties
            .insert("no.such.property".into(), "1".into());
        let e = validate(&config).unwrap_err().to_string();
        assert!(e.contains("no.such.property"), "{e}");
    }

    #[test]
    fn revoke_must_fit_in_the_poll_interval() {
        let mut config = BusConfig::default();
        config.dispatch.revoke_timeout = Duration::from_secs(600);
        let e = validate(&config).unwrap_err().to_string();
        assert!(e.contains("kafka.consumer.max_processing_time"), "{e}");
    }
}
