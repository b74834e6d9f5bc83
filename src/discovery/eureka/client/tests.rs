//! Unit tests of the Eureka HTTP client.

use super::*;

#[test]
fn a_time_out_may_deliver_an_answer_does_not() {
    let server = "http://a/eureka".to_owned();
    let timeout = DiscoveryError::Timeout {
        server: server.clone(),
        after: std::time::Duration::from_secs(1),
    };
    let status = DiscoveryError::Status { server, status: 503 };
    assert!(maybe_delivered(&timeout));
    assert!(!maybe_delivered(&status));
    assert!(!maybe_delivered(&DiscoveryError::AllServersFailed(vec![
        status
    ])));
    // A gateway's 502 or 504: it may have passed the call on.
    for code in [502, 504] {
        let gateway = DiscoveryError::Status {
            server: "http://gw/eureka".to_owned(),
            status: code,
        };
        assert!(maybe_delivered(&gateway), "{code}");
        assert!(maybe_delivered(&DiscoveryError::AllServersFailed(vec![
            gateway
        ])));
    }
}
