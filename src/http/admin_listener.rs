//! The admin listener: its routes (Prometheus metrics and the archive's operator endpoints: status, retrying dead
//! jobs, disabling and enabling wallets) and the guard in front of them.
//!
//! The admin listener is meant for operators' tools (curl, Prometheus), never for browsers. So it refuses what only
//! browsers send or what a browser could be tricked into sending: any request with an `Origin` header (cross-site
//! form posts and scripted requests), any `Host` that is not the listener's own address (DNS rebinding: a hostile
//! page whose name resolves to 127.0.0.1 would be same-origin with the listener), and POST bodies that are not
//! JSON (a form can only send form or text bodies). An optional admin token, read from a file or the systemd
//! credential `admin-token`, is then required as `Authorization: Bearer`, compared in constant time. Refusals are
//! problem+json with the reason; the token is never logged.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::HttpError;
use crate::archive::worker::Archiver;
use crate::config::AdminConfig;
use crate::db::Db;
use crate::secrets::{self, SecretError, SecretSource};

/// The systemd credential holding the admin token.
pub(crate) const TOKEN_CREDENTIAL: &str = "admin-token";
/// Shortest admin token accepted.
pub(crate) const TOKEN_MIN_LEN: usize = 16;
/// Largest POST body the admin listener reads.
const MAX_BODY: usize = 64 * 1024;

/// What the guard lets through.
#[derive(Clone)]
pub(crate) struct AdminGuard {
    bound: SocketAddr,
    /// (host, port) pairs; no port: the listener's.
    allowed_hosts: Vec<(String, Option<u16>)>,
    token: Option<Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for AdminGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGuard")
            .field("bound", &self.bound)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Why the admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("the admin token in {path} is empty")]
    Empty { path: std::path::PathBuf },
    #[error("the admin token in {path} is shorter than {TOKEN_MIN_LEN} characters")]
    Short { path: std::path::PathBuf },
}

/// Reads the admin token: the credential `admin-token` in `credentials` (systemd's `$CREDENTIALS_DIRECTORY`) wins
/// over `admin.token_file`. An empty credential means no token (the installer creates it empty, and systemd needs
/// the file to exist); an empty or missing configured file is an error, never silently no token.
pub(crate) fn load_token(
    config: &AdminConfig,
    credentials: Option<&Path>,
) -> Result<Option<Zeroizing<String>>, TokenError> {
    let source = match credentials {
        Some(dir) if dir.join(TOKEN_CREDENTIAL).is_file() => {
            SecretSource::Credential(dir.join(TOKEN_CREDENTIAL))
        }
        _ if config.token_file.as_os_str().is_empty() => return Ok(None),
        _ => SecretSource::File(config.token_file.clone()),
    };
    let token = Zeroizing::new(secrets::read(source.path())?);
    let path = source.path().to_owned();
    match (&source, token.chars().count()) {
        (SecretSource::Credential(_), 0) => Ok(None),
        (SecretSource::File(_), 0) => Err(TokenError::Empty { path }),
        (_, n) if n < TOKEN_MIN_LEN => Err(TokenError::Short { path }),
        _ => Ok(Some(token)),
    }
}

impl AdminGuard {
    pub(crate) fn new(
        bound: SocketAddr,
        config: &AdminConfig,
        token: Option<Zeroizing<String>>,
    ) -> Self {
        AdminGuard {
            bound,
            // Entries are checked by config validation; one that still does not parse matches nothing.
            allowed_hosts: config
                .allowed_hosts
                .iter()
                .filter_map(|h| h.trim().parse::<axum::http::uri::Authority>().ok())
                .map(|a| (a.host().to_ascii_lowercase(), a.port_u16()))
                .collect(),
            token: token.map(Arc::new),
        }
    }

    /// Whether the listener requires a token.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `value` (a `Host` header or the request's authority) names this listener.
    pub(crate) fn host_allowed(&self, value: &str) -> bool {
        let value = value.trim();
        if value.contains('@') {
            return false;
        }
        let Ok(authority) = value.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(80);
        // Names the operator allowed: "name" on the listener's port, or "name:port" exactly.
        if self
            .allowed_hosts
            .iter()
            .any(|(name, p)| *name == host && port == p.unwrap_or(self.bound.port()))
        {
            return true;
        }
        if port != self.bound.port() {
            return false;
        }
        let listen = self.bound.ip();
        if host == "localhost" {
            return listen.is_loopback() || listen.is_unspecified();
        }
        // An IP literal cannot be rebound by DNS; it must be the listener's own (any, when bound to all).
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => listen.is_unspecified() || ip == listen,
            Err(_) => false,
        }
    }

    fn token_matches(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        }) else {
            return false;
        };
        given.as_bytes().ct_eq(expected.as_bytes()).into()
    }
}

