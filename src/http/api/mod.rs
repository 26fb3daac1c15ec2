//! The REST API under `/api/v1`: accounts, streams (with their broadcasts and chunks), admin resources, the
//! cluster view, and the OpenAPI document of all of it at `/api/v1/openapi.json`, generated from these handlers
//! (utoipa), so the document and the server cannot drift apart.
//!
//! One file per concern: `accounts` (sign-up to password change), `streams`, `viewer_tokens`, `broadcasts` (and
//! their chunks), `live`, `admin`, `cluster`; `responses` holds the error answers they share in the document, and
//! this file the document's frame and the extractors they share.
//!
//! Every refusal is `application/problem+json`, including malformed JSON (400), a wrong content type (415), a
//! field of the wrong type or shape (422, naming the field) and a missing or bad bearer token (401). Handlers
//! never trust a token's claims for authority: the session and the role are read from the database.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod broadcasts;
pub(crate) mod cluster;
pub(crate) mod live;
pub(crate) mod responses;
pub(crate) mod streams;
pub(crate) mod viewer_tokens;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::HttpError;
use super::negotiation::{bearer, has_content_type};
use crate::auth::CurrentUser;

/// The OpenAPI document's frame; the paths come from the handlers registered in [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "zipIQ API",
        description = "Accounts, streams, broadcasts and chunks, and admin resources of a zipIQ server. \
            Authenticate with `Authorization: Bearer <access token>` from /api/v1/auth/login. Errors are \
            RFC 9457 problem details. WHIP (/whip/{stream}) and WHEP (/whep/{stream}) are SDP protocols \
            described by RFC 9725 and draft-ietf-wish-whep, not here.",
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later")
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Sign up, verify, log in, refresh, log out, reset and change passwords"),
        (name = "streams", description = "Streams of the logged-in user, their keys and viewer tokens"),
        (name = "archive", description = "Broadcasts of a stream and their chunks"),
        (name = "admin", description = "Users and the audit log (admins only)"),
        (name = "live", description = "What is live now")
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme (JWT access tokens).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// One constraint the document must state because the validation enforces it.
enum Constraint {
    Pattern(String),
    Length { min: usize, max: usize },
    Range { min: u64, max: u64 },
}

fn property_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;
    let components = openapi.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(property)? {
        RefOr::T(Schema::Object(p)) => Some(p),
        _ => None,
    }
}

/// Writes the validation rules that come from the configuration or from shared code (password lengths, the
/// email and token patterns, viewer-token lifetimes) into the document. Returns the (schema, property) pairs it
/// could not find (a test keeps this empty).
pub(crate) fn constrain(
    openapi: &mut utoipa::openapi::OpenApi,
    config: &crate::config::Config,
) -> Vec<String> {
    use crate::auth::passwords::MAX_PASSWORD_CHARS;
    use crate::auth::tokens;
    use crate::auth::validate::{EMAIL_PATTERN, MAX_EMAIL_CHARS};
    let new_password = || Constraint::Length {
        min: config.auth.password_min_length,
        max: MAX_PASSWORD_CHARS,
    };
    let given_password = || Constraint::Length {
        min: 1,
        max: MAX_PASSWORD_CHARS,
    };
    let email = || Constraint::Pattern(EMAIL_PATTERN.to_owned());
    let token = |prefix: &str| {
        Constraint::Pattern(format!(
            "^{prefix}[A-Za-z0-9_-]{{{}}}$",
            tokens::TOKEN_BODY_CHARS
        ))
    };
    let rules = [
        ("SignupRequest", "email", email()),
        ("SignupRequest", "password", new_password()),
        ("LoginRequest", "email", email()),
        ("LoginRequest", "password", given_password()),
        ("ResetRequest", "email", email()),
        ("ResetConfirm", "password", new_password()),
        ("ResetConfirm", "token", token(tokens::RESET_PREFIX)),
        ("VerifyRequest", "token", token(tokens::VERIFY_PREFIX)),
        (
            "RefreshRequest",
            "refresh_token",
            token(tokens::REFRESH_PREFIX),
        ),
        ("PasswordChange", "current_password", given_password()),
        ("PasswordChange", "new_password", new_password()),
        (
            "ViewerTokenRequest",
            "ttl_seconds",
            Constraint::Range {
                min: 1,
                max: config.auth.viewer_token_max_ttl_s,
            },
        ),
    ];
    let mut missing = Vec::new();
    for (schema, property, rule) in rules {
        let Some(p) = property_mut(openapi, schema, property) else {
            missing.push(format!("{schema}.{property}"));
            continue;
        };
        match rule {
            Constraint::Pattern(pattern) => {
                p.pattern = Some(pattern);
                p.max_length = Some(MAX_EMAIL_CHARS.max(tokens::MAX_TOKEN_CHARS));
            }
            Constraint::Length { min, max } => {
                p.min_length = Some(min);
                p.max_length = Some(max);
            }
            Constraint::Range { min, max } => {
                p.minimum = Some(utoipa::Number::UInt(min as usize));
                p.maximum = Some(utoipa::Number::UInt(max as usize));
            }
        }
    }
    missing
}

