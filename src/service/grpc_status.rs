//! gRPC's status on the wire, read as the HTTP status it stands for, so the
//! classification of every response (stats, breaker, outlier ejection,
//! retries) sees trailers-only gRPC failures through any inner client.
//! Public as [`crate::grpc`]'s functions.

use http::{HeaderMap, StatusCode};

/// The gRPC status code in `headers` (`grpc-status`), if present and a
/// number.
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok())
}

/// Whether `headers` carry a gRPC content type (`application/grpc`,
/// `application/grpc+proto`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The HTTP status a gRPC status code stands for, as Envoy's
/// `Grpc::Utility::grpcToHttpStatus`: OK 200, CANCELLED 499, UNKNOWN 500,
/// INVALID_ARGUMENT 400, DEADLINE_EXCEEDED 504, NOT_FOUND 404,
/// ALREADY_EXISTS 409, PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429,
/// FAILED_PRECONDITION 400, ABORTED 409, OUT_OF_RANGE 400, UNIMPLEMENTED
/// 501, INTERNAL 500, UNAVAILABLE 503, DATA_LOSS 500, UNAUTHENTICATED 401;
/// any other code 500.
pub fn http_status_for(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

/// The HTTP status the balancer should classify a response by: for a gRPC
/// response (gRPC content type, HTTP 200) whose headers carry a
/// `grpc-status` (a trailers-only response), the status
/// [`http_status_for`] that code; otherwise `status` itself.
pub fn effective_status(status: StatusCode, headers: &HeaderMap) -> u16 {
    if status == StatusCode::OK && is_grpc(headers) {
        if let Some(code) = grpc_status(headers) {
            return http_status_for(code);
        }
    }
    status.as_u16()
}
