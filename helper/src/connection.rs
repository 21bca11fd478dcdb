//! One GUI or CLI connection.
//!
//! After the `Hello` exchange the reader forwards requests to the engine and
//! the writer drains the connection's queue. The two halves are separate
//! tasks so that a client which stops reading only stalls its own writer,
//! and a malformed frame gets an error reply instead of killing anything.

use crate::engine::{Command, EngineHandle};
use crate::events::{event_frame, EventKind};
use crate::subscribers::{Next, Outgoing, QueueLimits, SubscriberQueue};
use std::sync::Arc;
use std::time::Duration;
use warren_ipc::framed::{BoxedWriter, ReadError};
use warren_ipc::server::{server_handshake, Accepted};
use warren_proto::frame::encode;
use warren_proto::ipc::{ClientMessage, ErrorCode, HelperMessage, IpcError};

/// A write that makes no progress for this long means the client stopped
/// reading: it is disconnected.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);

pub async fn serve(accepted: Accepted, engine: EngineHandle, limits: QueueLimits) {
    let Accepted {
        peer,
        mut reader,
        mut writer,
    } = accepted;
    let hello = match server_handshake(&mut reader, &mut writer, crate::VERSION).await {
        Ok(hello) => hello,
        Err(e) => {
            tracing::info!(uid = peer.uid, error = %e, "client handshake failed");
            return;
        }
    };
    tracing::debug!(uid = peer.uid, app_version = %hello.app_version, "client connected");

    let queue = Arc::new(SubscriberQueue::new(limits));
    let writer_task = tokio::spawn(write_loop(writer, queue.clone()));

    loop {
        let message = tokio::select! {
            message = reader.read::<ClientMessage>() => message,
            // Cut off (or the writer failed): stop serving this client.
            _ = queue.wait_aborted() => break,
        };
        match message {
            Ok(Some(ClientMessage::Request { id, request })) => {
                let command = Command {
                    id,
                    request,
                    queue: queue.clone(),
                };
                if !engine.send(command).await {
                    queue.abort(Some(IpcError::new(
                        ErrorCode::Internal,
                        "the helper is shutting down",
                    )));
                    break;
                }
            }
            Ok(Some(ClientMessage::Hello(_))) => {
                push_error(
                    &queue,
                    ErrorCode::Protocol,
                    "Hello was already exchanged on this connection",
                );
            }
            Ok(None) => {
                queue.abort(None);
                break;
            }
            Err(ReadError::Malformed(detail)) => {
                tracing::debug!(uid = peer.uid, %detail, "malformed request");
                push_error(
                    &queue,
                    ErrorCode::Malformed,
                    format!("could not read that request: {detail}"),
                );
            }
            Err(ReadError::TooLarge { len, max }) => {
                tracing::info!(uid = peer.uid, len, "refusing an oversize frame");
                push_error(
                    &queue,
                    ErrorCode::FrameTooLarge,
                    format!("a {len}-byte frame exceeds the {max}-byte limit; closing"),
                );
                queue.finish();
                break;
            }
            Err(ReadError::Truncated) => {
                tracing::debug!(uid = peer.uid, "client closed in the middle of a frame");
                queue.abort(None);
                break;
            }
            Err(e) => {
                tracing::debug!(uid = peer.uid, error = %e, "client read failed");
                queue.abort(None);
                break;
            }
        }
    }
    let _ = writer_task.await;
    tracing::debug!(uid = peer.uid, "client disconnected");
}

fn push_error(queue: &SubscriberQueue, code: ErrorCode, message: impl Into<String>) {
    match encode(&HelperMessage::Error(IpcError::new(code, message))) {
        Ok(frame) => {
            queue.push(Outgoing::Frame(frame));
        }
        Err(e) => tracing::error!(error = %e, "could not encode an error frame"),
    }
}

async fn write_loop(mut writer: BoxedWriter, queue: Arc<SubscriberQueue>) {
    let mut seq: u64 = 0;
    loop {
        let frame = match queue.next().await {
            Next::Item(Outgoing::Frame(frame)) => frame,
            Next::Item(Outgoing::Event(event)) => {
                seq = if event.kind == EventKind::StateStart {
                    0
                } else {
                    seq + 1
                };
                match event_frame(seq, &event.json) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::error!(error = %e, "an event does not fit in a frame");
                        queue.abort(Some(IpcError::new(
                            ErrorCode::Internal,
                            "the helper produced an event too large to send; subscribe again",
                        )));
                        continue;
                    }
                }
            }
            Next::Closed(error) => {
                if let Some(error) = error {
                    tracing::info!(reason = %error, "disconnecting a client");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        writer.write(&HelperMessage::Error(error)),
                    )
                    .await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
                return;
            }
        };
        let write = tokio::time::timeout(WRITE_STALL_LIMIT, writer.write_frame(&frame));
        let result = tokio::select! {
            result = write => result,
            _ = queue.wait_aborted() => {
                // Cut off while blocked on a client that is not reading: the
                // frame in flight is abandoned and the connection closed.
                let error = match queue.next().await {
                    Next::Closed(error) => error,
                    Next::Item(_) => None,
                };
                if let Some(error) = error {
                    tracing::info!(reason = %error, "disconnecting a client that stopped reading");
                }
                return;
            }
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "client write failed");
                queue.abort(None);
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "a client stopped reading for {} s; disconnecting it",
                    WRITE_STALL_LIMIT.as_secs()
                );
                queue.abort(None);
                return;
            }
        }
    }
}
