//! The Flight service: `DoPut` only. Each stream is read in order by one task: messages are
//! decoded as they come, and each payload is delivered to its pipeline and acknowledged before
//! the next is read (so acknowledgements come in order, and back-pressure from the pipeline
//! reaches the sender through HTTP/2 flow control).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use sluice_engine::flight::{Decoder, Limits, WireError, WireMessage, check_hello};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{FlightReceiverConfig, Handler, MIB};
use crate::otlp::grpc::TlsConn;

/// How long a new stream may take to send its first message.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Unsupported<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(crate) struct Ingest {
    handler: Arc<Handler>,
    limits: Limits,
    stopped: watch::Receiver<bool>,
}

fn only_do_put<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "this is a sluice flight receiver: it serves DoPut streams from sluice flight exporters only",
    ))
}

/// The status a stream ends with after `e`.
fn status_of(e: &WireError) -> Status {
    match e {
        WireError::Version(m) => Status::failed_precondition(m.clone()),
        WireError::TooLarge(m) => Status::out_of_range(m.clone()),
        WireError::Malformed(m) | WireError::Encode(m) => Status::invalid_argument(m.clone()),
        WireError::Refused(m) => Status::resource_exhausted(m.clone()),
    }
}

#[tonic::async_trait]
impl FlightService for Ingest {
    type HandshakeStream = Unsupported<HandshakeResponse>;
    type ListFlightsStream = Unsupported<FlightInfo>;
    type DoGetStream = Unsupported<FlightData>;
    type DoPutStream = ReceiverStream<Result<PutResult, Status>>;
    type DoExchangeStream = Unsupported<FlightData>;
    type DoActionStream = Unsupported<arrow_flight::Result>;
    type ListActionsStream = Unsupported<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        only_do_put()
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        only_do_put()
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        only_do_put()
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        only_do_put()
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        only_do_put()
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        only_do_put()
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        only_do_put()
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        only_do_put()
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        only_do_put()
    }

    /// Checks the hello, then reads the stream in its own task, answering on the returned
    /// stream of acknowledgements.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let peer = request.remote_addr();
        let mut input = request.into_inner();
        // A client that opens a stream and says nothing holds a task: not for long.
        let first = match tokio::time::timeout(HELLO_TIMEOUT, input.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err(Status::invalid_argument("an empty DoPut stream")),
            Ok(Err(status)) => return Err(self.read_failed(status)),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no hello within {HELLO_TIMEOUT:?}"
                )));
            }
        };
        let cmd = first
            .flight_descriptor
            .as_ref()
            .map(|d| d.cmd.clone())
            .unwrap_or_default();
        let hello = check_hello(&cmd).and_then(|()| {
            if first.data_header.is_empty() && first.data_body.is_empty() {
                Ok(())
            } else {
                Err(WireError::Malformed(
                    "the hello message carries data: data starts with the second message".into(),
                ))
            }
        });
        if let Err(e) = hello {
            self.handler.failed_on(&e);
            tracing::warn!(?peer, error = %e, "flight: stream refused");
            return Err(status_of(&e));
        }
        let (acks, rx) = mpsc::channel(16);
        tokio::spawn(read_stream(
            self.handler.clone(),
            Decoder::new(self.limits),
            input,
            acks,
            peer,
            self.stopped.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Ingest {
    /// A failure reading the request stream (a message over the size limit, a broken
    /// connection), counted when it is the sender's fault.
    fn read_failed(&self, status: Status) -> Status {
        read_failed(&self.handler, status)
    }
}

fn read_failed(handler: &Handler, status: Status) -> Status {
    match status.code() {
        // tonic's answer to a message over max_decoding_message_size.
        tonic::Code::OutOfRange => handler.failed("too_large"),
        tonic::Code::Internal | tonic::Code::InvalidArgument => handler.failed("decode"),
        _ => {}
    }
    status
}

/// Reads one stream to its end: decodes, delivers, acknowledges. Ends with the stream's
/// status on bad data (`INVALID_ARGUMENT`, `FAILED_PRECONDITION` for another version,
/// `OUT_OF_RANGE`), or `UNAVAILABLE` when the receiver shuts down between payloads.
async fn read_stream(
    handler: Arc<Handler>,
    mut decoder: Decoder,
    mut input: Streaming<FlightData>,
    acks: mpsc::Sender<Result<PutResult, Status>>,
    peer: Option<SocketAddr>,
    mut stopped: watch::Receiver<bool>,
) {
    // The reservation of the payload being read: grown as its record batches are decoded,
    // handed to the pipeline with it.
    let mut held = handler.reservation();
    loop {
        let next = tokio::select! {
            biased;
            () = until_stopped(&mut stopped) => {
                let _ = acks.send(Err(Status::unavailable("the receiver is shutting down: send again elsewhere"))).await;
                return;
            }
            next = input.message() => next,
        };
        let data = match next {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(status) => {
                let _ = acks.send(Err(read_failed(&handler, status))).await;
                return;
            }
        };
        let message = WireMessage {
            header: data.data_header,
            body: data.data_body,
            app_metadata: data.app_metadata,
        };
        handler.admit(&mut decoder, &mut held);
        match decoder.decode(&message) {
            Ok(None) => handler.account(&mut decoder, &mut held),
            Ok(Some(decoded)) => {
                let held = std::mem::replace(&mut held, handler.reservation());
                let ack = handler.deliver(decoded, peer, held).await;
                let result = PutResult {
                    app_metadata: ack.to_bytes(),
                };
                if acks.send(Ok(result)).await.is_err() {
                    return; // the sender went away
                }
            }
            Err(e) => {
                handler.failed_on(&e);
                tracing::warn!(?peer, error = %e, "flight: stream ended on bad data");
                let _ = acks.send(Err(status_of(&e))).await;
                return;
            }
        }
    }
}

/// Returns once the receiver is told to stop (or is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The HTTP/2 flow-control window of each stream and connection: how much an exporter may
/// send before this receiver has read it. A Flight connection carries one `DoPut` stream,
/// so its one stream has to carry all of an agent's traffic to this gateway, and hyper's
/// default (1 MiB) capped it: on a busy machine the window is released only as fast as the
/// receiving task gets to run, and an uncompressed 8,192-span batch (~3 MB) needed three
/// round trips of that. The agent benchmark's exporter then fell behind its receivers at
/// ~560 k spans/s and its queue grew by hundreds of MiB, with CPU to spare on both sides.
/// 4 MiB holds such a batch whole; 8 MiB measured the same, and hyper's adaptive window
/// (which starts at 64 KiB) grew in some runs and not in others (BENCHMARKS.md, "One Flight
/// stream, one window"). What it costs: up to this much unread data per connection, when
/// this receiver stops reading (its pipeline holding a payload back).
const FLOW_CONTROL_WINDOW: u32 = 4 * 1024 * 1024;

pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: &FlightReceiverConfig,
    handler: Arc<Handler>,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let max_message = (config.max_recv_msg_size_mib as usize).saturating_mul(MIB);
    let ingest = Ingest {
        handler: handler.clone(),
        limits: config.limits(),
        stopped: stopped.clone(),
    };
    let service = FlightServiceServer::new(ingest)
        .max_decoding_message_size(max_message)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut server = tonic::transport::Server::builder()
        .initial_stream_window_size(FLOW_CONTROL_WINDOW)
        .initial_connection_window_size(FLOW_CONTROL_WINDOW);
    if let Some(n) = config.max_concurrent_streams {
        server = server.max_concurrent_streams(n);
    }
    let router = server.add_service(service);
    let mut stop = stopped;
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        let served = match tls {
            Some(tls) => {
                let failed = handler.clone();
                let connections =
                    sluice_tls::accept_tls(listener, tls, move |_| failed.failed("tls_handshake"));
                let incoming = ReceiverStream::new(connections)
                    .map(|(tls, _peer)| Ok::<_, std::io::Error>(TlsConn(tls)));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "Arrow Flight server stopped with an error");
        }
    })
}
