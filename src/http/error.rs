//! Error answers: every refusal is an `application/problem+json` body (RFC 9457) with the right status and a short
//! reason a person can act on, plus the headers the status calls for (`Retry-After`, `WWW-Authenticate`, ...).

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::sfu::SfuError;
use crate::sfu::offer::OfferError;

/// An error answer.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub detail: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> HttpError {
        HttpError {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> HttpError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, detail)
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
    }

    /// 415 naming the one accepted type in `Accept` (and `accept_header`, e.g. Accept-Post).
    pub fn unsupported_type(expected: &'static str, accept_header: &'static str) -> HttpError {
        let mut e = HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {expected}"),
        )
        .with_header(header::ACCEPT, expected);
        e.headers.push((
            HeaderName::from_static(accept_header),
            HeaderValue::from_static(expected),
        ));
        e
    }

    pub fn internal(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<SfuError> for HttpError {
    fn from(e: SfuError) -> HttpError {
        let detail = e.to_string();
        match e {
            SfuError::Offer(OfferError::Malformed(_)) => HttpError::bad_request(detail),
            SfuError::Offer(OfferError::Unsupported(_))
            | SfuError::IncompatibleCodec(_)
            | SfuError::Negotiation(_)
            | SfuError::NoSuchLayer(_) => HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, detail),
            SfuError::PublisherExists(_) => HttpError::new(StatusCode::CONFLICT, detail),
            SfuError::NotLive(_) => {
                HttpError::new(StatusCode::CONFLICT, detail).with_header(header::RETRY_AFTER, "2")
            }
            SfuError::Overloaded | SfuError::ShuttingDown => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
                    .with_header(header::RETRY_AFTER, "10")
            }
            SfuError::SessionNotFound => HttpError::not_found(detail),
            SfuError::Internal(_) => {
                tracing::error!(error = %detail, "internal error in the SFU");
                HttpError::internal("internal error")
            }
        }
    }
}

impl From<DbError> for HttpError {
    fn from(e: DbError) -> HttpError {
        match e {
            DbError::NotFound(m) => HttpError::not_found(m),
            DbError::Conflict(m) => HttpError::new(StatusCode::CONFLICT, m),
            other => {
                tracing::error!(error = %other, "database error");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
                    .with_header(header::RETRY_AFTER, "5")
            }
        }
    }
}
