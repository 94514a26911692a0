//! Lag of a NATS group: the group's durable consumer of each topic, read
//! with consumer info (nothing is created, pulled or acknowledged).

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use jxt_eventbus::backend::nats::inspect;

use super::{age, Query, Row};
use crate::global;

pub(super) async fn lag(q: &Query<'_>) -> Result<Vec<Row>> {
    let mut config = q.config.clone();
    config.nats.connect_timeout = config.nats.connect_timeout.min(q.timeout);
    config.nats.request_timeout = config.nats.request_timeout.min(q.timeout);
    let servers = global::masked_servers(&config);
    let (_client, js) = tokio::time::timeout(q.timeout, inspect::connect(&config))
        .await
        .map_err(|_| {
            anyhow!(
                "no NATS server answered at {servers} within {}",
                global::shown(q.timeout)
            )
        })??;
    let mut rows = Vec::new();
    if q.topics.is_empty() {
        // Every consumer of every stream that is this group's for its
        // filter subject (the bus names them after group and topic).
        let names: Vec<String> = js
            .stream_names()
            .try_collect()
            .await
            .context("cannot list JetStream streams")?;
        for name in names {
            let stream = js.get_stream(&name).await?;
            let consumers: Vec<_> = stream.consumers().try_collect().await?;
            for c in consumers {
                let topic = c.config.filter_subject.clone();
                if !topic.is_empty() && c.name == inspect::durable_name(q.group, &topic) {
                    rows.push(row(&stream, &topic, c).await);
                }
            }
        }
    } else {
        for topic in q.topics {
            let stream = inspect::find_stream(&js, &config, topic)
                .await?
                .ok_or_else(|| anyhow!("no JetStream stream holds topic `{topic}`"))?;
            let durable = inspect::durable_name(q.group, topic);
            match stream.consumer_info(&durable).await {
                Ok(info) => rows.push(row(&stream, topic, info).await),
                Err(e) => {
                    return Err(anyhow!(
                        "group {} has no consumer on topic `{topic}` (durable {durable}): {e}",
                        q.group
                    ))
                }
            }
        }
    }
    rows.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(rows)
}

async fn row(
    stream: &async_nats::jetstream::stream::Stream,
    topic: &str,
    info: async_nats::jetstream::consumer::Info,
) -> Row {
    let lag = info.num_pending + info.num_ack_pending as u64;
    let floor = info.ack_floor.stream_sequence;
    let last = stream.cached_info().state.last_sequence;
    // The first record above the ack floor is the oldest unacknowledged one
    // when the stream holds only this topic's subject.
    let oldest = if lag > 0 {
        match stream.get_raw_message(floor + 1).await {
            Ok(m) if m.subject.as_str() == topic => Some(age(m.time.into())),
            _ => None,
        }
    } else {
        None
    };
    Row {
        topic: topic.to_string(),
        partition: 0,
        consumer: Some(info.name),
        committed: Some(floor as i64),
        end: last as i64,
        lag,
        pending: Some(info.num_pending),
        ack_pending: Some(info.num_ack_pending as u64),
        oldest_age_secs: oldest,
    }
}
