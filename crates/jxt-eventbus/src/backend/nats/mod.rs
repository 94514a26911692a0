//! Nats backend (placeholder until the backend lands).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::backend::{Backend, Consumer, ConsumerEvent, Producer};
use crate::config::BusConfig;
use crate::error::{Error, Result};

/// The nats backend of one bus.
#[derive(Debug)]
pub(crate) struct NatsBackend {}

impl NatsBackend {
    pub(crate) async fn connect(_config: &BusConfig) -> Result<Self> {
        Err(Error::config(
            "backend",
            "the nats backend is not implemented yet",
        ))
    }
}

#[async_trait]
impl Backend for NatsBackend {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn producer(&self) -> Arc<dyn Producer> {
        unreachable!("never constructed")
    }

    async fn consumer(
        &self,
        _group: &str,
        _events: mpsc::Sender<ConsumerEvent>,
    ) -> Result<Arc<dyn Consumer>> {
        unreachable!("never constructed")
    }
}
