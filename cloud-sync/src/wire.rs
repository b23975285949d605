//! Reading and writing frames on quinn streams.

use crate::proto::{Decoder, FrameError, Message, encode};
use tokio::sync::mpsc;

/// Frames waiting to be handled per stream, at most.
const INBOX_MAX: usize = 64;
/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("the peer closed the stream")]
    Closed,
}

pub async fn send(stream: &mut quinn::SendStream, message: &Message) -> Result<(), WireError> {
    let frame = encode(message)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| WireError::Stream(e.to_string()))
}

/// Spawns a task that decodes frames from `recv` into a bounded channel. The channel
/// ends with an error item (or closes) when the stream does.
pub fn reader(mut recv: quinn::RecvStream) -> mpsc::Receiver<Result<Message, WireError>> {
    let (tx, rx) = mpsc::channel(INBOX_MAX);
    tokio::spawn(async move {
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    decoder.push(&buf[..n]);
                    loop {
                        match decoder.next_message() {
                            Ok(Some(m)) => {
                                if tx.send(Ok(m)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        }
                    }
                }
                Ok(None) => {
                    let end = if decoder.pending() > 0 {
                        WireError::Frame(FrameError::Truncated)
                    } else {
                        WireError::Closed
                    };
                    let _ = tx.send(Err(end)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(WireError::Stream(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    rx
}

/// The next message, or why there is none.
pub async fn next(
    rx: &mut mpsc::Receiver<Result<Message, WireError>>,
) -> Result<Message, WireError> {
    rx.recv().await.unwrap_or(Err(WireError::Closed))
}
