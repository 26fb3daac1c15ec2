//! An HTTP client for an Arweave gateway or node (arweave.net, a node of one's own, arlocal in tests): price,
//! balance, anchor, `POST /tx`, `POST /chunk`, transaction status, data by id, and GraphQL by tags and owners.
//!
//! Every call has a timeout. Errors say whether trying again can help ([`GatewayError::is_transient`]): timeouts,
//! connection failures, 408, 429 and 5xx can; other answers cannot. No retries, backoff or circuit breaking happen
//! here: the worker that calls this owns those decisions. Answers are outside input: bodies are bounded and
//! parsed into errors, never panics.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::archive::arweave_tx::{ChunkUpload, Transaction, TransactionJson, chunk_upload};
use crate::archive::merkle::DataTree;

/// Longest error body kept in an error message.
const ERROR_BODY_CHARS: usize = 512;
/// Largest JSON or text answer read (data has its own limit, given per call).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Refuses `data` (and its `tree`) when `tx` does not sign it: its data root or size differ. `endpoint` names the
/// call that would have sent it.
fn signs(
    tx: &Transaction,
    data: &[u8],
    tree: Option<&DataTree>,
    endpoint: &str,
) -> Result<(), GatewayError> {
    if tx.data_root != tree.map(|t| t.data_root) || tx.data_size != data.len() as u64 {
        return Err(GatewayError::Answer {
            endpoint: endpoint.to_owned(),
            detail: "the transaction does not sign this data (data root or size differ)".to_owned(),
        });
    }
    Ok(())
}

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request did not get an answer.
    #[error("{endpoint}: {source}")]
    Transport {
        /// The gateway endpoint asked (`GET /tx/…`, ...).
        endpoint: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with an unexpected status.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// The gateway endpoint asked.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// An excerpt of the answer's body.
        body: String,
    },
    /// The answer's body is not what the endpoint gives.
    #[error("{endpoint}: unexpected answer: {detail}")]
    Answer {
        /// The gateway endpoint asked.
        endpoint: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The answer is larger than this client reads.
    #[error("{endpoint}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The gateway endpoint asked.
        endpoint: String,
        /// The most bytes read, for that endpoint.
        limit: usize,
    },
    /// The configured gateway URL is not an http(s) URL.
    #[error("the gateway URL {0:?} is not an http(s) URL")]
    BadUrl(String),
}

impl GatewayError {
    /// True when the same call may succeed later (timeouts, connection errors, 408, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            GatewayError::Transport { .. } => true,
            GatewayError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            GatewayError::Answer { .. }
            | GatewayError::TooLarge { .. }
            | GatewayError::BadUrl(_) => false,
        }
    }
}

/// Where a transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// Unknown to the gateway (never posted, dropped, or not yet propagated).
    NotFound,
    /// Accepted, not in a block yet.
    Pending,
    /// In a block.
    Confirmed {
        /// The block's height.
        block_height: u64,
        /// The block's independent hash.
        block_indep_hash: String,
        /// How many confirmations the gateway counts.
        number_of_confirmations: u64,
    },
}

/// A tag filter for GraphQL: transactions with tag `name` equal to any of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    /// The tag's name.
    pub name: String,
    /// Values that match.
    pub values: Vec<String>,
}

impl TagFilter {
    /// Transactions whose tag `name` is `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            values: vec![value.into()],
        }
    }
}

/// One transaction or data item found by GraphQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTransaction {
    /// The transaction's or item's id.
    pub id: String,
    /// The signer's address.
    pub owner_address: String,
    /// Its tags as (name, value), in order.
    pub tags: Vec<(String, String)>,
    /// The bundle holding it, for a data item.
    pub bundled_in: Option<String>,
    /// The block height, once mined.
    pub block_height: Option<u64>,
    /// The data's size in bytes, when the gateway gives it.
    pub data_size: Option<u64>,
    /// Pass as `after` to get the next page.
    pub cursor: String,
}

/// A page of GraphQL results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPage {
    /// The transactions found, in the gateway's order.
    pub transactions: Vec<FoundTransaction>,
    /// Whether there are more (ask again with the last one's `cursor`).
    pub has_next_page: bool,
}

const TRANSACTIONS_QUERY: &str = "query($tags: [TagFilter!], $owners: [String!], $first: Int, $after: String) {
  transactions(tags: $tags, owners: $owners, first: $first, after: $after) {
    pageInfo { hasNextPage }
    edges {
      cursor
      node { id owner { address } tags { name value } bundledIn { id } block { height } data { size } }
    }
  }
}";

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
}

