//! One GUI or CLI connection.
//!
//! After the `Hello` exchange the reader forwards requests to the engine and
//! the writer drains the connection's queue. The two halves are separate
//! tasks so that a client which stops reading only stalls its own writer,
//! and a malformed frame gets an error reply instead of killing anything.
//! A client cut off for falling behind is told why (`SlowSubscriber`) before
//! the close: the frame in flight is finished, never left half-written.

use crate::engine::{Command, EngineHandle};
use crate::events::{event_frame, EventKind};
use crate::subscribers::{Next, Outgoing, QueueLimits, SubscriberQueue};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};
use warren_ipc::framed::{BoxedWriter, ReadError, WriteError};
use warren_ipc::server::{server_handshake, Accepted};
use warren_proto::frame::encode;
use warren_proto::ipc::{ClientMessage, ErrorCode, HelperMessage, IpcError};

/// A write that makes no progress for this long means the client stopped
/// reading: it is cut off. A client cut off (for this or for overflowing its
/// queue) gets this long again to read the frame in flight and the reason.
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
    let writer_task = tokio::spawn(write_loop(writer, queue.clone(), WRITE_STALL_LIMIT));

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

/// Writes what `queue` yields; a write that makes no progress for
/// `stall_limit` cuts the client off.
async fn write_loop(mut writer: BoxedWriter, queue: Arc<SubscriberQueue>, stall_limit: Duration) {
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
                    // A client cut off for falling behind may still be
                    // catching up: it gets the stall limit to read why.
                    let _ = tokio::time::timeout(
                        stall_limit,
                        writer.write(&HelperMessage::Error(error)),
                    )
                    .await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
                return;
            }
        };
        let outcome = {
            let write = writer.write_frame(&frame);
            tokio::pin!(write);
            tokio::select! {
                result = &mut write => Outcome::Written(result),
                _ = tokio::time::sleep(stall_limit) => {
                    // No progress for the stall limit: the client stopped
                    // reading. It is cut off like one whose queue overflowed
                    // (the reader stops), and told why if it ever reads on.
                    tracing::warn!(
                        "a client stopped reading for {} s; disconnecting it",
                        stall_limit.as_secs_f32()
                    );
                    queue.abort(None);
                    let error = IpcError::new(
                        ErrorCode::SlowSubscriber,
                        format!(
                            "this client stopped reading the helper's updates for {} s and was disconnected; reconnect and subscribe again",
                            stall_limit.as_secs()
                        ),
                    );
                    let deadline = Instant::now() + stall_limit;
                    let finished = matches!(timeout_at(deadline, write).await, Ok(Ok(())));
                    Outcome::CutOff { error, finished, deadline }
                }
                _ = queue.wait_aborted() => {
                    // Cut off while blocked on a client that is not reading.
                    // With a reason to give, the frame in flight is finished
                    // rather than dropped: abandoned half-written, it would
                    // leave the client unable to parse the reason that
                    // follows. The client gets the stall limit from now to
                    // read both.
                    match queue.next().await {
                        Next::Closed(Some(error)) => {
                            let deadline = Instant::now() + stall_limit;
                            let finished =
                                matches!(timeout_at(deadline, write).await, Ok(Ok(())));
                            Outcome::CutOff { error, finished, deadline }
                        }
                        // Gone (or closed without a reason): nothing to tell.
                        Next::Closed(None) | Next::Item(_) => Outcome::Gone,
                    }
                }
            }
        };
        let result = match outcome {
            Outcome::Written(result) => result,
            Outcome::Gone => return,
            Outcome::CutOff {
                error,
                finished,
                deadline,
            } => {
                if finished {
                    tracing::info!(reason = %error, "disconnecting a client that fell behind");
                    let _ = timeout_at(deadline, writer.write(&HelperMessage::Error(error))).await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
                } else {
                    tracing::info!(
                        reason = %error,
                        "disconnecting a client that fell behind and stopped reading (it could not be told why)"
                    );
                }
                return;
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "client write failed");
            queue.abort(None);
            return;
        }
    }
}

/// How one frame's write ended.
enum Outcome {
    Written(Result<(), WriteError>),
    /// The queue was aborted without a reason (the client went away).
    Gone,
    /// The client was cut off with `error` while the frame was in flight
    /// (its queue overflowed, or the write made no progress for the stall
    /// limit); `finished` says whether the frame still went out whole
    /// before `deadline`, so the reason can follow it.
    CutOff {
        error: IpcError,
        finished: bool,
        deadline: Instant,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EncodedEvent;
    use warren_ipc::framed::FramedReader;

    fn padded_event(i: usize) -> EncodedEvent {
        EncodedEvent {
            kind: EventKind::Ordered,
            json: format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(1000)).into(),
        }
    }

