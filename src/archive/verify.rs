//! Proof that a broadcast is archived: for every chunk, the bytes served by IPFS hash to the recorded CID, the
//! data item exists at the Arweave gateway (by id, and found by GraphQL on its tags among the items signed by our
//! wallets), the data the gateway serves hashes to the same CID, and the item was paid for once: no two bundle
//! transactions the gateway has carry it (gateway mode keeps every bundle transaction it made with its items).
//! `zipiq verify` prints the table and exits non-zero on any miss.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::gateway_client::{GatewayClient, TagFilter, TxStatus};
use super::items::chunk_index;
use crate::db::Db;
use crate::db::broadcasts::ChunkKind;
use crate::db::bundles::BundleState;
use crate::store::unixfs::import_file;

/// Largest chunk fetched for verification.
const MAX_BYTES: usize = 256 << 20;

/// One line of the proof.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkCheck {
    /// The chunk's sequence number in the broadcast.
    pub seq: i64,
    /// `init` or `media`.
    pub kind: String,
    /// The chunk's recorded CID.
    pub cid: String,
    /// The id of the data item that archived it, if any.
    pub item_id: Option<String>,
    /// The bytes from IPFS hash to the recorded CID.
    pub ipfs: Result<(), String>,
    /// The gateway serves the item and its data hashes to the recorded CID.
    pub arweave_data: Result<(), String>,
    /// GraphQL finds the item by its tags among our wallets' items.
    pub arweave_graphql: Result<(), String>,
    /// The bundle transactions this node put the item in (gateway mode; refused ones left out).
    pub transactions: Vec<String>,
    /// At most one of those transactions is known to the gateway: the item was paid for once.
    pub once: Result<(), String>,
}

impl ChunkCheck {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.ipfs.is_ok()
            && self.arweave_data.is_ok()
            && self.arweave_graphql.is_ok()
            && self.once.is_ok()
    }
}

/// Whether an item put in `transactions` was posted (and paid for) more than once: every transaction but one must
/// be unknown to the gateway (dropped before it was mined, then the item went into a new one).
async fn posted_once(gateway: &GatewayClient, transactions: &[String]) -> Result<(), String> {
    if transactions.len() < 2 {
        return Ok(());
    }
    let mut known = Vec::new();
    for tx in transactions {
        match gateway.tx_status(tx).await {
            Ok(TxStatus::NotFound) => {}
            Ok(_) => known.push(tx.as_str()),
            Err(e) => return Err(format!("status of transaction {tx}: {e}")),
        }
    }
    if known.len() > 1 {
        return Err(format!(
            "posted in {} transactions: {}",
            known.len(),
            known.join(", ")
        ));
    }
    Ok(())
}

/// The CID zipIQ's importer (unixfs-v1-2025) gives `bytes`.
pub fn cid_of(bytes: &Bytes) -> String {
    import_file(bytes).root.to_string()
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Bytes, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if bytes.len() > MAX_BYTES {
        return Err(format!("{url}: over {MAX_BYTES} bytes"));
    }
    Ok(bytes)
}

