//! `GET /dead-letters` lists a topic's dead letters with their provenance
//! decoded; `POST /dead-letters/replay` replays this group's, only with
//! `health.status.allow_replay`.
//!
//! Both read the dead-letter topic from the broker, so each request is
//! bounded: one at a time per router (a second gets 429), at most
//! [`MAX_LISTED`] records, and a reader that stops after [`IDLE`] without a
//! new record or at [`DEADLINE`]. Error texts are shown only with
//! `health.status.show_error_messages`, as on `/status`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::AppState;
use crate::dispatch::worker::dlq_headers as dlq;
use crate::{DeadLetter, DeadLetterFilter, ListOptions, ReplayOptions};

/// Most records one listing returns.
pub(super) const MAX_LISTED: usize = 100;
/// A listing or replay ends after this long without a new record.
const IDLE: Duration = Duration::from_secs(1);
/// A listing or replay ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(10);

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// The filter of `?key=&id=&group=` (`group=all` for every group).
fn filter(q: &HashMap<String, String>) -> DeadLetterFilter {
    let mut f = DeadLetterFilter::new();
    if let Some(key) = q.get("key").filter(|k| !k.is_empty()) {
        f = f.key(key);
    }
    if let Some(id) = q.get("id").filter(|i| !i.is_empty()) {
        f = f.event_id(id.clone());
    }
    match q.get("group").map(String::as_str) {
        None | Some("") => f,
        Some("all") => f.all_groups(),
        Some(g) => f.group(g.to_string()),
    }
}

/// The key as text when it is UTF-8, else as hex.
fn key_json(key: Option<&[u8]>) -> Value {
    match key {
        None => Value::Null,
        Some(k) => match std::str::from_utf8(k) {
            Ok(text) => json!({ "text": text }),
            Err(_) => json!({ "hex": k.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
        },
    }
}

fn dead_letter_json(d: &DeadLetter, show_messages: bool) -> Value {
    let h = &d.message.headers;
    let mut v = json!({
        "partition": d.partition,
        "offset": d.offset,
        "id": d.message.id,
        "event_id": h.get_str(crate::envelope::headers::EVENT_ID),
        "key": key_json(d.message.key.as_deref()),
        "original_topic": d.original_topic,
        "original_partition": h.get_str(dlq::ORIGINAL_PARTITION),
        "original_offset": h.get_str(dlq::ORIGINAL_OFFSET),
        "error_kind": d.error_kind,
        "attempts": d.attempts,
        "group": d.group,
        "replays": d.replays,
        "pointer": d.pointer,
        "first_failure": h.get_str(dlq::FIRST_FAILURE),
        "last_failure": h.get_str(dlq::LAST_FAILURE),
        "payload_bytes": d.message.payload().len(),
    });
    if show_messages {
        v["error"] = json!(d.error);
    }
    v
}

/// The topic of `?topic=`, and the one broker read allowed at a time.
fn begin<'a>(
    state: &'a AppState,
    q: &'a HashMap<String, String>,
) -> Result<(&'a String, tokio::sync::SemaphorePermit<'a>), (StatusCode, &'static str)> {
    let Some(topic) = q.get("topic").filter(|t| !t.is_empty()) else {
        return Err((StatusCode::BAD_REQUEST, "topic is required: ?topic=<topic>"));
    };
    let Ok(permit) = state.broker_reads.try_acquire() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "another dead-letter read is running; try again",
        ));
    };
    Ok((topic, permit))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (topic, _one) = match begin(&state, &q) {
        Ok(begun) => begun,
        Err((status, why)) => return error(status, why),
    };
    match state
        .bus
        .list_dead_letters(
            topic,
            &ListOptions::new()
                .filter(filter(&q))
                .max(MAX_LISTED)
                .idle(IDLE)
                .timeout(DEADLINE),
        )
        .await
    {
        Ok(letters) => json_response(
            StatusCode::OK,
            &json!({
                "topic": topic,
                "max": MAX_LISTED,
                "dead_letters": letters
                    .iter()
                    .map(|d| dead_letter_json(d, state.status.show_error_messages))
                    .collect::<Vec<_>>(),
            }),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

pub(super) async fn replay(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !state.status.allow_replay {
        return error(
            StatusCode::FORBIDDEN,
            "replay over HTTP is off: set health.status.allow_replay: true to allow it",
        );
    }
    let (topic, _one) = match begin(&state, &q) {
        Ok(begun) => begun,
        Err((status, why)) => return error(status, why),
    };
    let options = ReplayOptions::new()
        .filter(filter(&q))
        .idle(IDLE)
        .timeout(DEADLINE);
    match state.bus.replay_dead_letters(topic, &options).await {
        Ok(r) => json_response(
            StatusCode::OK,
            &json!({
                "replayed": r.replayed,
                "refused": r.refused.len(),
                "not_matching": r.not_matching,
                "other_groups": r.other_groups,
            }),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
