//! How a record is shown: a header line (where it is, when, key, id), its
//! headers, the jxt-core envelope's fields when the payload is one, and the
//! payload — pretty JSON where it parses, else text, else hex. Keys are
//! bytes: shown as text when UTF-8, else in hex. `--json` gives the same as
//! one object per line.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use anyhow::Result;
use jxt_eventbus::{Envelope, Message};
use serde::Serialize;
use serde_json::Value;

use super::Tailed;
use crate::output;

/// A key as text: itself when it is UTF-8, else `None` (see [`key_hex`]).
pub(crate) fn key_text(key: Option<&[u8]>) -> Option<String> {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .map(str::to_string)
}

/// A key that is not UTF-8, in lower-case hex.
pub(crate) fn key_hex(key: Option<&[u8]>) -> Option<String> {
    key.filter(|k| std::str::from_utf8(k).is_err())
        .map(|k| k.iter().map(|b| format!("{b:02x}")).collect())
}

/// A key for a table cell: the text, `0x<hex>` for binary, `-` for none.
pub(crate) fn key_cell(key: Option<&[u8]>) -> String {
    match (key_text(key), key_hex(key)) {
        (Some(text), _) => text,
        (None, Some(hex)) => format!("0x{hex}"),
        _ => "-".to_string(),
    }
}

/// The payload as shown.
#[derive(Debug, Serialize)]
#[serde(tag = "payload_format", content = "payload", rename_all = "lowercase")]
pub(crate) enum Payload {
    Json(Value),
    Text(String),
    /// Lower-case hex of bytes that are not UTF-8.
    Binary(String),
    /// A null payload: a tombstone (Kafka's null value).
    Tombstone,
}

impl Payload {
    pub(crate) fn of(payload: Option<&[u8]>) -> Self {
        let Some(bytes) = payload else {
            return Payload::Tombstone;
        };
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return Payload::Json(v);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Text(text.to_string()),
            Err(_) => Payload::Binary(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

/// The envelope's fields, when the payload is a jxt-core envelope.
#[derive(Debug, Serialize)]
pub(crate) struct EnvelopeFields {
    event_id: String,
    aggregate_id: String,
    event_type: String,
    event_version: i64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<i64>,
}

/// A record as printed with `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct Shown {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: String,
    id: String,
    /// The key when it is UTF-8 text.
    key: Option<String>,
    /// The key in hex when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    /// `[name, value]`; a null value is `null`.
    headers: Vec<(String, Option<String>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope: Option<EnvelopeFields>,
    #[serde(flatten)]
    payload: Payload,
}

impl Shown {
    pub(crate) fn of(topic: &str, partition: i32, offset: i64, m: &Message) -> Self {
        let (envelope, payload) = match Envelope::from_message(m) {
            Ok(e) => (
                Some(EnvelopeFields {
                    event_id: e.event_id.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    event_type: e.event_type.clone(),
                    event_version: e.event_version,
                    timestamp: e.timestamp.to_rfc3339(),
                    trace_id: e.trace_id.clone(),
                    correlation_id: e.correlation_id.clone(),
                    tenant_id: e.tenant_id,
                }),
                Payload::of(Some(e.payload.get().as_bytes())),
            ),
            Err(_) => (None, Payload::of(m.payload.as_deref())),
        };
        Shown {
            topic: topic.to_string(),
            partition,
            offset,
            timestamp: output::time(m.timestamp),
            id: m.id.clone(),
            key: key_text(m.key.as_deref()),
            key_hex: key_hex(m.key.as_deref()),
            headers: m
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect(),
            envelope,
            payload,
        }
    }

    /// The record for people: a header line, then indented details.
    pub(crate) fn pretty(&self, out: &mut impl Write) -> Result<()> {
        let bold = Style::new().bold();
        let dim = Style::new().fg_color(Some(AnsiColor::BrightBlack.into()));
        writeln!(
            out,
            "{bold}{}[{}] @{}{bold:#}  {}  key {}  id {}",
            self.topic,
            self.partition,
            self.offset,
            self.timestamp,
            match (&self.key, &self.key_hex) {
                (Some(k), _) => k.clone(),
                (None, Some(hex)) => format!("0x{hex}"),
                _ => "-".to_string(),
            },
            self.id
        )?;
        for (k, v) in &self.headers {
            writeln!(
                out,
                "  {dim}{k}:{dim:#} {}",
                v.as_deref().unwrap_or("(null)")
            )?;
        }
        if let Some(e) = &self.envelope {
            writeln!(
                out,
                "  {dim}envelope:{dim:#} {} v{} aggregate {} event {} at {}",
                e.event_type, e.event_version, e.aggregate_id, e.event_id, e.timestamp
            )?;
        }
        let body = match &self.payload {
            Payload::Json(v) => serde_json::to_string_pretty(v)?,
            Payload::Text(t) => t.clone(),
            Payload::Binary(hex) => format!("(binary, hex) {hex}"),
            Payload::Tombstone => "(tombstone: no payload)".to_string(),
        };
        for line in body.lines() {
            writeln!(out, "  {line}")?;
        }
        Ok(())
    }
}

/// Prints a tailed record.
pub(crate) fn print(r: &Tailed, json: bool) -> Result<()> {
    let shown = Shown::of(&r.topic, r.partition, r.offset, &r.message);
    if json {
        output::json_line(&shown)
    } else {
        let mut out = anstream::stdout().lock();
        shown.pretty(&mut out)?;
        out.flush()?;
        Ok(())
    }
}