impl GatewayClient {
    /// A client of the gateway at `base_url` (`https://arweave.net`, `http://127.0.0.1:1984`), every call bounded
    /// by `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<GatewayClient, GatewayError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GatewayError::BadUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("zipIQ/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| GatewayError::Transport {
                endpoint: base.clone(),
                source,
            })?;
        Ok(GatewayClient { http, base })
    }

    /// The gateway's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GatewayError> {
        request
            .send()
            .await
            .map_err(|source| GatewayError::Transport {
                endpoint: endpoint.to_owned(),
                source,
            })
    }

    /// Sends, reads the whole body (bounded), and turns statuses other than 2xx into errors.
    async fn call(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Bytes), GatewayError> {
        let response = self.send(endpoint, request).await?;
        let status = response.status().as_u16();
        let body = read_limited(endpoint, response, MAX_ANSWER_BYTES).await?;
        if !(200..300).contains(&status) {
            return Err(GatewayError::Status {
                endpoint: endpoint.to_owned(),
                status,
                body: excerpt(&body),
            });
        }
        Ok((status, body))
    }

    async fn get_text(&self, path: &str) -> Result<String, GatewayError> {
        let (_, body) = self.call(path, self.http.get(self.url(path))).await?;
        String::from_utf8(body.to_vec()).map_err(|_| GatewayError::Answer {
            endpoint: path.to_owned(),
            detail: "not UTF-8".to_owned(),
        })
    }

    async fn get_winston(&self, path: &str) -> Result<u128, GatewayError> {
        let text = self.get_text(path).await?;
        parse_winston(text.trim()).ok_or_else(|| GatewayError::Answer {
            endpoint: path.to_owned(),
            detail: format!("not an amount of winston: {:?}", excerpt(text.as_bytes())),
        })
    }

    /// The reward, in winston, for storing `bytes` bytes of data (`GET /price/{bytes}`).
    pub async fn price(&self, bytes: u64) -> Result<u128, GatewayError> {
        self.get_winston(&format!("/price/{bytes}")).await
    }

    /// The balance, in winston, of the wallet at `address` (`GET /wallet/{address}/balance`).
    pub async fn balance(&self, address: &str) -> Result<u128, GatewayError> {
        self.get_winston(&format!("/wallet/{}/balance", path_segment(address)?))
            .await
    }

    /// An anchor for a new transaction's `last_tx`, base64url (`GET /tx_anchor`).
    pub async fn tx_anchor(&self) -> Result<String, GatewayError> {
        let text = self.get_text("/tx_anchor").await?;
        let anchor = text.trim();
        if anchor.is_empty() || !anchor.bytes().all(is_b64url_byte) {
            return Err(GatewayError::Answer {
                endpoint: "/tx_anchor".to_owned(),
                detail: format!("not a base64url anchor: {:?}", excerpt(text.as_bytes())),
            });
        }
        Ok(anchor.to_owned())
    }

    /// Posts a transaction (`POST /tx`). 208 (already known) counts as success.
    pub async fn post_tx(&self, tx: &TransactionJson) -> Result<(), GatewayError> {
        self.call("/tx", self.http.post(self.url("/tx")).json(tx))
            .await
            .map(|_| ())
    }

    /// Posts one chunk with its proof (`POST /chunk`).
    pub async fn post_chunk(&self, chunk: &ChunkUpload) -> Result<(), GatewayError> {
        self.call("/chunk", self.http.post(self.url("/chunk")).json(chunk))
            .await
            .map(|_| ())
    }

    /// Posts `tx` (data left out of the body), then every chunk of `data`, in order. `tree` must be the tree of
    /// `data` that `tx` signed. Stops at the first failure; posting again is harmless.
    pub async fn upload(
        &self,
        tx: &Transaction,
        data: &[u8],
        tree: Option<&DataTree>,
    ) -> Result<(), GatewayError> {
        signs(tx, data, tree, "/tx")?;
        self.post_tx(&tx.to_json(None)).await?;
        self.upload_chunks(tx, data, tree).await
    }

    /// Posts every chunk of `data` of a transaction the gateway already has (its header was accepted before: after a
    /// crash, the data may be incomplete). Posting a chunk again is harmless.
    pub async fn upload_chunks(
        &self,
        tx: &Transaction,
        data: &[u8],
        tree: Option<&DataTree>,
    ) -> Result<(), GatewayError> {
        signs(tx, data, tree, "/chunk")?;
        if let Some(tree) = tree {
            for index in 0..tree.chunks.len() {
                if let Some(chunk) = chunk_upload(tree, data, index) {
                    self.post_chunk(&chunk).await?;
                }
            }
        }
        Ok(())
    }

    /// Where transaction `id` stands (`GET /tx/{id}/status`).
    pub async fn tx_status(&self, id: &str) -> Result<TxStatus, GatewayError> {
        let path = format!("/tx/{}/status", path_segment(id)?);
        let response = self.send(&path, self.http.get(self.url(&path))).await?;
        let status = response.status().as_u16();
        let body = read_limited(&path, response, MAX_ANSWER_BYTES).await?;
        match status {
            404 | 410 => return Ok(TxStatus::NotFound),
            200..=299 => {}
            _ => {
                return Err(GatewayError::Status {
                    endpoint: path,
                    status,
                    body: excerpt(&body),
                });
            }
        }
        // Nodes answer 202 "Pending"; arlocal answers 200 "Pending".
        if body.trim_ascii() == b"Pending" {
            return Ok(TxStatus::Pending);
        }
        #[derive(Deserialize)]
        struct Confirmed {
            block_height: u64,
            block_indep_hash: String,
            number_of_confirmations: u64,
        }
        let confirmed: Confirmed =
            serde_json::from_slice(&body).map_err(|e| GatewayError::Answer {
                endpoint: path.clone(),
                detail: format!("{e}: {}", excerpt(&body)),
            })?;
        Ok(TxStatus::Confirmed {
            block_height: confirmed.block_height,
            block_indep_hash: confirmed.block_indep_hash,
            number_of_confirmations: confirmed.number_of_confirmations,
        })
    }

    /// The data of a transaction or data item (`GET /{id}`), at most `max_bytes`. `None` when not found.
    pub async fn data(&self, id: &str, max_bytes: usize) -> Result<Option<Bytes>, GatewayError> {
        let path = format!("/{}", path_segment(id)?);
        let response = self.send(&path, self.http.get(self.url(&path))).await?;
        let status = response.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let body = read_limited(&path, response, max_bytes).await?;
        if !(200..300).contains(&status) {
            return Err(GatewayError::Status {
                endpoint: path,
                status,
                body: excerpt(&body),
            });
        }
        Ok(Some(body))
    }

    /// Whether the gateway serves the transaction or data item `id` (`HEAD /{id}`), without downloading it.
    pub async fn exists(&self, id: &str) -> Result<bool, GatewayError> {
        let path = format!("/{}", path_segment(id)?);
        let response = self.send(&path, self.http.head(self.url(&path))).await?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(GatewayError::Status {
                endpoint: path,
                status,
                body: String::new(),
            }),
        }
    }

    /// Runs a GraphQL query (`POST /graphql`) and gives its `data`; GraphQL errors are errors.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value, GatewayError> {
        let request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        let (_, body) = self.call("/graphql", request).await?;
        let mut answer: Value =
            serde_json::from_slice(&body).map_err(|e| GatewayError::Answer {
                endpoint: "/graphql".to_owned(),
                detail: format!("not JSON: {e}"),
            })?;
        if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
            return Err(GatewayError::Answer {
                endpoint: "/graphql".to_owned(),
                detail: excerpt(errors.to_string().as_bytes()),
            });
        }
        Ok(answer
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    /// Transactions and data items carrying every tag filter in `tags`, signed by any of `owners` (addresses;
    /// empty: anyone): one page of at most `first` (gateways cap it at 100), after the cursor `after`.
    pub async fn find_transactions(
        &self,
        tags: &[TagFilter],
        owners: &[String],
        first: u32,
        after: Option<&str>,
    ) -> Result<FoundPage, GatewayError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|t| json!({ "name": t.name, "values": t.values }))
            .collect();
        let variables = json!({
            "tags": tags,
            "owners": if owners.is_empty() { Value::Null } else { json!(owners) },
            "first": first,
            "after": after,
        });
        let data = self.graphql(TRANSACTIONS_QUERY, variables).await?;
        parse_page(&data).ok_or_else(|| GatewayError::Answer {
            endpoint: "/graphql".to_owned(),
            detail: format!(
                "not a transactions page: {}",
                excerpt(data.to_string().as_bytes())
            ),
        })
    }
}

