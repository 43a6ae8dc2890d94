//! `GET /v1/drivers/{driver_id}/stream`: a driver's one WebSocket. The driver sends
//! location frames on it and receives acknowledgements and server events (ride offers,
//! from matching) on it. The server pings every `ingest.ws_heartbeat_s`; a connection
//! silent for three intervals is closed. A second connection of the same driver replaces
//! the first.
//!
//! Frames (JSON text):
//! - driver → server: `{"type": "location", "lat": …, "lng": …, "seq": …, …}` (the body of
//!   `PUT …/location`);
//! - server → driver: `{"type": "ack", "seq": …, "result": "accepted" | "stale"}`,
//!   `{"type": "error", "seq": …, "code": …, "detail": …}`, and events such as offers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use futures_util::StreamExt;
use geomatch_common::auth::{authenticate, Role};
use geomatch_common::error::{ApiError, ErrorCode};
use geomatch_common::ports::DriverPush;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ingest::Ingest;
use crate::model::{driver_id, Outcome};
use crate::report::LocationBody;

/// Largest frame accepted from a driver.
const MAX_FRAME_BYTES: usize = 4 * 1024;
/// Server events queued per driver before new ones are dropped (a stuck client).
const OUTBOX: usize = 64;

/// Connected drivers' outboxes, so that other parts of the process (dispatch) can push
/// events to a driver.
#[derive(Default)]
pub struct Hub {
    drivers: Mutex<HashMap<String, (u64, mpsc::Sender<String>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Hub {
    fn register(&self, driver: &str) -> (u64, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Replacing drops the previous sender, which ends the previous connection.
        self.drivers.lock().insert(driver.to_owned(), (token, tx));
        (token, rx)
    }

    fn unregister(&self, driver: &str, token: u64) {
        let mut map = self.drivers.lock();
        if map.get(driver).is_some_and(|(t, _)| *t == token) {
            map.remove(driver);
        }
    }
}

impl DriverPush for Hub {
    /// Queues a JSON text for a connected driver; false if not connected or backed up.
    fn push(&self, driver: &str, json: &str) -> bool {
        let map = self.drivers.lock();
        map.get(driver)
            .is_some_and(|(_, tx)| tx.try_send(json.to_owned()).is_ok())
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Location(LocationBody),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame {
    Ack {
        seq: Option<u64>,
        result: Outcome,
    },
    Error {
        seq: Option<u64>,
        code: String,
        detail: String,
    },
}

/// Upgrades to a WebSocket after authenticating (bearer header, or `access_token` query
/// parameter for browsers, which cannot set headers on a WebSocket).
pub(crate) async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    ingest: web::Data<Ingest>,
    hub: web::Data<Hub>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = driver_id(&path).map_err(ApiError::from)?;
    let who = authenticate(&req)?;
    who.may_act_as(Role::Driver, id.as_str())
        .map_err(ApiError::from)?;
    let (response, mut session, messages) = actix_ws::handle(&req, body)?;
    let mut messages = messages.max_frame_size(MAX_FRAME_BYTES);
    let (token, mut outbox) = hub.register(id.as_str());
    let heartbeat = Duration::from_secs(ingest.settings().ws_heartbeat_s);
    ingest.metrics().ws_connected.inc();

    actix_web::rt::spawn(async move {
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(heartbeat);
        let reason = loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        let reply = handle_frame(&ingest, &id, &text).await;
                        let Ok(reply) = serde_json::to_string(&reply) else { break None };
                        if session.text(reply).await.is_err() { break None; }
                    }
                    Some(Ok(Message::Ping(bytes))) => {
                        last_heard = Instant::now();
                        if session.pong(&bytes).await.is_err() { break None; }
                    }
                    Some(Ok(Message::Pong(_))) => last_heard = Instant::now(),
                    Some(Ok(Message::Close(reason))) => break reason,
                    Some(Ok(Message::Binary(_))) => {
                        let frame = ServerFrame::Error { seq: None, code: "binary_not_supported".into(), detail: "send JSON text frames".into() };
                        if session.text(serde_json::to_string(&frame).unwrap_or_default()).await.is_err() { break None; }
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket protocol error");
                        break Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Protocol, description: Some(e.to_string()) });
                    }
                    None => break None,
                },
                event = outbox.recv() => match event {
                    Some(text) => if session.text(text).await.is_err() { break None },
                    // Replaced by a newer connection of the same driver.
                    None => break Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Policy, description: Some("replaced by a newer connection".into()) }),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > heartbeat * 3 {
                        break Some(actix_ws::CloseReason { code: actix_ws::CloseCode::Away, description: Some("heartbeat timeout".into()) });
                    }
                    if session.ping(b"").await.is_err() { break None; }
                }
            }
        };
        hub.unregister(id.as_str(), token);
        ingest.metrics().ws_connected.dec();
        let _ = session.close(reason).await;
    });
    Ok(response)
}

async fn handle_frame(ingest: &Ingest, id: &geomatch_index::EntryId, text: &str) -> ServerFrame {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Location(body)) => {
            let seq = body.seq;
            match ingest.push(id, &body).await {
                Ok(result) => ServerFrame::Ack { seq, result },
                Err(e) => ServerFrame::Error {
                    seq,
                    code: e.code().into(),
                    detail: e.to_string(),
                },
            }
        }
        Err(e) => ServerFrame::Error {
            seq: None,
            code: "invalid_frame".into(),
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_frames_parse_and_unknown_fields_are_refused() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"location","lat":1.5,"lng":2.5,"seq":7}"#).unwrap();
        let ClientFrame::Location(b) = f;
        assert_eq!((b.lat, b.lng, b.seq), (1.5, 2.5, Some(7)));
        assert!(serde_json::from_str::<ClientFrame>(
            r#"{"type":"location","lat":1,"lng":2,"alt":3}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"teleport","lat":1,"lng":2}"#).is_err()
        );
    }
}