/// Checks every chunk of `broadcast`. `ipfs_gateway` is the base URL of an IPFS gateway (this server's, or any).
pub async fn verify_broadcast(
    db: &Db,
    gateway: &GatewayClient,
    ipfs_gateway: &str,
    broadcast: i64,
) -> Result<Vec<ChunkCheck>, String> {
    let b = db
        .broadcast(broadcast)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no broadcast {broadcast}"))?;
    let stream = db
        .list_streams()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.id == b.stream_id)
        .map(|s| s.name)
        .ok_or_else(|| format!("broadcast {broadcast} has no stream"))?;
    let chunks = db.chunks_of(broadcast).await.map_err(|e| e.to_string())?;
    let jobs = db
        .jobs_of_broadcast(broadcast)
        .await
        .map_err(|e| e.to_string())?;
    let bundles = db
        .transactions_of_broadcast(broadcast)
        .await
        .map_err(|e| e.to_string())?;
    let owners: Vec<String> = {
        let mut w: Vec<String> = jobs.iter().filter_map(|j| j.wallet.clone()).collect();
        w.sort();
        w.dedup();
        w
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let base = ipfs_gateway.trim_end_matches('/');
    let mut out = Vec::with_capacity(chunks.len());
    for c in &chunks {
        let job = jobs.iter().find(|j| j.chunk_id == Some(c.id));
        let item_id = job.and_then(|j| j.item_id.clone());
        let mut transactions: Vec<String> = bundles
            .iter()
            .filter(|t| Some(t.job_id) == job.map(|j| j.id) && t.state != BundleState::Abandoned)
            .map(|t| t.tx_id.clone())
            .collect();
        transactions.dedup();
        let once = posted_once(gateway, &transactions).await;
        let ipfs = match fetch(&http, &format!("{base}/ipfs/{}", c.cid)).await {
            Ok(bytes) if cid_of(&bytes) == c.cid => Ok(()),
            Ok(bytes) => Err(format!(
                "IPFS bytes hash to {}, not {}",
                cid_of(&bytes),
                c.cid
            )),
            Err(e) => Err(e),
        };
        let (arweave_data, arweave_graphql) = match &item_id {
            None => (
                Err("not signed yet".to_owned()),
                Err("not signed yet".to_owned()),
            ),
            Some(id) => {
                let data = match gateway.data(id, MAX_BYTES).await {
                    Ok(Some(bytes)) if cid_of(&bytes) == c.cid => Ok(()),
                    Ok(Some(bytes)) => Err(format!(
                        "item data hashes to {}, not {}",
                        cid_of(&bytes),
                        c.cid
                    )),
                    Ok(None) => Err(format!("item {id} not found at the gateway")),
                    Err(e) => Err(e.to_string()),
                };
                let tags = [
                    TagFilter::new("App-Name", "zipIQ"),
                    TagFilter::new("Stream-Id", stream.clone()),
                    TagFilter::new("Broadcast-Id", broadcast.to_string()),
                    TagFilter::new("Chunk-Index", chunk_index(c.seq)),
                ];
                let found = match gateway.find_transactions(&tags, &owners, 100, None).await {
                    Ok(page) if page.transactions.iter().any(|t| &t.id == id) => Ok(()),
                    Ok(page) => Err(format!(
                        "GraphQL finds {} item(s) for this chunk, not {id}",
                        page.transactions.len()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                (data, found)
            }
        };
        out.push(ChunkCheck {
            seq: c.seq,
            kind: if c.kind == ChunkKind::Init {
                "init"
            } else {
                "media"
            }
            .to_owned(),
            cid: c.cid.clone(),
            item_id,
            ipfs,
            arweave_data,
            arweave_graphql,
            transactions,
            once,
        });
    }
    Ok(out)
}

/// The proof as a table.
pub fn table(checks: &[ChunkCheck]) -> String {
    let mark = |r: &Result<(), String>| {
        if r.is_ok() {
            "ok".to_owned()
        } else {
            "MISS".to_owned()
        }
    };
    let mut out = String::from("seq\tkind\tipfs\tarweave-data\tgraphql\tonce\titem\tcid\n");
    for c in checks {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            c.seq,
            c.kind,
            mark(&c.ipfs),
            mark(&c.arweave_data),
            mark(&c.arweave_graphql),
            mark(&c.once),
            c.item_id.as_deref().unwrap_or("-"),
            c.cid
        ));
        for (what, r) in [
            ("ipfs", &c.ipfs),
            ("arweave data", &c.arweave_data),
            ("graphql", &c.arweave_graphql),
            ("paid once", &c.once),
        ] {
            if let Err(e) = r {
                out.push_str(&format!("\t{what}: {e}\n"));
            }
        }
    }
    out
}

/// The jobs of chunks whose archived item is missing at the gateway (to post again with `--repair`).
pub async fn missing_jobs(
    db: &Db,
    broadcast: i64,
    checks: &[ChunkCheck],
) -> Result<Vec<i64>, crate::db::DbError> {
    let jobs = db.jobs_of_broadcast(broadcast).await?;
    Ok(checks
        .iter()
        .filter(|c| c.arweave_data.is_err())
        .filter_map(|c| c.item_id.as_ref())
        .filter_map(|id| {
            jobs.iter()
                .find(|j| j.item_id.as_ref() == Some(id))
                .map(|j| j.id)
        })
        .collect())
}
