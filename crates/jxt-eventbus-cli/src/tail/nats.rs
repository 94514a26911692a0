//! Tail on NATS: one ordered consumer per topic — ephemeral, without
//! acknowledgements, removed by the server when tail goes — so no durable
//! consumer of any group is touched.

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use jxt_eventbus::backend::nats::inspect;

use super::{From, Reader, Tailed};
use crate::global;

pub(super) async fn read(reader: Reader<'_>) -> Result<()> {
    let mut config = reader.config.clone();
    config.nats.connect_timeout = config.nats.connect_timeout.min(reader.timeout);
    let servers = global::masked_servers(&config);
    let (_client, js) = tokio::time::timeout(reader.timeout, inspect::connect(&config))
        .await
        .map_err(|_| {
            anyhow!(
                "no NATS server answered at {servers} within {}",
                global::shown(reader.timeout)
            )
        })??;
    let deliver = match reader.from {
        From::Earliest => DeliverPolicy::All,
        From::Latest => DeliverPolicy::New,
        From::Offset(o) => DeliverPolicy::ByStartSequence {
            start_sequence: o.max(1) as u64,
        },
        From::Since(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(t),
        },
    };
    let mut streams = Vec::new();
    for topic in reader.topics {
        let stream = inspect::find_stream(&js, &config, topic)
            .await?
            .ok_or_else(|| anyhow!("no JetStream stream holds topic `{topic}` on {servers}"))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: topic.clone(),
                deliver_policy: deliver,
                ..OrderedConfig::default()
            })
            .await
            .with_context(|| format!("cannot read topic `{topic}`"))?;
        let topic = topic.clone();
        let messages = consumer
            .messages()
            .await
            .with_context(|| format!("cannot read topic `{topic}`"))?
            .map(move |m| (topic.clone(), m));
        streams.push(messages.boxed());
    }
    let mut all = futures::stream::select_all(streams);
    while let Some((topic, m)) = all.next().await {
        let m = m.with_context(|| format!("reading topic `{topic}` failed"))?;
        let offset = m
            .info()
            .map(|i| i.stream_sequence as i64)
            .unwrap_or_default();
        let record = Tailed {
            topic,
            partition: 0,
            offset,
            message: inspect::message(&m),
        };
        if reader.records.send(record).await.is_err() {
            break;
        }
    }
    Ok(())
}
