//! WHIP and WHEP over HTTP: POST an SDP offer, read the answer and the session URL (`Location`), DELETE the
//! session at the end. Every refusal becomes an error that says what to do (wrong key, stream not live, server
//! full, server not reachable).
//!
//! Bodies are read up to a bound and every request has a timeout; nothing here may hang the run.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

/// Largest answer or problem body read.
const MAX_BODY: usize = 256 * 1024;

/// Why a WHIP/WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error(
        "cannot reach the server at {url}: {detail} (is `zipiq serve` running there? see --url)"
    )]
    Unreachable { url: String, detail: String },
    #[error("{url}: no answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error(
        "401 Unauthorized from {url}: {detail} (check --key: the stream key `zipiq serve` printed, or make one with `zipiq keys create <stream>`)"
    )]
    Unauthorized { url: String, detail: String },
    #[error("409 Conflict from {url}: {detail}")]
    Conflict {
        url: String,
        detail: String,
        retry_after: Option<u64>,
    },
    #[error("404 Not Found from {url}: {detail} (check --stream)")]
    NotFound { url: String, detail: String },
    #[error(
        "503 Service Unavailable from {url}: {detail} (raise media.max_sessions / media.max_viewers_per_stream)"
    )]
    Unavailable { url: String, detail: String },
    #[error("{status} from {url}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("bad answer from {url}: {detail}")]
    BadResponse { url: String, detail: String },
}

impl SignalError {
    /// A short label to count failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            SignalError::Unreachable { .. } => "unreachable",
            SignalError::Timeout { .. } => "timeout",
            SignalError::Unauthorized { .. } => "401",
            SignalError::Conflict { .. } => "409",
            SignalError::NotFound { .. } => "404",
            SignalError::Unavailable { .. } => "503",
            SignalError::Refused { .. } => "refused",
            SignalError::BadResponse { .. } => "bad-response",
        }
    }
}

/// A session the server created: its resource URL and the SDP answer.
#[derive(Debug)]
pub struct Created {
    pub resource: Url,
    pub answer: String,
    /// The POST was answered by another URL than `endpoint` (the server redirected it, e.g. a cluster node's
    /// 307 to the stream's origin or to a less loaded node; reqwest follows it with the same offer).
    pub redirected: bool,
}

/// HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Signaling {
    client: reqwest::Client,
    base: Url,
    timeout: Duration,
}

impl Signaling {
    /// A client for the server at `base` (an `http://` URL).
    pub fn new(base: &str, timeout: Duration) -> Result<Signaling, String> {
        let base = Url::parse(base).map_err(|e| format!("--url {base:?}: {e}"))?;
        if base.scheme() != "http" {
            return Err(format!(
                "--url {base}: only http:// is supported (the load test runs on loopback)"
            ));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Signaling {
            client,
            base,
            timeout,
        })
    }

    /// The URL of an endpoint path such as `whip/live`.
    pub fn endpoint(&self, path: &str) -> Result<Url, String> {
        self.base
            .join(path)
            .map_err(|e| format!("{path:?} under {}: {e}", self.base))
    }

    /// POSTs `offer` to `endpoint` (WHIP or WHEP) and returns the created session.
    pub async fn create(
        &self,
        endpoint: &Url,
        bearer: Option<&str>,
        offer: String,
    ) -> Result<Created, SignalError> {
        let url = endpoint.to_string();
        let mut request = self
            .client
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = request.send().await.map_err(|e| self.transport(&url, e))?;
        let status = response.status();
        // After redirects, the URL that answered: a relative `Location` is resolved against it.
        let answered_by = response.url().clone();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = read_bounded(response)
            .await
            .map_err(|e| self.transport(&url, e))?;
        if status == StatusCode::CREATED {
            let location = location.ok_or_else(|| SignalError::BadResponse {
                url: url.clone(),
                detail: "201 without a Location header".into(),
            })?;
            let resource = answered_by
                .join(&location)
                .map_err(|e| SignalError::BadResponse {
                    url: url.clone(),
                    detail: format!("Location {location:?}: {e}"),
                })?;
            let answer = String::from_utf8(body).map_err(|_| SignalError::BadResponse {
                url: url.clone(),
                detail: "the SDP answer is not UTF-8".into(),
            })?;
            return Ok(Created {
                resource,
                answer,
                redirected: answered_by != *endpoint,
            });
        }
        Err(refusal(url, status, &body, retry_after))
    }

    /// DELETEs a session resource. A 404 counts as done (the server already ended it).
    pub async fn delete(&self, resource: &Url, bearer: Option<&str>) -> Result<(), SignalError> {
        let url = resource.to_string();
        let mut request = self.client.delete(resource.clone());
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = request.send().await.map_err(|e| self.transport(&url, e))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = read_bounded(response).await.unwrap_or_default();
        Err(refusal(url, status, &body, None))
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> SignalError {
        if e.is_timeout() {
            return SignalError::Timeout {
                url: url.to_owned(),
                seconds: self.timeout.as_secs(),
            };
        }
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        SignalError::Unreachable {
            url: url.to_owned(),
            detail,
        }
    }
}

/// Reads a response body, refusing more than [`MAX_BODY`] bytes.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `detail` of an RFC 9457 problem body, or the body itself, shortened.
fn detail_of(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    if text.is_empty() {
        "(no detail)".to_owned()
    } else {
        text.chars().take(300).collect()
    }
}

fn refusal(url: String, status: StatusCode, body: &[u8], retry_after: Option<u64>) -> SignalError {
    let detail = detail_of(body);
    match status {
        StatusCode::UNAUTHORIZED => SignalError::Unauthorized { url, detail },
        StatusCode::CONFLICT => SignalError::Conflict {
            url,
            detail,
            retry_after,
        },
        StatusCode::NOT_FOUND => SignalError::NotFound { url, detail },
        StatusCode::SERVICE_UNAVAILABLE => SignalError::Unavailable { url, detail },
        _ => SignalError::Refused {
            url,
            status: status.as_u16(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_read_and_shortened() {
        let body = br#"{"type":"about:blank","title":"Conflict","status":409,"detail":"stream \"live\" is not live"}"#;
        assert_eq!(detail_of(body), "stream \"live\" is not live");
        assert_eq!(detail_of(b""), "(no detail)");
        assert_eq!(detail_of(&[b'x'; 1000]).len(), 300);
    }

    #[test]
    fn statuses_map_to_actionable_errors() {
        let e = refusal("u".into(), StatusCode::UNAUTHORIZED, b"", None);
        assert_eq!(e.kind(), "401");
        assert!(e.to_string().contains("--key"));
        let e = refusal("u".into(), StatusCode::CONFLICT, b"", Some(2));
        assert!(matches!(
            e,
            SignalError::Conflict {
                retry_after: Some(2),
                ..
            }
        ));
        assert_eq!(
            refusal("u".into(), StatusCode::SERVICE_UNAVAILABLE, b"", None).kind(),
            "503"
        );
        assert_eq!(
            refusal("u".into(), StatusCode::UNPROCESSABLE_ENTITY, b"", None).kind(),
            "refused"
        );
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(Signaling::new("https://example.org", Duration::from_secs(1)).is_err());
        assert!(Signaling::new("not a url", Duration::from_secs(1)).is_err());
        let s = Signaling::new("http://127.0.0.1:8080", Duration::from_secs(1)).unwrap();
        assert_eq!(
            s.endpoint("whep/live").unwrap().as_str(),
            "http://127.0.0.1:8080/whep/live"
        );
    }
}
