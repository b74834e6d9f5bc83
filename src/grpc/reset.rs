//! The gRPC code of an HTTP/2 stream reset, as gRPC's PROTOCOL-HTTP2.md
//! maps it (see [`h2_reset_code`]).

use crate::error::BoxError;

/// The gRPC code of an HTTP/2 stream the server reset (`RST_STREAM`, or
/// a `GOAWAY`'s error code), as gRPC's PROTOCOL-HTTP2.md maps it and
/// tonic's own channel reports it: `CANCEL` is CANCELLED and
/// `INTERNAL_ERROR` INTERNAL, not the UNAVAILABLE that gRPC retry
/// policies (gRFC A6) and callers' retry layers take as "never processed"
/// and send again. Through the balancer both were UNAVAILABLE, so a call
/// the server had read could be sent twice one level up (helper 117).
/// `REFUSED_STREAM` stays UNAVAILABLE (no processing occurred);
/// `FRAME_SIZE_ERROR` and `HTTP_1_1_REQUIRED` are INTERNAL, as the
/// document says (tonic's own table leaves them UNKNOWN); a code it does
/// not map (`STREAM_CLOSED`, an unknown one) is UNKNOWN.
pub(super) fn h2_reset_code(error: &BoxError) -> Option<tonic::Code> {
    for e in crate::error::chain(error.as_ref()) {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return Some(match reason {
                h2::Reason::REFUSED_STREAM => tonic::Code::Unavailable,
                h2::Reason::CANCEL => tonic::Code::Cancelled,
                h2::Reason::ENHANCE_YOUR_CALM => tonic::Code::ResourceExhausted,
                h2::Reason::INADEQUATE_SECURITY => tonic::Code::PermissionDenied,
                h2::Reason::NO_ERROR
                | h2::Reason::PROTOCOL_ERROR
                | h2::Reason::INTERNAL_ERROR
                | h2::Reason::FLOW_CONTROL_ERROR
                | h2::Reason::SETTINGS_TIMEOUT
                | h2::Reason::FRAME_SIZE_ERROR
                | h2::Reason::COMPRESSION_ERROR
                | h2::Reason::CONNECT_ERROR
                | h2::Reason::HTTP_1_1_REQUIRED => tonic::Code::Internal,
                _ => tonic::Code::Unknown,
            });
        }
    }
    None
}
