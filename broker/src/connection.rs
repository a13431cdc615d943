//! One client connection: frames in, responses out, in request order.
//!
//! Requests on a connection are pipelined: up to `MAX_IN_FLIGHT` are decoded and handled concurrently,
//! and responses are written strictly in the order the requests arrived (Kafka's ordering guarantee).
//! A frame longer than `socket.request.max.bytes` is refused by the length-delimited codec from its
//! 4-byte length alone, before any buffer is allocated for it. A frame that does not decode closes this
//! connection only (with a log line and the `strata_malformed_frames` counter).
//!
//! Shutdown: when the broker's token fires the connection stops reading new requests, finishes the ones
//! in flight, writes their responses and closes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::codec::{self, Frame};
use crate::handlers;
use crate::services::Services;

/// Requests handled concurrently per connection before reading pauses.
pub const MAX_IN_FLIGHT: usize = 64;

type Pending = futures::future::BoxFuture<'static, Result<Option<Bytes>, codec::FrameError>>;

/// Serves one connection until the peer closes it, a frame is malformed, or shutdown.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Services>,
    shutdown: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    broker.metrics.connections.inc();
    let (rd, wr) = stream.into_split();
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(broker.config.broker.socket_request_max_bytes as usize)
        .new_codec();
    let mut frames = FramedRead::with_capacity(rd, codec, 64 * 1024);
    let mut out = BufWriter::with_capacity(64 * 1024, wr);
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut reading = true;
    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                match done {
                    Ok(Some(bytes)) => {
                        if let Err(e) = out.write_all(&bytes).await {
                            tracing::debug!(%peer, error = %e, "write failed; closing");
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e @ codec::FrameError::AcksZeroFailed) => {
                        tracing::debug!(%peer, error = %e, "closing connection");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "closing connection");
                        break;
                    }
                }
                if in_flight.is_empty() {
                    if let Err(e) = out.flush().await {
                        tracing::debug!(%peer, error = %e, "flush failed; closing");
                        break;
                    }
                }
            }
            frame = frames.next(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
                match frame {
                    None => reading = false,
                    // The length-delimited codec reports an oversized frame as InvalidData; any other
                    // error is the socket failing (a reset by the client), not a malformed frame.
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                        broker.metrics.malformed_frames.inc();
                        tracing::warn!(%peer, error = %e, "refusing frame; closing connection");
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection read failed; closing");
                        break;
                    }
                    Some(Ok(frame)) => match codec::decode_frame(frame.freeze()) {
                        Ok(Frame::Request(req)) => {
                            in_flight.push_back(handlers::handle(broker.clone(), *req, peer).boxed());
                        }
                        Ok(Frame::ApiVersionsFallback { correlation_id }) => {
                            let resp = codec::api_versions_fallback(correlation_id).map(Some);
                            in_flight.push_back(futures::future::ready(resp).boxed());
                        }
                        Err(e) => {
                            broker.metrics.malformed_frames.inc();
                            tracing::warn!(%peer, error = %e, "malformed request; closing connection");
                            break;
                        }
                    },
                }
            }
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
    let _ = out.flush().await;
    let _ = out.into_inner().shutdown().await;
    broker.metrics.connections.dec();
}
