//! Recording end to end: a publisher sends a real RTP capture through the SFU; the recorder cuts it, stores every
//! segment in the embedded IPFS node and queues it for archival; when the broadcast ends, its directory's root CID
//! serves a VOD playlist that plays from the gateway, and a second IPFS node fetches it by CID alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zipiq::media::MediaKind;
use zipiq::media::capture::Capture;
use zipiq_client::WhipClient;

use crate::common::*;

pub fn fixture(name: &str) -> Capture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Capture::parse(&std::fs::read(path).expect("fixture")).expect("capture")
}

/// Sends a capture in real time through a WHIP client (payload types and SSRCs are set by the stack).
pub async fn play(publisher: &WhipClient, capture: &Capture) {
    let start = Instant::now();
    for r in &capture.records {
        let due = start + r.at;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let _ = match r.kind {
            MediaKind::Video => publisher.send_video(0, &r.packet).await,
            MediaKind::Audio => publisher.send_audio(&r.packet).await,
        };
    }
}

/// `capture` played `times` times in a row as one publish: arrival times, sequence numbers and RTP timestamps go on
/// from one pass to the next (a longer broadcast from a short fixture).
pub fn looped(capture: &Capture, times: u32) -> Capture {
    let period = capture
        .records
        .last()
        .map_or(Duration::ZERO, |r| r.at + Duration::from_millis(40));
    let count = |kind| capture.records.iter().filter(|r| r.kind == kind).count() as u32;
    let (videos, audios) = (count(MediaKind::Video), count(MediaKind::Audio));
    let mut out = Capture {
        header: capture.header.clone(),
        records: Vec::with_capacity(capture.records.len() * times as usize),
    };
    for pass in 0..times {
        for r in &capture.records {
            let (packets, clock) = match r.kind {
                MediaKind::Video => (videos, 90_000u64),
                MediaKind::Audio => (audios, 48_000u64),
            };
            let mut record = r.clone();
            record.at += period * pass;
            let h = &mut record.packet.header;
            h.sequence_number = h
                .sequence_number
                .wrapping_add((packets.wrapping_mul(pass)) as u16);
            h.timestamp = h.timestamp.wrapping_add(
                (period.as_micros() as u64 * clock / 1_000_000 * u64::from(pass)) as u32,
            );
            out.records.push(record);
        }
    }
    out
}

