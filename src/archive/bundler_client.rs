//! An HTTP client for a Bundlr-protocol bundler (ArDrive Turbo by default; Bundlr, now Irys, left Arweave):
//! upload a signed data item with
//! `POST /tx/{token}` (`application/octet-stream`) and read a wallet's balance with
//! `GET /account/balance/{token}?address=`.
//!
//! Every answer maps to an [`UploadOutcome`] the worker acts on: 200/201 stored (the receipt kept byte for byte,
//! as proof), 202 already stored (success), 400 and other refusals permanent, 402 insufficient balance (use another
//! wallet), 429 throttled (with `Retry-After`), 5xx, timeouts and connection errors transient. Every call has a
//! timeout; redirects are not followed. Nothing here retries: the caller owns backoff and circuit breaking.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Deserialize;

use crate::archive::gateway_client::{excerpt, parse_winston, read_limited};

/// Largest answer read from a bundler.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The receipt a bundler signs when it takes an item (Turbo and Irys), kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The receipt's JSON exactly as the bundler sent it: store this, it is the proof.
    pub raw: String,
    /// The item id the receipt is for.
    pub id: Option<String>,
    /// The bundler's signature over the receipt.
    pub signature: Option<String>,
    /// The bundler's public key (owner), base64url.
    pub public: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The block height by which the bundler promises the item is on Arweave.
    pub deadline_height: Option<u64>,
}

impl Receipt {
    fn parse(raw: String) -> Receipt {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Fields {
            id: Option<String>,
            signature: Option<String>,
            public: Option<String>,
            timestamp: Option<u64>,
            deadline_height: Option<u64>,
        }
        let fields: Fields = serde_json::from_str(&raw).unwrap_or_default();
        Receipt {
            id: fields.id,
            signature: fields.signature,
            public: fields.public,
            timestamp: fields.timestamp,
            deadline_height: fields.deadline_height,
            raw,
        }
    }
}

/// What became of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// 200 or 201: the bundler took the item. A 200 carries a receipt; a receipt that is not JSON is kept raw.
    Accepted {
        status: u16,
        receipt: Option<Receipt>,
    },
    /// 202: the bundler already has this item. Success.
    AlreadyStored,
    /// 400 and other refusals of the item itself (401, 403, 404, 413, ...): sending it again will not help.
    Rejected { status: u16, body: String },
    /// 402: the wallet's balance at this bundler does not cover the item: use another wallet.
    InsufficientBalance { body: String },
    /// 429: slow down; wait `retry_after` when given.
    RateLimited {
        retry_after: Option<Duration>,
        body: String,
    },
    /// 5xx, 408, redirects, timeouts and connection failures: try again later.
    Transient { reason: String },
}

impl UploadOutcome {
    /// True when the bundler holds the item (taken now or before).
    #[cfg(test)]
    pub(crate) fn is_stored(&self) -> bool {
        matches!(
            self,
            UploadOutcome::Accepted { .. } | UploadOutcome::AlreadyStored
        )
    }
}

/// Why a balance could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundlerError {
    #[error("{endpoint}: {source}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: unexpected answer: {detail}")]
    Answer { endpoint: String, detail: String },
    #[error("the bundler URL {0:?} is not an http(s) URL")]
    BadUrl(String),
}