    /// Reads what a cut-off client gets: whole events in order, then the
    /// `SlowSubscriber` reason, then the close. Returns the number of events
    /// and the reason.
    async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
        reader: &mut FramedReader<R>,
    ) -> (usize, IpcError) {
        let mut events = 0;
        let last = loop {
            let frame: serde_json::Value =
                tokio::time::timeout(Duration::from_secs(5), reader.read::<serde_json::Value>())
                    .await
                    .expect("the helper neither sent the reason nor closed")
                    .expect("every frame arrives whole")
                    .expect("the reason comes before the close");
            if frame["type"] == "event" {
                assert_eq!(frame["event"]["n"], events, "frames arrive in order");
                events += 1;
            } else {
                break frame;
            }
        };
        let reason = match serde_json::from_value::<HelperMessage>(last.clone()) {
            Ok(HelperMessage::Error(e)) => e,
            other => panic!("expected the SlowSubscriber reason, got {other:?} from {last}"),
        };
        assert_eq!(reason.code, ErrorCode::SlowSubscriber, "{reason:?}");
        let after =
            tokio::time::timeout(Duration::from_secs(5), reader.read::<serde_json::Value>())
                .await
                .expect("the connection closes after the reason");
        assert!(matches!(after, Ok(None)), "{after:?}");
        (events, reason)
    }

    /// A client that stops reading until the helper has cut it off, then
    /// reads again: it gets every frame whole and then the reason, then EOF.
    #[tokio::test]
    async fn a_client_cut_off_mid_frame_still_gets_the_reason_before_the_close() {
        let (client, server) = tokio::io::duplex(4096);
        let writer: BoxedWriter = warren_ipc::framed::FramedWriter::new(Box::new(server));
        let queue = Arc::new(SubscriberQueue::new(QueueLimits {
            max_items: 50,
            max_bytes: 1 << 20,
        }));
        let writer_task = tokio::spawn(write_loop(writer, queue.clone(), WRITE_STALL_LIMIT));

        // The client reads nothing: the writer blocks in the middle of a
        // frame, the queue fills and overflows.
        let mut pushed = 0;
        while queue.push_event(&padded_event(pushed)) {
            pushed += 1;
            tokio::task::yield_now().await;
            assert!(pushed < 10_000, "the queue never cut the client off");
        }
        assert!(queue.is_closed());

        let mut reader = FramedReader::new(client);
        let (events, _) = read_until_closed(&mut reader).await;
        assert!(events > 0 && events < pushed, "{events} of {pushed}");
        writer_task.await.expect("the writer ends");
    }

    /// A client that stops reading while little is happening (its queue
    /// never overflows) is cut off after the stall limit, and still told
    /// why when it reads again.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_told_why_after_the_stall_limit() {
        let (client, server) = tokio::io::duplex(4096);
        let writer: BoxedWriter = warren_ipc::framed::FramedWriter::new(Box::new(server));
        let queue = Arc::new(SubscriberQueue::new(QueueLimits::default()));
        let limit = Duration::from_millis(200);
        let writer_task = tokio::spawn(write_loop(writer, queue.clone(), limit));
        for i in 0..10 {
            assert!(queue.push_event(&padded_event(i)));
        }
        // What is under test is the stall limit itself, so this waits it out.
        tokio::time::sleep(limit * 2).await;
        assert!(queue.is_closed(), "the stalled client was not cut off");

        let mut reader = FramedReader::new(client);
        let (events, reason) = read_until_closed(&mut reader).await;
        assert!(events > 0 && events < 10, "{events}");
        assert!(reason.message.contains("stopped reading"), "{reason:?}");
        writer_task.await.expect("the writer ends");
    }

    /// A cut-off client that never reads again does not hold the writer:
    /// it gives up after the stall limit.
    #[tokio::test]
    async fn a_cut_off_client_that_never_reads_is_dropped_after_the_stall_limit() {
        let (client, server) = tokio::io::duplex(4096);
        let writer: BoxedWriter = warren_ipc::framed::FramedWriter::new(Box::new(server));
        let queue = Arc::new(SubscriberQueue::new(QueueLimits {
            max_items: 3,
            max_bytes: 1 << 20,
        }));
        let limit = Duration::from_millis(300);
        let writer_task = tokio::spawn(write_loop(writer, queue.clone(), limit));
        let mut pushed = 0;
        while queue.push_event(&padded_event(pushed)) {
            pushed += 1;
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(limit * 10, writer_task)
            .await
            .expect("the writer gave up on a client that never reads")
            .expect("the writer ends");
        drop(client);
    }
}
