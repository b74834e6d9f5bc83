//! Unit tests of the TLS client builder.

use super::*;

#[test]
fn bad_pem_is_typed() {
    let no_cert = HttpsClient::builder().add_root_pem(b"hello");
    assert!(matches!(
        no_cert,
        Err(TlsError::Missing {
            what: "certificate"
        })
    ));
    let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let err = HttpsClient::builder().add_root_pem(broken).err();
    assert!(
        matches!(
            err,
            Some(TlsError::Pem {
                what: "root certificates",
                ..
            })
        ),
        "{err:?}"
    );
    let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let built = HttpsClient::builder()
        .add_root_pem(not_der)
        .and_then(|b| b.client_config());
    assert!(
        matches!(
            built,
            Err(TlsError::Rustls {
                what: "root certificate",
                ..
            })
        ),
        "{built:?}"
    );
    let no_key = HttpsClient::builder().client_auth_pem(not_der, b"nothing");
    assert!(matches!(
        no_key,
        Err(TlsError::Missing {
            what: "private key"
        })
    ));
}

#[test]
fn no_roots() {
    let built = HttpsClient::builder().webpki_roots(false).client_config();
    assert!(matches!(built, Err(TlsError::NoRoots)), "{built:?}");
    let message = TlsError::NoRoots.to_string();
    assert!(message.contains("add_root_pem"), "{message}");
}

#[tokio::test]
async fn builds_with_webpki_roots() {
    let client = HttpsClient::builder().build::<http_body_util::Empty<bytes::Bytes>>();
    assert!(client.is_ok());
}

/// The balancer clones its inner service per request: a clone shares the
/// one hyper-util client (one reference count) instead of cloning it
/// (several: executor, pool, connector, TLS configuration).
#[tokio::test]
async fn clones_share_one_client() {
    let client: HttpsClient = HttpsClient::builder().build().expect("webpki roots");
    let clone = client.clone();
    assert!(std::ptr::eq(client.inner(), clone.inner()));
    assert_eq!(Arc::strong_count(&client.inner), 2);
    drop(clone);
    assert_eq!(Arc::strong_count(&client.inner), 1);
}
