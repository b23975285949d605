//! The box's staff event stream (SSE): a sans-I/O decoder, and the reconnecting reader
//! that turns events into "the board changed" and "a new order arrived".
//!
//! On reconnect the reader sends the last sequence number it saw (`Last-Event-ID` and
//! `?after_seq=`), so the box replays what was missed while the LAN was down.

use crate::client::BoxClient;
use crate::error::UiError;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One event off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// A single line longer than this is refused (the box's events are small).
const LINE_MAX_BYTES: usize = 1 << 20;

/// Splits a byte stream into SSE events (`text/event-stream`).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, UiError> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        if self.buffer.len() > LINE_MAX_BYTES {
            return Err(UiError::Protocol {
                message: "event stream line too long".into(),
            });
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                self.id = None;
                return None;
            }
            let ev = SseEvent {
                id: self.id.take(),
                event: self.event.take().unwrap_or_else(|| "message".into()),
                data: std::mem::take(&mut self.data).join("\n"),
            };
            return Some(ev);
        }
        if line.starts_with(':') {
            return None; // keep-alive comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// What the reader tells the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamNews {
    Connected,
    Disconnected(String),
    /// Orders or stock changed: reload the board.
    Changed {
        new_order: bool,
    },
}

/// No event (not even the box's 15 s keep-alive) for this long: the link is dead.
const SILENCE_MAX: Duration = Duration::from_secs(40);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Reads the stream until `stop`, reconnecting with capped backoff and catching up from
/// the last sequence number seen.
pub async fn follow(
    client: BoxClient,
    stop: CancellationToken,
    mut news: impl FnMut(StreamNews) + Send,
) {
    let mut last_seq: Option<i64> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = read_once(&client, &mut last_seq, &mut news, &mut backoff) => r,
        };
        let reason = match outcome {
            Ok(()) => "the box closed the event stream".to_owned(),
            Err(e) => e.to_string(),
        };
        news(StreamNews::Disconnected(reason));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn read_once(
    client: &BoxClient,
    last_seq: &mut Option<i64>,
    news: &mut (impl FnMut(StreamNews) + Send),
    backoff: &mut Duration,
) -> Result<(), UiError> {
    let mut rb = client.http().get(client.events_url(*last_seq)?);
    if let Some(seq) = *last_seq {
        rb = rb.header("last-event-id", seq.to_string());
    }
    // The client's overall request timeout would cut a long-lived stream; silence is
    // bounded below instead.
    let response = rb.timeout(Duration::from_secs(24 * 3600)).send().await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(crate::client::error_from_body(status.as_u16(), &body));
    }
    news(StreamNews::Connected);
    // Reconnected: whatever happened meanwhile is reloaded with the board.
    news(StreamNews::Changed { new_order: false });
    *backoff = BACKOFF_MIN;
    let mut decoder = SseDecoder::default();
    let mut body = response.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(SILENCE_MAX, body.next()).await {
            Err(_) => {
                return Err(UiError::Unreachable {
                    message: "no word from the box for 40 s".into(),
                });
            }
            Ok(None) => return Ok(()),
            Ok(Some(chunk)) => chunk?,
        };
        let mut changed = false;
        let mut new_order = false;
        for ev in decoder.feed(&chunk)? {
            if let Some(seq) = ev.id.as_deref().and_then(|s| s.parse().ok()) {
                *last_seq = Some(seq);
            }
            if ev.event == "order.placed" {
                new_order = true;
            }
            if ev.event.starts_with("order.")
                || ev.event.starts_with("stock.")
                || ev.event == "resync"
            {
                changed = true;
            }
        }
        if changed {
            news(StreamNews::Changed { new_order });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keep_alives() {
        let mut d = SseDecoder::default();
        assert!(
            d.feed(b": keep-alive\n\nid: 7\nevent: order.pl")
                .unwrap()
                .is_empty()
        );
        let evs = d
            .feed(b"aced\ndata: {\"seq\":7}\r\n\r\nid:8\nevent:order.ready\ndata:a\ndata:b\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: "order.placed".into(),
                    data: "{\"seq\":7}".into()
                },
                SseEvent {
                    id: Some("8".into()),
                    event: "order.ready".into(),
                    data: "a\nb".into()
                }
            ]
        );
        let evs = d.feed(b"event: resync\ndata: reload\n\n").unwrap();
        assert_eq!(evs[0].event, "resync");
        assert_eq!(evs[0].id, None);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut d = SseDecoder::default();
        let junk = vec![b'x'; LINE_MAX_BYTES + 1];
        assert_eq!(d.feed(&junk).unwrap_err().code(), "protocol");
    }
}