fn parse_page(data: &Value) -> Option<FoundPage> {
    let connection = data.get("transactions")?;
    let has_next_page = connection.get("pageInfo")?.get("hasNextPage")?.as_bool()?;
    let mut transactions = Vec::new();
    for edge in connection.get("edges")?.as_array()? {
        let node = edge.get("node")?;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let mut tags = Vec::new();
        for tag in node.get("tags")?.as_array()? {
            tags.push((text(tag.get("name")?)?, text(tag.get("value")?)?));
        }
        let number = |v: Option<&Value>| -> Option<u64> {
            let v = v?;
            v.as_u64().or_else(|| v.as_str()?.parse().ok())
        };
        transactions.push(FoundTransaction {
            id: text(node.get("id")?)?,
            owner_address: text(node.get("owner")?.get("address")?)?,
            tags,
            bundled_in: node
                .get("bundledIn")
                .and_then(|b| b.get("id"))
                .and_then(text),
            block_height: number(node.get("block").and_then(|b| b.get("height"))),
            data_size: number(node.get("data").and_then(|d| d.get("size"))),
            cursor: text(edge.get("cursor")?)?,
        });
    }
    Some(FoundPage {
        transactions,
        has_next_page,
    })
}

/// Reads a body up to `limit` bytes.
pub(crate) async fn read_limited(
    endpoint: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::TooLarge {
        endpoint: endpoint.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(piece) = response
        .chunk()
        .await
        .map_err(|source| GatewayError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        })?
    {
        if body.len() + piece.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// The start of a body, as text, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(ERROR_BODY_CHARS).collect();
    if text.chars().count() > ERROR_BODY_CHARS {
        out.push('…');
    }
    out
}

fn is_b64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// An id or address as a URL path segment: base64url characters only, so nothing can change the path.
fn path_segment(text: &str) -> Result<&str, GatewayError> {
    if text.is_empty() || text.len() > 128 || !text.bytes().all(is_b64url_byte) {
        return Err(GatewayError::Answer {
            endpoint: "(request)".to_owned(),
            detail: format!("{text:?} is not a base64url id or address"),
        });
    }
    Ok(text)
}

/// A non-negative decimal amount (winston), as gateways write it.
pub(crate) fn parse_winston(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_timeouts_throttling_and_server_errors() {
        let status = |status| GatewayError::Status {
            endpoint: "/tx".into(),
            status,
            body: String::new(),
        };
        assert!(status(429).is_transient());
        assert!(status(503).is_transient());
        assert!(status(408).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(410).is_transient());
    }

    #[test]
    fn winston_amounts_are_plain_decimals() {
        assert_eq!(parse_winston("0"), Some(0));
        assert_eq!(
            parse_winston("123456789012345678901"),
            Some(123_456_789_012_345_678_901)
        );
        assert_eq!(parse_winston("-1"), None);
        assert_eq!(parse_winston("1e9"), None);
        assert_eq!(parse_winston(""), None);
        assert_eq!(parse_winston(&"9".repeat(40)), None);
    }

    #[test]
    fn ids_cannot_change_the_path() {
        assert!(path_segment("XJsa48ujt_xBxqkxKAU4ZLkt50Q56rHX6TR5iQdE2mY").is_ok());
        assert!(path_segment("../admin").is_err());
        assert!(path_segment("a?b=c").is_err());
        assert!(path_segment("").is_err());
    }

    #[test]
    fn a_graphql_page_is_read_and_a_malformed_one_refused() {
        let data = json!({"transactions": {"pageInfo": {"hasNextPage": false}, "edges": [
            {"cursor": "c1", "node": {"id": "i1", "owner": {"address": "a1"},
             "tags": [{"name": "App-Name", "value": "zipIQ"}], "bundledIn": {"id": "b1"},
             "block": {"height": 7}, "data": {"size": "42"}}},
            {"cursor": "c2", "node": {"id": "i2", "owner": {"address": "a1"}, "tags": [],
             "bundledIn": null, "block": null, "data": {"size": "0"}}}
        ]}});
        let page = parse_page(&data).unwrap();
        assert!(!page.has_next_page);
        assert_eq!(page.transactions[0].bundled_in.as_deref(), Some("b1"));
        assert_eq!(page.transactions[0].block_height, Some(7));
        assert_eq!(page.transactions[0].data_size, Some(42));
        assert_eq!(
            page.transactions[0].tags,
            vec![("App-Name".into(), "zipIQ".into())]
        );
        assert_eq!(page.transactions[1].bundled_in, None);
        assert_eq!(page.transactions[1].block_height, None);
        assert!(parse_page(&json!({"transactions": {"edges": []}})).is_none());
        assert!(parse_page(&json!(null)).is_none());
    }

    #[test]
    fn a_base_url_must_be_http() {
        assert!(GatewayClient::new("ftp://x", Duration::from_secs(1)).is_err());
        let client = GatewayClient::new("http://127.0.0.1:1984/", Duration::from_secs(1)).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:1984");
    }

    #[test]
    fn error_excerpts_are_bounded() {
        assert_eq!(excerpt(&[b'x'; 600]).chars().count(), ERROR_BODY_CHARS + 1);
        assert_eq!(excerpt(b"short"), "short");
    }
}