/// A client of one bundler for one token (`arweave` for Arweave wallets).
#[derive(Debug, Clone)]
pub(crate) struct BundlerClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl BundlerClient {
    /// A client of the bundler at `base_url` (`https://upload.ardrive.io`), paying in `token`, every call bounded
    /// by `timeout`.
    pub(crate) fn new(
        base_url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<BundlerClient, BundlerError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BundlerError::BadUrl(base_url.to_owned()));
        }
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(BundlerError::BadUrl(format!("{base}/tx/{token}")));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("zipIQ/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| BundlerError::Transport {
                endpoint: base.clone(),
                source,
            })?;
        Ok(BundlerClient {
            http,
            base,
            token: token.to_owned(),
        })
    }

    /// Uploads a signed item's bytes as they are (`POST /tx/{token}`). Never fails: every answer is an outcome.
    #[cfg(test)]
    pub(crate) async fn upload(&self, item: &crate::archive::ans104::DataItem) -> UploadOutcome {
        self.upload_bytes(item.as_bytes().clone()).await
    }

    /// Uploads bytes stored earlier as a signed item.
    pub(crate) async fn upload_bytes(&self, item: Bytes) -> UploadOutcome {
        let endpoint = format!("/tx/{}", self.token);
        let request = self
            .http
            .post(format!("{}{endpoint}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(item);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return UploadOutcome::Transient {
                    reason: format!("{endpoint}: {e}"),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = match read_limited(&endpoint, response, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            // Reading the answer failed: whether the item was taken is unknown; sending it again is safe.
            Err(e) => {
                return UploadOutcome::Transient {
                    reason: e.to_string(),
                };
            }
        };
        classify(status, &body, retry_after)
    }

    /// The balance of `address` at this bundler (`GET /account/balance/{token}?address=`), in the token's
    /// smallest unit (winston for Arweave).
    pub(crate) async fn balance(&self, address: &str) -> Result<u128, BundlerError> {
        let endpoint = format!("/account/balance/{}", self.token);
        let response = self
            .http
            .get(format!("{}{endpoint}", self.base))
            .query(&[("address", address)])
            .send()
            .await
            .map_err(|source| BundlerError::Transport {
                endpoint: endpoint.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = read_limited(&endpoint, response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| BundlerError::Answer {
                endpoint: endpoint.clone(),
                detail: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            return Err(BundlerError::Status {
                endpoint,
                status,
                body: excerpt(&body),
            });
        }
        parse_balance(&body).ok_or_else(|| BundlerError::Answer {
            endpoint,
            detail: format!("no balance in {}", excerpt(&body)),
        })
    }
}

/// Maps a bundler's answer to an outcome.
fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> UploadOutcome {
    let text = || excerpt(body);
    match status {
        200 => UploadOutcome::Accepted {
            status,
            receipt: (!body.is_empty())
                .then(|| Receipt::parse(String::from_utf8_lossy(body).into_owned())),
        },
        201 => UploadOutcome::Accepted {
            status,
            receipt: None,
        },
        202 => UploadOutcome::AlreadyStored,
        402 => UploadOutcome::InsufficientBalance { body: text() },
        429 => UploadOutcome::RateLimited {
            retry_after,
            body: text(),
        },
        408 => UploadOutcome::Transient {
            reason: format!("HTTP 408: {}", text()),
        },
        400..=499 => UploadOutcome::Rejected {
            status,
            body: text(),
        },
        _ => UploadOutcome::Transient {
            reason: format!("HTTP {status}: {}", text()),
        },
    }
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3), as a wait from `now`.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `{"balance": "123"}` or `{"balance": 123}`, or a bare number.
fn parse_balance(body: &[u8]) -> Option<u128> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let balance = value.get("balance").unwrap_or(&value);
    match balance {
        serde_json::Value::String(text) => parse_winston(text),
        serde_json::Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ans104::DataItem;
    use crate::archive::test_wallets;

    #[test]
    fn answers_map_to_outcomes() {
        let receipt = br#"{"id":"abc","timestamp":1700000000000,"deadlineHeight":1300000,"signature":"sig","public":"pub","winc":"0"}"#;
        match classify(200, receipt, None) {
            UploadOutcome::Accepted {
                status: 200,
                receipt: Some(r),
            } => {
                assert_eq!(r.id.as_deref(), Some("abc"));
                assert_eq!(r.timestamp, Some(1_700_000_000_000));
                assert_eq!(r.deadline_height, Some(1_300_000));
                assert_eq!(r.signature.as_deref(), Some("sig"));
                assert_eq!(r.raw.as_bytes(), receipt);
            }
            other => panic!("{other:?}"),
        }
        assert!(classify(201, b"", None).is_stored());
        assert_eq!(classify(202, b"exists", None), UploadOutcome::AlreadyStored);
        assert!(classify(202, b"", None).is_stored());
        assert!(matches!(
            classify(400, b"bad sig", None),
            UploadOutcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(413, b"", None),
            UploadOutcome::Rejected { status: 413, .. }
        ));
        assert!(matches!(
            classify(402, b"", None),
            UploadOutcome::InsufficientBalance { .. }
        ));
        assert_eq!(
            classify(429, b"", Some(Duration::from_secs(3))),
            UploadOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
                body: String::new()
            }
        );
        for status in [500, 502, 503, 408, 301] {
            assert!(
                matches!(classify(status, b"", None), UploadOutcome::Transient { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn a_receipt_that_is_not_json_is_kept_raw() {
        let UploadOutcome::Accepted {
            receipt: Some(receipt),
            ..
        } = classify(200, b"OK", None)
        else {
            panic!("200 is accepted");
        };
        assert_eq!(receipt.raw, "OK");
        assert_eq!(receipt.id, None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn balances_are_read_in_both_forms() {
        assert_eq!(
            parse_balance(br#"{"balance":"1000000000000"}"#),
            Some(1_000_000_000_000)
        );
        assert_eq!(parse_balance(br#"{"balance":42}"#), Some(42));
        assert_eq!(parse_balance(b"7"), Some(7));
        assert_eq!(parse_balance(br#"{"balance":"-1"}"#), None);
        assert_eq!(parse_balance(b"nope"), None);
    }

    /// A loopback bundler that verifies every item it gets and answers as its token (the path) says.
    async fn scripted_bundler() -> String {
        use axum::extract::{Path, Query};
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        use axum::routing::{get, post};

        async fn upload(
            Path(token): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            if headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes())
                != Some(b"application/octet-stream")
            {
                return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "octet-stream only").into_response();
            }
            let item = match DataItem::parse(body) {
                Ok(item) if item.verify().is_ok() => item,
                _ => return (StatusCode::BAD_REQUEST, "invalid data item").into_response(),
            };
            match token.as_str() {
                "arweave" => (
                    StatusCode::OK,
                    format!(r#"{{"id":"{}","timestamp":1,"deadlineHeight":2,"signature":"s","public":"p"}}"#, item.id_b64url()),
                )
                    .into_response(),
                "dup" => (StatusCode::ACCEPTED, "already received").into_response(),
                "broke" => (StatusCode::PAYMENT_REQUIRED, "insufficient balance").into_response(),
                "busy" => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")], "slow down").into_response(),
                "down" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    StatusCode::OK.into_response()
                }
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
        async fn balance(
            Path(token): Path<String>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> axum::response::Response {
            match (token.as_str(), query.get("address").map(String::as_str)) {
                ("arweave", Some(address)) if address == test_wallets::A_ADDRESS => {
                    axum::Json(serde_json::json!({ "balance": "123456789" })).into_response()
                }
                _ => StatusCode::BAD_REQUEST.into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/tx/{token}", post(upload))
            .route("/account/balance/{token}", get(balance));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    #[tokio::test]
    async fn uploads_over_http_map_every_answer() {
        let url = scripted_bundler().await;
        let item = crate::archive::ans104::DataItemBuilder::new(&b"segment"[..])
            .tag("App-Name", "zipIQ")
            .sign(test_wallets::a())
            .unwrap();
        let client = |token| BundlerClient::new(&url, token, Duration::from_millis(1500)).unwrap();
        match client("arweave").upload(&item).await {
            UploadOutcome::Accepted {
                status: 200,
                receipt: Some(receipt),
            } => assert_eq!(receipt.id, Some(item.id_b64url())),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            client("dup").upload(&item).await,
            UploadOutcome::AlreadyStored
        );
        assert!(matches!(
            client("broke").upload(&item).await,
            UploadOutcome::InsufficientBalance { .. }
        ));
        assert_eq!(
            client("busy").upload(&item).await,
            UploadOutcome::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                body: "slow down".into()
            }
        );
        assert!(matches!(
            client("down").upload(&item).await,
            UploadOutcome::Transient { .. }
        ));
        assert!(matches!(
            client("hang").upload(&item).await,
            UploadOutcome::Transient { .. }
        ));
        let mut tampered = item.as_bytes().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            client("arweave").upload_bytes(tampered.into()).await,
            UploadOutcome::Rejected { status: 400, .. }
        ));
        assert_eq!(
            client("arweave")
                .balance(test_wallets::A_ADDRESS)
                .await
                .unwrap(),
            123_456_789
        );
        assert!(matches!(
            client("arweave").balance(test_wallets::B_ADDRESS).await,
            Err(BundlerError::Status { status: 400, .. })
        ));
        // Nothing listens on port 9 of the loopback: a connection failure is transient.
        let nowhere =
            BundlerClient::new("http://127.0.0.1:9", "arweave", Duration::from_secs(2)).unwrap();
        assert!(matches!(
            nowhere.upload(&item).await,
            UploadOutcome::Transient { .. }
        ));
    }

    #[test]
    fn the_token_cannot_change_the_path() {
        assert!(
            BundlerClient::new(
                "https://upload.ardrive.io",
                "arweave",
                Duration::from_secs(5)
            )
            .is_ok()
        );
        assert!(
            BundlerClient::new("https://upload.ardrive.io", "../x", Duration::from_secs(5))
                .is_err()
        );
        assert!(
            BundlerClient::new("upload.ardrive.io", "arweave", Duration::from_secs(5)).is_err()
        );
    }
}
