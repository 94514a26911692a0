//! NATS JetStream backend settings.

use serde::{Deserialize, Serialize};

/// NATS settings (used when `backend: nats`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs. Default `["nats://127.0.0.1:4222"]`.
    pub servers: Vec<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
        }
    }
}
