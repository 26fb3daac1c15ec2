//! Error answers: every refusal is an `application/problem+json` body (RFC 9457) with the right status and a short
//! reason a person can act on, plus the headers the status calls for (`Retry-After`, `WWW-Authenticate`, ...).
//! A refusal about one field of a request names it in the extension member `field`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::rate_limit::Limited;
use crate::auth::validate::FieldError;
use crate::auth::{AccountError, ViewerDenied};
use crate::db::DbError;
use crate::sfu::SfuError;
use crate::sfu::offer::OfferError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub detail: String,
    /// The request field the refusal is about, if any.
    pub field: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The body of every error answer (RFC 9457 problem details), as the OpenAPI document describes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// Always "about:blank": the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// The request field the problem is about (validation errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> HttpError {
        HttpError {
            status,
            detail: detail.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    /// A 422 about one field.
    pub(crate) fn field(field: impl Into<String>, detail: impl Into<String>) -> HttpError {
        let mut e = HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
        e.field = Some(field.into());
        e
    }

    /// 403.
    pub(crate) fn forbidden(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, detail)
    }

    /// 429 with `Retry-After`.
    pub(crate) fn too_many(limited: Limited) -> HttpError {
        let secs = limited.retry_after_secs();
        let mut e = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests: try again in {secs} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            e.headers.push((header::RETRY_AFTER, v));
        }
        e
    }

    /// Adds a header to the answer.
    pub(crate) fn with_header(mut self, name: HeaderName, value: &'static str) -> HttpError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub(crate) fn unauthorized(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, detail)
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
    }

    /// 415 naming the one accepted type in `Accept` (and `accept_header`, e.g. Accept-Post).
    pub(crate) fn unsupported_type(
        expected: &'static str,
        accept_header: &'static str,
    ) -> HttpError {
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

    pub(crate) fn internal(detail: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
        };
        let body = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
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
            SfuError::Offer(OfferError::Malformed(_)) | SfuError::OfferCandidates { .. } => {
                HttpError::bad_request(detail)
            }
            SfuError::TrickleCandidates { .. } => {
                HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            }
            SfuError::TooManyPending => HttpError::new(StatusCode::TOO_MANY_REQUESTS, detail)
                .with_header(header::RETRY_AFTER, "5"),
            SfuError::Offer(OfferError::Unsupported(_))
            | SfuError::IncompatibleCodec(_)
            | SfuError::Negotiation(_)
            | SfuError::NoSuchLayer(_) => HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, detail),
            // The publisher may be one that is just going (OBS reconnecting): try again shortly.
            SfuError::PublisherExists(_) => {
                HttpError::new(StatusCode::CONFLICT, detail).with_header(header::RETRY_AFTER, "5")
            }
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
            DbError::Limit(m) => HttpError::forbidden(m),
            DbError::NotRecordable(m) => HttpError::new(StatusCode::CONFLICT, m),
            other => {
                tracing::error!(error = %other, "database error");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
                    .with_header(header::RETRY_AFTER, "5")
            }
        }
    }
}

impl From<FieldError> for HttpError {
    fn from(e: FieldError) -> HttpError {
        HttpError::field(e.field, e.to_string())
    }
}

impl From<Limited> for HttpError {
    fn from(l: Limited) -> HttpError {
        HttpError::too_many(l)
    }
}

impl From<AccountError> for HttpError {
    fn from(e: AccountError) -> HttpError {
        let detail = e.to_string();
        match e {
            AccountError::Field(f) => f.into(),
            AccountError::BadCredentials | AccountError::RefreshRefused => {
                HttpError::unauthorized(detail)
            }
            AccountError::Unauthenticated(m) => HttpError::unauthorized(m),
            AccountError::Unverified | AccountError::Disabled | AccountError::SignupClosed => {
                HttpError::forbidden(detail)
            }
            AccountError::WrongPassword => {
                let mut e = HttpError::forbidden(detail);
                e.field = Some("current_password".into());
                e
            }
            AccountError::BadLink => {
                let mut e = HttpError::not_found(detail);
                e.field = Some("token".into());
                e
            }
            AccountError::Limited(l) => HttpError::too_many(l),
            AccountError::Busy => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
                .with_header(header::RETRY_AFTER, "1"),
            AccountError::Db(db) => db.into(),
            AccountError::Internal(m) => {
                tracing::error!(error = %m, "internal error in an account request");
                HttpError::internal("internal error")
            }
        }
    }
}

impl From<ViewerDenied> for HttpError {
    fn from(e: ViewerDenied) -> HttpError {
        match e {
            ViewerDenied::WrongStream => HttpError::forbidden(e.to_string()),
            other => HttpError::unauthorized(other.to_string()),
        }
    }
}