/// The raw CIDv1 of bytes up to 1 MiB, computed here independently of the node: base32 of
/// [0x01 (CIDv1), 0x55 (raw), 0x12 (sha2-256), 0x20 (32 bytes), digest].
pub fn raw_cid(bytes: &[u8]) -> String {
    let mut cid = vec![0x01, 0x55, 0x12, 0x20];
    cid.extend_from_slice(&Sha256::digest(bytes));
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("b");
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in cid {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(alphabet[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(alphabet[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_broadcast_is_chunked_into_ipfs_and_replays_from_its_root_cid() {
    let server = start_server("[media]\ngrace_period_ms = 500\n").await;
    let publisher = server.publish_live().await;
    let capture = fixture("h264-opus-360p.zqcap");
    play(&publisher, &capture).await;
    assert_eq!(publisher.close().await.expect("delete"), 200);

    let db = server.server.db.clone();
    let stream = db.find_stream("live").await.unwrap().unwrap();
    let mut broadcast = None;
    for _ in 0..200 {
        let b = db.broadcasts_of_stream(stream.id, 5, None).await.unwrap();
        if let Some(b) = b.into_iter().find(|b| b.root_cid.is_some()) {
            broadcast = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let broadcast =
        broadcast.expect("the broadcast ends after the grace period and gets a root CID");
    let root = broadcast.root_cid.clone().unwrap();
    let chunks = db.chunks_of(broadcast.id).await.unwrap();
    assert!(chunks.len() >= 3, "init + media segments: {chunks:?}");
    assert_eq!(chunks[0].kind, zipiq::db::broadcasts::ChunkKind::Init);
    let jobs = db.jobs_of_broadcast(broadcast.id).await.unwrap();
    assert_eq!(
        jobs.len(),
        chunks.len() + 1,
        "one archive job per chunk and one for the directory"
    );

    let http = reqwest::Client::new();
    // Every chunk is served by the gateway, and its CID is the raw CIDv1 of its bytes (all are under 1 MiB).
    for c in &chunks {
        let r = http
            .get(format!("{}/ipfs/{}", server.base, c.cid))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len() as i64, c.size);
        assert_eq!(raw_cid(&bytes), c.cid, "CID checked independently");
    }
    // The API lists it.
    let listing: serde_json::Value = http
        .get(format!("{}/api/v1/streams/live/broadcasts", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["broadcasts"][0]["root_cid"], root.as_str());
    assert_eq!(
        listing["broadcasts"][0]["chunks"].as_array().unwrap().len(),
        chunks.len()
    );
    assert_eq!(
        listing["broadcasts"][0]["chunk_count"].as_i64(),
        Some(chunks.len() as i64)
    );
    // The chunk list pages: two at a time, following next_after, gives every chunk once, in order.
    let mut after: Option<i64> = None;
    let mut paged = Vec::new();
    for _ in 0..chunks.len() + 1 {
        let mut url = format!(
            "{}/api/v1/broadcasts/{}/chunks?limit=2",
            server.base, broadcast.id
        );
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let page: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let items = page["chunks"].as_array().unwrap();
        assert!(items.len() <= 2);
        paged.extend(items.iter().map(|c| c["seq"].as_i64().unwrap()));
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(paged, chunks.iter().map(|c| c.seq).collect::<Vec<_>>());
    // The server's VOD playlist and the one inside the directory.
    let vod = http
        .get(format!(
            "{}/streams/live/broadcasts/{}/index.m3u8",
            server.base, broadcast.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        vod.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let vod = vod.text().await.unwrap();
    assert!(
        vod.contains("#EXT-X-ENDLIST") && vod.contains(&format!("/ipfs/{}", chunks[1].cid)),
        "{vod}"
    );
    let index = http
        .get(format!("{}/ipfs/{root}/index.m3u8", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        index.contains("#EXT-X-MAP:URI=\"init-000000.mp4\""),
        "{index}"
    );
    assert!(index.contains("000001.m4s") && index.contains("#EXT-X-ENDLIST"));
    let seg = http
        .get(format!("{}/ipfs/{root}/000001.m4s", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(seg.status(), 200);
    assert_eq!(
        raw_cid(&seg.bytes().await.unwrap()),
        chunks[1].cid,
        "the directory links the same bytes"
    );

    // A second, independent IPFS node that knows only this node's address fetches the broadcast over bitswap.
    let other_dir = tempfile::tempdir().unwrap();
    let other = zipiq::store::IpfsNode::start(&zipiq::store::IpfsConfig {
        repo_dir: other_dir.path().join("ipfs"),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: Vec::new(),
        fetch_from_network: true,
        fetch_timeout_ms: 20_000,
        announce: false,
    })
    .await
    .expect("second node");
    let addrs = server.server.ipfs.listen_addrs().await.unwrap();
    let addr = addrs
        .iter()
        .find(|a| a.to_string().contains("127.0.0.1"))
        .expect("loopback address")
        .clone();
    other
        .connect(addr)
        .await
        .expect("connect to the first node");
    let root_cid: zipiq::store::Cid = root.parse().unwrap();
    let path = zipiq::store::ContentPath::parse(&format!("/ipfs/{root}/000001.m4s")).unwrap();
    let resolved = tokio::time::timeout(Duration::from_secs(30), other.resolve(&path))
        .await
        .expect("in time")
        .expect("resolves over bitswap");
    let _ = root_cid;
    let mut fetched = Vec::new();
    let size = match resolved.kind {
        zipiq::store::EntryKind::File { size } => size,
        _ => panic!("a file"),
    };
    let mut stream = other.read_file(&resolved, 0..size);
    use futures::TryStreamExt;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.try_next())
        .await
        .expect("in time")
        .expect("bytes")
    {
        fetched.extend_from_slice(&chunk);
    }
    assert_eq!(
        raw_cid(&fetched),
        chunks[1].cid,
        "byte-identical from the second node"
    );
    other.shutdown().await;
    server.stop().await;
}

/// Broadcast listings page newest first with `before`, and show at most 100 chunks of a broadcast inline, with
/// `chunk_count` and `chunks_truncated` telling the rest is on the chunk list (issue "Hardening I", item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_listings_page_with_before_and_show_at_most_100_chunks_inline() {
    use zipiq::db::broadcasts::NewChunk;
    let server = start_server("").await;
    let db = &server.server.db;
    let stream = db.find_stream("live").await.unwrap().unwrap();
    let cid = server
        .server
        .ipfs
        .add(bytes::Bytes::from_static(b"a chunk"))
        .await
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for chunks in [105_i64, 1, 2] {
        let b = db.create_broadcast(stream.id, "test").await.unwrap();
        for seq in 0..chunks {
            db.insert_chunk(&NewChunk {
                start_ms: seq * 2000,
                end_ms: (seq + 1) * 2000,
                ..chunk(b, seq, cid.clone(), 7)
            })
            .await
            .unwrap();
        }
        db.finish_broadcast(b, &cid).await.unwrap();
        ids.push(b);
    }
    let http = reqwest::Client::new();
    let list = |query: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/streams/live/broadcasts{query}", server.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let first = list("?limit=2".into()).await;
    let page: Vec<i64> = first["broadcasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page, vec![ids[2], ids[1]], "newest first");
    assert_eq!(first["broadcasts"][0]["chunk_count"], 2);
    assert_eq!(first["broadcasts"][0]["chunks_truncated"], false);
    let second = list(format!("?limit=2&before={}", ids[1])).await;
    let rest = second["broadcasts"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "only the oldest is before the second");
    assert_eq!(rest[0]["id"].as_i64(), Some(ids[0]));
    assert_eq!(rest[0]["chunk_count"], 105);
    assert_eq!(rest[0]["chunks"].as_array().unwrap().len(), 100);
    assert_eq!(rest[0]["chunks_truncated"], true);
    let none = list(format!("?before={}", ids[0])).await;
    assert!(none["broadcasts"].as_array().unwrap().is_empty());
    server.stop().await;
}
