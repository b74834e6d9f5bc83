//! The gRPC status of a call its server reset after reading it, through
//! `grpc::balance` (found by helper 117): the server reads the whole call,
//! then resets the stream. gRPC's PROTOCOL-HTTP2.md maps `CANCEL` to
//! CANCELLED and `INTERNAL_ERROR` to INTERNAL, and tonic's own channel
//! reports those; through the balancer both were UNAVAILABLE, the code
//! gRPC retry policies (gRFC A6) and callers' retry layers read as "never
//! processed" and send again, so a call the server had read could run
//! twice one level up. `REFUSED_STREAM` ("no processing occurred") stays
//! UNAVAILABLE. The server is scripted at the frame level
//! (`common/raw_h2.rs`): no real server resets a read call on demand.
//!
//! Peer: grpc/grpc `doc/PROTOCOL-HTTP2.md`, "Errors"
//! (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md#errors>).

#[path = "common/raw_h2.rs"]
mod raw_h2;

use raw_h2::Event;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::grpc::{self, GrpcRetryLayer};

/// One Health/Check call through a balancer over a server that reads
/// each call whole and resets its stream with `code`: the caller's code,
/// and how many calls the server read whole.
async fn reset_with(code: u32) -> (Code, usize) {
    let (port, mut conns) = raw_h2::listen(None).await;
    let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut conn) = conns.recv().await {
            let read = read_tx.clone();
            tokio::spawn(async move {
                loop {
                    match conn.next().await {
                        Event::Data {
                            stream, end: true, ..
                        }
                        | Event::Headers { stream, end: true } => {
                            let _ = read.send(());
                            conn.send(raw_h2::reset(stream, code));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let source = StaticSource::new()
        .with_list("svc", &format!("127.0.0.1:{port}"))
        .expect("list");
    let builder = LoadBalancer::builder().source(source).service("svc");
    let channel =
        grpc::balance(builder, grpc::h2c_client(), GrpcRetryLayer::new()).expect("balancer");
    let mut client = HealthClient::with_origin(channel, http::Uri::from_static("http://svc"));
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let status = client.check(request).await.expect_err("reset");
    let mut read = 0;
    while read_rx.try_recv().is_ok() {
        read += 1;
    }
    (status.code(), read)
}

#[tokio::test]
async fn a_call_reset_after_it_was_read_keeps_the_reset_code() {
    // CANCEL (0x8): CANCELLED; INTERNAL_ERROR (0x2): INTERNAL. Before:
    // UNAVAILABLE both. Read once each: the balancer retries neither.
    assert_eq!(reset_with(0x8).await, (Code::Cancelled, 1));
    assert_eq!(reset_with(0x2).await, (Code::Internal, 1));
    assert_eq!(reset_with(0xb).await, (Code::ResourceExhausted, 1));
    // FRAME_SIZE_ERROR (0x6): INTERNAL by the document (helper 121).
    assert_eq!(reset_with(0x6).await, (Code::Internal, 1));
    // REFUSED_STREAM (0x7): never processed, UNAVAILABLE (retried by the
    // balancer as a connect failure on its only instance).
    let (code, read) = reset_with(0x7).await;
    assert_eq!(code, Code::Unavailable);
    assert!(read >= 1, "{read}");
}
