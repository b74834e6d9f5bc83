//! SRV target lookups against a scripted server on 127.0.0.1 that
//! answers only once enough queries wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use super::served_tests::{a, config, name};
use super::{DnsSource, DnsTarget};

/// SRV targets with no address in the additional section are looked up
/// 16 at a time, not one after the other: 32 targets behind a server
/// answering A queries only once 16 wait (a far or busy server, whose
/// round trips add up) resolve. Before, the lookups were sequential: one
/// query in flight at a time, never answered, and the resolution ran into
/// `resolve_timeout` (a 256-target answer at 40 ms a round trip needs 10 s
/// one by one, the default timeout, so such a service never resolved).
/// Queries in flight at most: 3 before (the first target's, sent again;
/// then `DnsError::Timeout` after 3 s), 16 now (32 instances).
#[tokio::test]
async fn srv_targets_are_looked_up_concurrently() {
    use hickory_resolver::proto::op::Message;
    use std::sync::atomic::AtomicUsize;
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let server = socket.local_addr().unwrap();
    let most = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&most);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut held = Vec::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = query.queries.first().cloned() else {
                continue;
            };
            let qname = q.name().to_ascii();
            let mut response = Message::error_msg(
                query.metadata.id,
                query.metadata.op_code,
                ResponseCode::NoError,
            );
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.add_query(q.clone());
            if q.query_type() == RecordType::SRV {
                response.add_answers((0..32u8).map(|n| {
                    let srv = SRV::new(0, 1, 8080, name(&format!("t{n}.test.")));
                    Record::from_rdata(name(&qname), 30, RData::SRV(srv))
                }));
                let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
                continue;
            }
            let last = qname.trim_start_matches('t').split('.').next();
            let last: u8 = last.and_then(|d| d.parse().ok()).unwrap_or(0);
            response.add_answer(a(&qname, last + 1));
            held.push((response.to_vec().unwrap(), from));
            seen.fetch_max(held.len(), Ordering::SeqCst);
            if held.len() >= 16 {
                for (bytes, to) in held.drain(..) {
                    let _ = socket.send_to(&bytes, to).await;
                }
            }
        }
    });
    let source = DnsSource::new(
        config(server)
            .ip_family(super::IpFamily::V4)
            .resolve_timeout(Duration::from_secs(3)),
    )
    .unwrap()
    .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
    .unwrap();
    let resolved = source.resolve("users").await.unwrap();
    let most = most.load(Ordering::SeqCst);
    println!("queries in flight at most: {most}; {:?}", resolved.as_ref().map(Vec::len));
    assert_eq!(resolved.unwrap().len(), 32);
    assert_eq!(most, 16);
}