/// The API routes and their OpenAPI document.
pub(crate) fn router(
    config: &crate::config::Config,
) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(streams::router())
        .merge(viewer_tokens::router())
        .merge(broadcasts::router())
        .merge(live::router())
        .merge(admin::router())
        .merge(cluster::router())
        .split_for_parts();
    for missing in constrain(&mut openapi, config) {
        tracing::error!(property = %missing, "OpenAPI document: no such property to constrain");
    }
    let document = openapi.clone();
    let router = router.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { Json(document).into_response() }
        }),
    );
    (router, openapi)
}

/// A JSON request body whose every refusal is a problem answer: 415 without `Content-Type: application/json`,
/// 413 over the body limit, 400 for malformed JSON, 422 naming the field for a value of the wrong type, a missing
/// field or an unknown one.
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_content_type(request.headers(), "application/json") {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            )
            .with_header(axum::http::header::ACCEPT, "application/json"));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(crate::http::body::refusal)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Decodes a JSON body (which must be an object), naming the field of a type error. Numbers with no fraction
/// (`7.0`) count as integers, as JSON Schema says.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(HttpError::field("body", "the body must be a JSON object"));
    }
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." {
            field_of_message(&inner.to_string()).unwrap_or_else(|| "body".into())
        } else {
            path
        };
        HttpError::field(field.clone(), format!("{field}: {inner}"))
    })
}

/// Replaces every float with no fractional part that fits an i64 or u64 by that integer.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *value = serde_json::Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// The field named in a serde message such as "missing field `email`" or "unknown field `x`, expected ...".
fn field_of_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// A path parameter whose rejection (say, invalid percent-encoding) is a problem answer: 404, since no resource
/// has such a name.
#[derive(Debug, Clone)]
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| HttpError::not_found(format!("no such resource: {}", e.body_text())))
    }
}

/// Query strings: unknown or badly typed parameters are 422 naming the parameter.
pub(crate) fn query<T: DeserializeOwned>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, HttpError> {
    q.map(|axum::extract::Query(v)| v).map_err(|e| {
        let text = e.body_text();
        let field = text
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "query".into());
        HttpError::field(field, text)
    })
}

/// The logged-in user (a valid access token of an open session); 401 otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub CurrentUser);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(HttpError::unauthorized(
                "this needs an access token: Authorization: Bearer <token> (from /api/v1/auth/login)",
            ));
        };
        let token = token.to_owned();
        Ok(Authenticated(
            state.auth.authenticate(&state.db, &token).await?,
        ))
    }
}

/// The logged-in user when there is a bearer token, else nobody; a bad token is still a 401.
#[derive(Debug, Clone)]
pub(crate) struct MaybeAuthenticated(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if bearer(&parts.headers).is_none() {
            return Ok(MaybeAuthenticated(None));
        }
        let Authenticated(user) = Authenticated::from_request_parts(parts, state).await?;
        Ok(MaybeAuthenticated(Some(user)))
    }
}

/// A logged-in admin; 401 without a valid token, 403 for other roles.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated(user) = Authenticated::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(HttpError::forbidden("this needs the admin role"));
        }
        Ok(Admin(user))
    }
}

/// A short JSON acknowledgement (`202 Accepted` answers).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    pub detail: String,
}

/// `202` with a detail.
pub(crate) fn accepted(detail: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            detail: detail.to_owned(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_validation_rule_reaches_the_document() {
        let config = crate::config::Config::defaults().unwrap();
        let (_, doc) = router(&config);
        let mut fresh = doc.clone();
        assert!(constrain(&mut fresh, &config).is_empty());
        let json = serde_json::to_value(&doc).unwrap();
        let signup = &json["components"]["schemas"]["SignupRequest"]["properties"];
        assert_eq!(signup["password"]["minLength"], 10);
        assert_eq!(
            signup["email"]["pattern"],
            crate::auth::validate::EMAIL_PATTERN
        );
        let ttl = &json["components"]["schemas"]["ViewerTokenRequest"]["properties"]["ttl_seconds"];
        assert_eq!(ttl["maximum"], 604800);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(
        dead_code,
        reason = "only deserialized, to see which field the parser names; never read"
    )]
    struct Body {
        email: String,
        ttl: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"email": 3}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("email"));
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("email"));
        let e = parse_json::<Body>(br#"{"email": "a", "ttl": -1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ttl"));
        let e = parse_json::<Body>(br#"{"email": "a", "x": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"));
        let e = parse_json::<Body>(br#"{"email": "#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<Body>(br#"{"email": "a"} trailing"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Body>(br#"{"email": "a"}"#).is_ok());
        let e = parse_json::<Body>(br#"["a", null]"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "arrays are not objects");
        let b = parse_json::<Body>(br#"{"email": "a", "ttl": 7.0}"#).unwrap();
        assert_eq!(b.ttl, Some(7));
        let e = parse_json::<Body>(br#"{"email": "a", "ttl": 7.5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ttl"));
    }
}