fn refuse(status: StatusCode, detail: String) -> Response {
    tracing::info!(status = status.as_u16(), reason = %detail, "admin request refused");
    HttpError::new(status, detail).into_response()
}

/// The middleware: origin, host, token, then the POST body (JSON or nothing).
pub(crate) async fn guard(
    State(guard): State<AdminGuard>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if let Some(refused) = refusal(
        &guard,
        request.method(),
        request.headers(),
        authority.as_deref(),
    ) {
        return refused;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("admin POST bodies are at most {MAX_BODY} bytes"),
            );
        }
    };
    if !bytes.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<serde_json::Value>(&bytes).is_err()
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body is not JSON (send {} or nothing)".into(),
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Builds the refusal, if any, of a request's head.
fn refusal(
    guard: &AdminGuard,
    method: &Method,
    headers: &axum::http::HeaderMap,
    authority: Option<&str>,
) -> Option<Response> {
    if headers.contains_key(header::ORIGIN) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "the admin listener refuses requests with an Origin header: browsers may not call it"
                .into(),
        ));
    }
    // The Host header, and the authority of an absolute-form request line: each must name this listener.
    let host = headers
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let names: Vec<&str> = host.into_iter().chain(authority).collect();
    if names.is_empty() {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "the request has no Host: the admin listener answers requests naming its address only"
                .into(),
        ));
    }
    if let Some(wrong) = names.iter().find(|name| !guard.host_allowed(name)) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Host {wrong:?} is not this admin listener's address ({}); name it by its address or add the \
                 name to admin.allowed_hosts",
                guard.bound
            ),
        ));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !guard.token_matches(authorization) {
        let mut response = refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send Authorization: Bearer <the token of admin.token_file>".into(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return Some(response);
    }
    if *method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            let mut response = refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "admin POST bodies are JSON: send Content-Type: application/json (an empty body or {} when there \
                 is nothing to say)"
                    .into(),
            );
            response.headers_mut().insert(
                header::ACCEPT,
                axum::http::HeaderValue::from_static("application/json"),
            );
            return Some(response);
        }
    }
    None
}

/// What the admin listener's handlers reach.
#[derive(Clone)]
pub(crate) struct AdminState {
    db: Db,
    archiver: Archiver,
}

pub(crate) fn state_for_admin(db: &Db, archiver: &Archiver) -> AdminState {
    AdminState {
        db: db.clone(),
        archiver: archiver.clone(),
    }
}

