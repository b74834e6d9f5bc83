//! A server's refusal of the TLS handshake that reaches the client after
//! the connect: which fatal alerts prove the request was never processed.
//!
//! Under TLS 1.3 the client's handshake ends once it sends its Finished
//! (RFC 8446 §4.4.4); the server checks the client's certificate, its
//! CertificateVerify and that Finished only then. So a server that
//! refuses the client certificate (`certificate_required` for none,
//! `unknown_ca`, `bad_certificate` or `decrypt_error` for one it does not
//! trust) answers with a fatal alert after the connector handed the
//! connection on and hyper wrote the request into it. The server never
//! finished the handshake and never decrypted that request.
//!
//! The alerts read so are those RFC 8446 §6.2 defines for the handshake
//! alone, none of which a server sends on an established connection
//! here: `handshake_failure`, the certificate alerts (`bad_certificate`,
//! `unsupported_certificate`, `certificate_revoked`, `certificate_expired`,
//! `certificate_unknown`, `unknown_ca`, `certificate_required`: about the
//! client's certificate, which rustls sends only in the handshake: it
//! offers no post-handshake authentication, §4.6.2, and refuses TLS 1.2
//! renegotiation), `access_denied` ("decided not to proceed with
//! negotiation"), `decrypt_error` (a signature, Finished or PSK binder),
//! `protocol_version`, `insufficient_security`, `inappropriate_fallback`,
//! `missing_extension`, `unsupported_extension`, `unrecognized_name`,
//! `bad_certificate_status_response`, `unknown_psk_identity`,
//! `no_application_protocol`. Not the alerts that can end a connection
//! that carried requests: `close_notify`, `user_canceled`,
//! `unexpected_message`, `bad_record_mac`, `record_overflow`,
//! `decode_error`, `illegal_parameter` (a bad `KeyUpdate`),
//! `internal_error`, nor any alert rustls does not name. A server whose
//! TLS 1.2 renegotiation rustls refused (answered with a
//! `handshake_failure`, as OpenSSL does) asked for it before serving the
//! request it read, so did not process it either. No early data (0-RTT)
//! is sent: [`HttpsClient`](super::HttpsClient)'s configuration leaves it
//! off, as rustls does by default.
//!
//! Where the alert is found: rustls' error inside the `io::Error` of the
//! connection's read (hyper's HTTP/1 client keeps it; its source chain
//! skips it), or that error's text alone over HTTP/2, where h2 keeps an
//! I/O error as its kind and text (`h2::proto::Error::Io`).

use std::error::Error as StdError;

use rustls::AlertDescription;

/// The handshake-only alerts (see the module docs).
const HANDSHAKE_ONLY: [AlertDescription; 19] = [
    AlertDescription::HandshakeFailure,
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateRequired,
    AlertDescription::AccessDenied,
    AlertDescription::DecryptError,
    AlertDescription::ProtocolVersion,
    AlertDescription::InsufficientSecurity,
    AlertDescription::InappropriateFallback,
    AlertDescription::MissingExtension,
    AlertDescription::UnsupportedExtension,
    AlertDescription::UnrecognisedName,
    AlertDescription::BadCertificateStatusResponse,
    AlertDescription::UnknownPSKIdentity,
    AlertDescription::NoApplicationProtocol,
];

/// The prefix of rustls' text for [`rustls::Error::AlertReceived`]
/// (`received fatal alert: {alert:?}`, rustls 0.23).
const ALERT_TEXT: &str = "received fatal alert: ";

/// The server's fatal handshake-only alert that `error` itself reports
/// (rustls' error, or an `io::Error` carrying it or, from h2, its text),
/// as rustls' error.
pub(crate) fn handshake_refusal(error: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return refusal(tls);
    }
    let io = error.downcast_ref::<std::io::Error>()?;
    let inner = io.get_ref()?;
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return refusal(tls);
    }
    if io.kind() != std::io::ErrorKind::InvalidData {
        return None;
    }
    // h2 kept the text only. Error path: one string of an alert's length.
    let text = inner.to_string();
    let name = text.strip_prefix(ALERT_TEXT)?;
    HANDSHAKE_ONLY
        .iter()
        .find(|alert| format!("{alert:?}") == name)
        .map(|&alert| rustls::Error::AlertReceived(alert))
}

fn refusal(tls: &rustls::Error) -> Option<rustls::Error> {
    match tls {
        rustls::Error::AlertReceived(alert) if HANDSHAKE_ONLY.contains(alert) => {
            Some(tls.clone())
        }
        _ => None,
    }
}

/// [`handshake_refusal`] over `error`'s source chain (bounded).
pub(crate) fn refusal_in_chain(error: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    crate::error::chain(error).find_map(handshake_refusal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BoxError;
    use crate::stats::Outcome;
    use std::io;

    fn alert(a: AlertDescription) -> rustls::Error {
        rustls::Error::AlertReceived(a)
    }

    /// As hyper's HTTP/1 client reports it: rustls' error in an `io::Error`.
    fn http1(a: AlertDescription) -> BoxError {
        Box::new(io::Error::new(io::ErrorKind::InvalidData, alert(a)))
    }

    /// As hyper's HTTP/2 client reports it: the text alone.
    fn http2(a: AlertDescription) -> BoxError {
        Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            alert(a).to_string(),
        ))
    }

    #[test]
    fn a_refused_client_certificate_was_never_processed() {
        for a in [
            AlertDescription::CertificateRequired,
            AlertDescription::UnknownCA,
            AlertDescription::BadCertificate,
            AlertDescription::DecryptError,
            AlertDescription::HandshakeFailure,
            AlertDescription::AccessDenied,
            AlertDescription::NoApplicationProtocol,
        ] {
            for error in [http1(a), http2(a)] {
                assert_eq!(refusal_in_chain(error.as_ref()), Some(alert(a)), "{a:?}");
                assert_eq!(
                    crate::service::classify_error(&error),
                    Outcome::ConnectFailure,
                    "{a:?}"
                );
            }
        }
    }

    /// Alerts that can end a connection that carried requests stay the
    /// instance's other error: a POST is not sent again.
    #[test]
    fn alerts_of_an_established_connection_are_not_refusals() {
        for a in [
            AlertDescription::CloseNotify,
            AlertDescription::UserCanceled,
            AlertDescription::UnexpectedMessage,
            AlertDescription::BadRecordMac,
            AlertDescription::RecordOverflow,
            AlertDescription::DecodeError,
            AlertDescription::IllegalParameter,
            AlertDescription::InternalError,
            AlertDescription::NoRenegotiation,
            AlertDescription::Unknown(0xff),
        ] {
            for error in [http1(a), http2(a)] {
                assert_eq!(refusal_in_chain(error.as_ref()), None, "{a:?}");
                assert_eq!(crate::service::classify_error(&error), Outcome::OtherError, "{a:?}");
            }
        }
        // Other rustls errors, and the text under another kind, are not.
        let other: BoxError = Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::DecryptError,
        ));
        assert_eq!(refusal_in_chain(other.as_ref()), None);
        let kind: BoxError = Box::new(io::Error::other(
            "received fatal alert: CertificateRequired",
        ));
        assert_eq!(refusal_in_chain(kind.as_ref()), None);
        let longer: BoxError = Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired and more",
        ));
        assert_eq!(refusal_in_chain(longer.as_ref()), None);
    }
}
