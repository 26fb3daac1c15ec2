//! What goes to Arweave for a job: a chunk's bytes (read back from the embedded IPFS node) or, for a finished
//! broadcast, an HLS playlist whose segment URIs are the chunks' own data item ids (`/<id>` resolves on any
//! Arweave gateway), signed as ANS-104 data items with the tags that let anyone find and check them.

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;

use super::ans104::{DataItem, DataItemBuilder};
use super::avro_tags::Tag;
use std::sync::Arc;

use super::wallets::Wallet;
use crate::db::jobs::JobContext;
use crate::media::hls::{PlaylistChunk, PlaylistKind, playlist};
use crate::store::{ContentPath, EntryKind, IpfsNode};

/// Width of the zero-padded `Chunk-Index` tag, so lexical and numeric order agree.
pub(crate) const CHUNK_INDEX_WIDTH: usize = 8;

/// The tag value of a chunk index.
pub(crate) fn chunk_index(seq: i64) -> String {
    format!("{seq:0width$}", width = CHUNK_INDEX_WIDTH)
}

/// Reads a whole file from the local IPFS node.
pub(crate) async fn ipfs_bytes(ipfs: &IpfsNode, cid: &str, max: u64) -> Result<Bytes, String> {
    let path = ContentPath::parse(&format!("/ipfs/{cid}")).map_err(|e| e.to_string())?;
    let resolved = ipfs.resolve(&path).await.map_err(|e| e.to_string())?;
    let EntryKind::File { size } = resolved.kind else {
        return Err(format!("{cid} is not a file"));
    };
    if size > max {
        return Err(format!("{cid} is {size} bytes, over the {max} byte limit"));
    }
    let mut out = BytesMut::with_capacity(size as usize);
    let mut stream = ipfs.read_file(&resolved, 0..size);
    while let Some(chunk) = stream.try_next().await.map_err(|e| e.to_string())? {
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The tags of a chunk's data item.
pub(crate) fn chunk_tags(
    ctx: &JobContext,
    seq: i64,
    kind: &str,
    cid: &str,
    unix_time: u64,
) -> Vec<Tag> {
    let content_type = if kind == "init" {
        "video/mp4"
    } else {
        "video/iso.segment"
    };
    vec![
        Tag::new("App-Name", "zipIQ"),
        Tag::new("App-Version", env!("CARGO_PKG_VERSION")),
        Tag::new("Content-Type", content_type),
        Tag::new("Stream-Id", ctx.stream.clone()),
        Tag::new("Broadcast-Id", ctx.broadcast_id.to_string()),
        Tag::new("Chunk-Index", chunk_index(seq)),
        Tag::new("Chunk-Kind", kind),
        Tag::new("IPFS-CID", cid),
        Tag::new("IPFS-Profile", "unixfs-v1-2025"),
        Tag::new("Unix-Time", unix_time.to_string()),
    ]
}

/// The playlist that replays a broadcast from Arweave: chunk items by id, `(seq, kind, item id)` in order.
pub(crate) fn arweave_playlist(
    items: &[(i64, String, String)],
    durations: &[(i64, i64)],
) -> String {
    let chunks: Vec<PlaylistChunk> = items
        .iter()
        .map(|(seq, kind, id)| PlaylistChunk {
            seq: *seq,
            init: kind == "init",
            uri: format!("/{id}"),
            duration_ms: durations
                .iter()
                .find(|(s, _)| s == seq)
                .map_or(0, |(_, d)| *d),
        })
        .collect();
    playlist(&chunks, PlaylistKind::Vod)
}

/// The tags of a broadcast's playlist item.
pub(crate) fn playlist_tags(ctx: &JobContext, unix_time: u64) -> Vec<Tag> {
    vec![
        Tag::new("App-Name", "zipIQ"),
        Tag::new("App-Version", env!("CARGO_PKG_VERSION")),
        Tag::new("Content-Type", "application/vnd.apple.mpegurl"),
        Tag::new("Stream-Id", ctx.stream.clone()),
        Tag::new("Broadcast-Id", ctx.broadcast_id.to_string()),
        Tag::new("Chunk-Kind", "playlist"),
        Tag::new("IPFS-CID", ctx.root_cid.clone().unwrap_or_default()),
        Tag::new("IPFS-Profile", "unixfs-v1-2025"),
        Tag::new("Unix-Time", unix_time.to_string()),
    ]
}

/// Signs `data` with `tags` (RSA-4096 signing is slow: off the async threads).
pub(crate) async fn sign(
    data: Bytes,
    tags: Vec<Tag>,
    wallet: Arc<Wallet>,
) -> Result<DataItem, String> {
    tokio::task::spawn_blocking(move || {
        DataItemBuilder::new(data)
            .tags(tags)
            .sign(wallet.jwk())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_indexes_sort_as_text() {
        assert_eq!(chunk_index(7), "00000007");
        assert!(chunk_index(9) < chunk_index(10));
    }

    #[test]
    fn playlist_points_at_item_ids() {
        let text = arweave_playlist(
            &[
                (0, "init".into(), "INITID".into()),
                (1, "media".into(), "SEGID".into()),
            ],
            &[(1, 2000)],
        );
        assert!(text.contains("#EXT-X-MAP:URI=\"/INITID\""));
        assert!(text.contains("#EXTINF:2.000,\n/SEGID\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    }
}