/// The admin listener (private by default): Prometheus metrics and operator endpoints for the archive. Every
/// request first passes [`guard`] (no Origin, its own Host, the token when set, JSON POSTs).
pub(crate) fn admin_router(state: AdminState) -> Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                match crate::telemetry::prometheus() {
                    Some(handle) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                        .into_response(),
                    None => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "metrics recorder unavailable\n",
                    )
                        .into_response(),
                }
            }),
        )
        .route(
            "/archive",
            get(|State(s): State<AdminState>| async move {
                match s.archiver.status().await {
                    Ok(status) => axum::Json(status).into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                }
            }),
        )
        .route(
            "/archive/jobs/{id}/retry",
            axum::routing::post(|State(s): State<AdminState>, Path(id): Path<i64>| async move {
                match s.db.retry_dead(Some(id)).await {
                    Ok(0) => (StatusCode::NOT_FOUND, "no dead job with that id\n").into_response(),
                    Ok(_) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                }
            }),
        )
        .route(
            "/archive/retry-dead",
            axum::routing::post(|State(s): State<AdminState>| async move {
                match s.db.retry_dead(None).await {
                    Ok(n) => axum::Json(serde_json::json!({ "retried": n })).into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                }
            }),
        )
        .route(
            "/wallets/{address}/{action}",
            axum::routing::post(
                |State(s): State<AdminState>, Path((address, action)): Path<(String, String)>| async move {
                    let disabled = match action.as_str() {
                        "disable" => true,
                        "enable" => false,
                        _ => return (StatusCode::NOT_FOUND, "use disable or enable\n").into_response(),
                    };
                    if s.archiver.wallets().get(&address).is_none() {
                        return (StatusCode::NOT_FOUND, "no such wallet\n").into_response();
                    }
                    match s.db.set_wallet_disabled(&address, disabled, "admin API", "admin-api").await {
                        Ok(()) => {
                            tracing::warn!(target: "audit", action = %action, wallet = %address, by = "admin-api", "wallet state changed");
                            if let Ok(d) = s.db.disabled_wallets().await {
                                s.archiver.wallets().apply_disabled(&d);
                            }
                            StatusCode::NO_CONTENT.into_response()
                        }
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                    }
                },
            ),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str], token_file: &str) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9090".parse().unwrap(),
            token_file: token_file.into(),
            allowed_hosts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn only_the_listeners_own_address_and_allowed_names_pass() {
        let loopback = AdminGuard::new(
            "127.0.0.1:9090".parse().unwrap(),
            &config(&["Prom.internal", "lb.internal:80"], ""),
            None,
        );
        for ok in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST:9090",
            "prom.internal:9090",
            "lb.internal:80",
            // A Host without a port means port 80.
            "lb.internal",
        ] {
            assert!(loopback.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example:9090",
            "127.0.0.1:9091",
            "127.0.0.2:9090",
            "127.0.0.1",
            "prom.internal:1234",
            "prom.internal",
            "localhost.evil.example:9090",
            "user@127.0.0.1:9090",
            "",
            "a b",
        ] {
            assert!(!loopback.host_allowed(refused), "{refused}");
        }
        let any = AdminGuard::new("0.0.0.0:9090".parse().unwrap(), &config(&[], ""), None);
        assert!(any.host_allowed("10.1.2.3:9090"));
        assert!(any.host_allowed("[fe80::1]:9090"));
        assert!(!any.host_allowed("rebound.example:9090"));
        let v6 = AdminGuard::new("[::1]:9090".parse().unwrap(), &config(&[], ""), None);
        assert!(v6.host_allowed("[::1]:9090"));
        assert!(!v6.host_allowed("127.0.0.1:9090"));
    }

    #[test]
    fn tokens_compare_whole_and_need_the_bearer_scheme() {
        let guard = AdminGuard::new(
            "127.0.0.1:9090".parse().unwrap(),
            &config(&[], ""),
            Some(Zeroizing::new("0123456789abcdef".to_owned())),
        );
        assert!(guard.token_matches(Some("Bearer 0123456789abcdef")));
        assert!(guard.token_matches(Some("bearer  0123456789abcdef ")));
        assert!(!guard.token_matches(Some("Bearer 0123456789abcde")));
        assert!(!guard.token_matches(Some("Bearer 0123456789abcdefg")));
        assert!(!guard.token_matches(Some("Basic 0123456789abcdef")));
        assert!(!guard.token_matches(Some("0123456789abcdef")));
        assert!(!guard.token_matches(None));
        let open = AdminGuard::new("127.0.0.1:9090".parse().unwrap(), &config(&[], ""), None);
        assert!(open.token_matches(None));
    }

    #[test]
    fn the_token_comes_from_the_credential_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token-file");
        std::fs::write(&file, "file-token-0123456789\n").unwrap();
        let configured = config(&[], file.to_str().unwrap());
        let token = load_token(&configured, None).unwrap();
        assert_eq!(
            token.as_deref().map(String::as_str),
            Some("file-token-0123456789")
        );

        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        // No credential file: the configured file.
        assert!(load_token(&configured, Some(&creds)).unwrap().is_some());
        std::fs::write(creds.join(TOKEN_CREDENTIAL), "credential-token-0123\n").unwrap();
        let token = load_token(&configured, Some(&creds)).unwrap();
        assert_eq!(
            token.as_deref().map(String::as_str),
            Some("credential-token-0123")
        );
        // An empty credential (as the installer creates it): no token.
        std::fs::write(creds.join(TOKEN_CREDENTIAL), "").unwrap();
        assert!(load_token(&configured, Some(&creds)).unwrap().is_none());

        assert!(load_token(&config(&[], ""), None).unwrap().is_none());
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            load_token(&configured, None),
            Err(TokenError::Empty { .. })
        ));
        std::fs::write(&file, "short").unwrap();
        assert!(matches!(
            load_token(&configured, None),
            Err(TokenError::Short { .. })
        ));
        let missing = config(&[], dir.path().join("nope").to_str().unwrap());
        assert!(load_token(&missing, None).is_err());
    }
}
