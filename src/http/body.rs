//! Request bodies read with a clear refusal for each way reading fails: larger than `http.max_body_bytes` is 413,
//! a body that stalls longer than `http.body_timeout_ms` between two pieces is 408, a connection that breaks while
//! sending is 400 — each as `application/problem+json`, like every other refusal.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use super::error::HttpError;

/// The whole body of a request (within the body limit and the body timeout).
#[derive(Debug, Clone)]
pub(crate) struct RequestBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RequestBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, HttpError> {
        Bytes::from_request(request, state)
            .await
            .map(RequestBody)
            .map_err(refusal)
    }
}

/// The refusal for a body that could not be read.
pub(crate) fn refusal(rejection: BytesRejection) -> HttpError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server takes (http.max_body_bytes)",
            )
        }
        BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(e))
            if timed_out(&e) =>
        {
            HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body stalled: send it without long pauses",
            )
        }
        other => HttpError::bad_request(format!("the request body could not be read: {other}")),
    }
}

/// Whether a body error was the body timeout (somewhere in its chain of causes).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    for _ in 0..8 {
        let Some(e) = cause else { return false };
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}
