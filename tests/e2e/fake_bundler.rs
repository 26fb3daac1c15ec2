//! A bundler for tests that speaks the real Bundlr protocol (`POST /tx/{token}` with a raw ANS-104 data item,
//! `GET /account/balance/{token}?address=`, and `GET /{id}` for the data, as a gateway serves it), verifies every
//! posted item's signature with zipIQ's parser and the `rsa` verifier, and plays scripted answers: 402 for chosen
//! wallets, 500s, timeouts, 429 with Retry-After, then 200 with a receipt (202 when it already has the item).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use zipiq::archive::ans104::DataItem;

/// What the next non-402 POSTs get, in order; when empty, 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripted {
    ServerError,
    Timeout,
    RateLimited,
}

#[derive(Default, Clone)]
pub struct Ledger {
    /// Accepted items by id, with their raw bytes.
    pub items: HashMap<String, Bytes>,
    /// Every POST: (instant, owner address, item id, status answered).
    pub posts: Vec<(Instant, String, String, u16)>,
    /// Every verified item id as its POST arrived, before the answer (a POST cut by a crash shows here only).
    pub received: Vec<String>,
    /// Items that failed verification (must stay empty).
    pub invalid: Vec<String>,
    pub script: Vec<Scripted>,
    pub broke_wallets: HashSet<String>,
    /// Delay before answering a normal POST (to keep uploads in flight).
    pub delay: Duration,
}

impl Ledger {
    /// A snapshot, so no lock is held across an await.
    pub fn clone_for_test(&self) -> Ledger {
        self.clone()
    }
}

#[derive(Clone)]
pub struct FakeBundler {
    pub addr: SocketAddr,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl FakeBundler {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap()
    }
}

async fn post_tx(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if token != "arweave" {
        return (StatusCode::BAD_REQUEST, "unknown token").into_response();
    }
    let item = match DataItem::parse(body.clone()) {
        Ok(i) => i,
        Err(e) => {
            ledger
                .lock()
                .unwrap()
                .invalid
                .push(format!("unparseable: {e}"));
            return (StatusCode::BAD_REQUEST, format!("invalid data item: {e}")).into_response();
        }
    };
    let id = item.id_b64url();
    if let Err(e) = item.verify() {
        ledger.lock().unwrap().invalid.push(format!("{id}: {e}"));
        return (StatusCode::BAD_REQUEST, format!("bad signature: {e}")).into_response();
    }
    let owner = item.owner_address();
    let (step, delay) = {
        let mut l = ledger.lock().unwrap();
        l.received.push(id.clone());
        if l.broke_wallets.contains(&owner) {
            l.posts.push((Instant::now(), owner, id, 402));
            return (
                StatusCode::PAYMENT_REQUIRED,
                "Not enough funds to send data",
            )
                .into_response();
        }
        let step = if l.script.is_empty() {
            None
        } else {
            Some(l.script.remove(0))
        };
        (step, l.delay)
    };
    let record = |status: u16| {
        let mut l = ledger.lock().unwrap();
        l.posts
            .push((Instant::now(), owner.clone(), id.clone(), status));
    };
    match step {
        Some(Scripted::ServerError) => {
            record(500);
            return (StatusCode::INTERNAL_SERVER_ERROR, "scripted failure").into_response();
        }
        Some(Scripted::Timeout) => {
            record(0);
            tokio::time::sleep(Duration::from_secs(5)).await;
            return (StatusCode::GATEWAY_TIMEOUT, "too late").into_response();
        }
        Some(Scripted::RateLimited) => {
            record(429);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response();
        }
        None => {}
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut l = ledger.lock().unwrap();
    if l.items.contains_key(&id) {
        l.posts.push((Instant::now(), owner, id.clone(), 202));
        return (
            StatusCode::ACCEPTED,
            format!("Transaction {id} already received"),
        )
            .into_response();
    }
    l.items.insert(id.clone(), body);
    l.posts.push((Instant::now(), owner, id.clone(), 200));
    let receipt = serde_json::json!({
        "id": id, "timestamp": 1_700_000_000_000u64, "version": "1.0.0",
        "deadlineHeight": 1_000_000, "public": "test-bundler", "signature": "test-signature",
    });
    (StatusCode::OK, axum::Json(receipt)).into_response()
}

async fn balance() -> Response {
    axum::Json(serde_json::json!({ "balance": "1000000000000000" })).into_response()
}

async fn data(State(ledger): State<Arc<Mutex<Ledger>>>, Path(id): Path<String>) -> Response {
    let raw = ledger.lock().unwrap().items.get(&id).cloned();
    match raw.and_then(|r| DataItem::parse(r).ok()) {
        Some(item) => (StatusCode::OK, item.data()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the fake bundler on 127.0.0.1.
pub async fn start() -> FakeBundler {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let app = Router::new()
        .route("/tx/{token}", post(post_tx))
        .route("/account/balance/{token}", get(balance))
        .route("/price/{bytes}", get(|| async { "1000" }))
        .route("/{id}", get(data))
        .with_state(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeBundler { addr, ledger }
}
