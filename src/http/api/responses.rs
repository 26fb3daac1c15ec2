//! The error answers that several operations share, each defined once for the OpenAPI document: a handler names a
//! set in its `#[utoipa::path(responses(...))]` beside its own answers (utoipa `IntoResponses`). These types only
//! describe answers, none is ever made: every refusal is a [`Problem`] made by `HttpError`. A tuple listed after a
//! set replaces the set's answer of the same status (the map of answers is keyed by status).

// The variants exist for the OpenAPI document's sake alone: none is ever made.
#![allow(
    dead_code,
    reason = "IntoResponses types describe answers for the OpenAPI document; no value is made"
)]

use utoipa::IntoResponses;

use crate::http::error::Problem;

/// For operations that need an access token.
#[derive(IntoResponses)]
pub(crate) enum Unauthenticated {
    /// The `Authenticated` (or `Admin`) extractor's refusal.
    #[response(
        status = 401,
        description = "No valid access token",
        content_type = "application/problem+json"
    )]
    NoValidToken(Problem),
}

/// For operations open to anyone that read a bearer token when one is given.
#[derive(IntoResponses)]
pub(crate) enum InvalidOptionalToken {
    /// The `MaybeAuthenticated` extractor's refusal.
    #[response(
        status = 401,
        description = "A bearer token was given and is not valid",
        content_type = "application/problem+json"
    )]
    InvalidToken(Problem),
}

/// For the admin operations.
#[derive(IntoResponses)]
pub(crate) enum NotAdmin {
    /// The `Admin` extractor's refusal of other roles.
    #[response(
        status = 403,
        description = "Not an admin",
        content_type = "application/problem+json"
    )]
    NotAdmin(Problem),
}

/// For operations with a JSON body read by `ApiJson`.
#[derive(IntoResponses)]
pub(crate) enum JsonBody {
    /// The body is not JSON.
    #[response(
        status = 400,
        description = "Malformed JSON",
        content_type = "application/problem+json"
    )]
    Malformed(Problem),
    /// No `Content-Type: application/json`.
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    /// A field of the wrong type or shape, missing or unknown, or refused by the validation.
    #[response(
        status = 422,
        description = "Invalid field",
        content_type = "application/problem+json"
    )]
    InvalidField(Problem),
}

/// For operations with query parameters read by `api::query`.
#[derive(IntoResponses)]
pub(crate) enum InvalidQuery {
    /// An unknown or badly typed parameter, or a value out of range.
    #[response(
        status = 422,
        description = "Invalid query parameter",
        content_type = "application/problem+json"
    )]
    InvalidQuery(Problem),
}

/// For operations on one of the caller's streams (`streams::managed`).
#[derive(IntoResponses)]
pub(crate) enum NoSuchStream {
    /// Not a stream the caller may manage (another user's stream is not revealed).
    #[response(
        status = 404,
        description = "No such stream of the caller",
        content_type = "application/problem+json"
    )]
    NoSuchStream(Problem),
}

/// For operations that take the token of a mailed link.
#[derive(IntoResponses)]
pub(crate) enum SpentLink {
    /// The token is unknown, used, expired or replaced by a newer one.
    #[response(
        status = 404,
        description = "The link was used, expired or replaced",
        content_type = "application/problem+json"
    )]
    SpentLink(Problem),
}

/// For operations that check a password (argon2 on the blocking pool, a bounded number at once).
#[derive(IntoResponses)]
pub(crate) enum PasswordChecksBusy {
    /// Every password-check slot is taken.
    #[response(
        status = 503,
        description = "Too many password checks at once",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    Busy(Problem),
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_answers_reach_the_document_and_a_later_tuple_wins() {
        let config = crate::config::Config::defaults().unwrap();
        let (_, doc) = super::super::router(&config);
        let json = serde_json::to_value(&doc).unwrap();
        let signup = &json["paths"]["/api/v1/auth/signup"]["post"]["responses"];
        assert_eq!(signup["400"]["description"], "Malformed JSON");
        assert_eq!(
            signup["400"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert_eq!(
            signup["422"]["description"], "Invalid field (named in `field`)",
            "signup's own 422 replaces the set's"
        );
        assert_eq!(
            signup["503"]["headers"]["Retry-After"]["description"],
            "Seconds to wait"
        );
        let get_stream = &json["paths"]["/api/v1/streams/{name}"]["get"]["responses"];
        assert_eq!(get_stream["401"]["description"], "No valid access token");
        assert_eq!(
            get_stream["404"]["description"],
            "No such stream of the caller"
        );
        assert!(json["components"]["schemas"]["Problem"].is_object());
    }
}
