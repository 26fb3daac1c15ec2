//! The IPFS gateway's correctness and safety on the real HTTP listener: trustless answers carry a status before any
//! body (a CAR of a codec zipIQ cannot follow is refused with its reason, not a cut connection), `If-None-Match: *`
//! matches only content that exists, a HEAD of a CAR claims no length, a raw block is served as it is even when it
//! does not decode, identity CIDs are refused, and documents or scripts from IPFS never run on the pages' origin;
//! with `gateway.public_url` they keep their types on that origin only, which serves nothing else, and replay links
//! point there.

use bytes::Bytes;
use cid::Cid;
use cid::multihash::Multihash;
use zipiq::store::block::{self, DAG_PB, RAW};
use zipiq::store::car::{CarReader, CarWriter};

use crate::common::*;

/// An unregistered-for-links codec (git-raw): zipIQ stores and serves its blocks but cannot follow their links.
const GIT_RAW: u64 = 0x78;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Stores blocks that the importer would never make (any codec, any bytes) through a CAR import: the CAR's root is
/// a raw block, the others are stored beside it.
async fn store_blocks(server: &zipiq::Server, blocks: &[(Cid, Vec<u8>)]) {
    let anchor = b"anchor".to_vec();
    let anchor_cid = block::cid_v1(RAW, &anchor);
    let mut car = CarWriter::new(Vec::new(), &[anchor_cid]).await.unwrap();
    car.write_block(&anchor_cid, &anchor).await.unwrap();
    for (cid, data) in blocks {
        car.write_block(cid, data).await.unwrap();
    }
    let bytes = car.finish().await.unwrap();
    server.ipfs.import_car(&bytes[..]).await.unwrap();
}

/// A block of a codec whose links zipIQ cannot read, and dag-pb bytes that are no protobuf at all, both stored.
async fn odd_blocks(server: &zipiq::Server) -> ((Cid, Vec<u8>), (Cid, Vec<u8>)) {
    let git = b"tree 0\0".to_vec();
    let git_cid = block::cid_v1(GIT_RAW, &git);
    let broken = vec![0xff, 0xff, 0xff, 0x0f, 0x42];
    let broken_cid = block::cid_v1(DAG_PB, &broken);
    store_blocks(
        server,
        &[(git_cid, git.clone()), (broken_cid, broken.clone())],
    )
    .await;
    ((git_cid, git), (broken_cid, broken))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_whose_links_cannot_be_followed_is_refused_before_streaming() {
    let server = start_server("").await;
    let http = client();
    let base = &server.base;
    let ((git_cid, git), (broken_cid, _)) = odd_blocks(&server.server).await;

    // A status and a reason, not a connection closed mid-answer.
    let car = http
        .get(format!("{base}/ipfs/{git_cid}?format=car"))
        .send()
        .await
        .unwrap();
    assert_eq!(car.status(), 501, "{:?}", car.headers());
    let reason = car
        .text()
        .await
        .expect("a whole body, not a cut connection");
    assert!(reason.contains("0x78"), "{reason}");
    // The same for a node that does not decode.
    let car = http
        .get(format!("{base}/ipfs/{broken_cid}?format=car"))
        .send()
        .await
        .unwrap();
    assert!(car.status().is_server_error(), "{}", car.status());
    assert!(!car.text().await.expect("a whole body").is_empty());
    // The block alone needs no links.
    let scoped = http
        .get(format!("{base}/ipfs/{git_cid}?format=car&dag-scope=block"))
        .send()
        .await
        .unwrap();
    assert_eq!(scoped.status(), 200);
    let body = scoped.bytes().await.unwrap();
    let mut reader = CarReader::new(body.as_ref()).await.unwrap();
    assert_eq!(
        reader.next_block().await.unwrap(),
        Some((git_cid, Bytes::from(git)))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_block_is_served_as_it_is_even_when_it_does_not_decode() {
    let server = start_server("").await;
    let http = client();
    let ((git_cid, git), (broken_cid, broken)) = odd_blocks(&server.server).await;
    for (cid, data) in [(&broken_cid, &broken), (&git_cid, &git)] {
        let raw = http
            .get(format!("{}/ipfs/{cid}?format=raw", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), 200, "{cid}");
        assert_eq!(header(&raw, "content-type"), "application/vnd.ipld.raw");
        assert_eq!(raw.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_car_claims_no_length_as_get_streams_one() {
    let server = start_server("").await;
    let http = client();
    let file = server
        .server
        .ipfs
        .add(Bytes::from(vec![7u8; 300_000]))
        .await
        .unwrap();
    let url = format!("{}/ipfs/{file}?format=car", server.base);
    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert!(get.headers().get("content-length").is_none());
    let get_type = header(&get, "content-type");
    assert!(get.bytes().await.unwrap().len() > 300_000);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(
        head.headers().get("content-length").is_none(),
        "{:?}",
        head.headers()
    );
    assert_eq!(header(&head, "content-type"), get_type);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_star_matches_only_content_that_exists() {
    let server = start_server("").await;
    let http = client();
    let base = &server.base;
    let file = server
        .server
        .ipfs
        .add(Bytes::from_static(b"present"))
        .await
        .unwrap();
    let absent = block::cid_v1(RAW, b"stored nowhere");
    for format in ["", "?format=raw", "?format=car"] {
        let missing = http
            .get(format!("{base}/ipfs/{absent}{format}"))
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "absent {format}");
        let present = http
            .get(format!("{base}/ipfs/{file}{format}"))
            .header("if-none-match", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(present.status(), 304, "present {format}");
    }
    // A named ETag is still answered without touching the repository.
    let cached = http
        .get(format!("{base}/ipfs/{file}"))
        .header("if-none-match", format!("\"{file}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_cids_are_refused() {
    let server = start_server("").await;
    let http = client();
    let page = b"<html><script>alert(document.domain)</script></html>";
    let identity = Cid::new_v1(RAW, Multihash::wrap(block::IDENTITY, page).unwrap());
    for suffix in ["", "?format=raw", "?format=car", "?filename=x.html"] {
        let response = http
            .get(format!("{}/ipfs/{identity}{suffix}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{suffix}");
        assert!(response.text().await.unwrap().contains("identity"));
    }
    // An identity CID linked from a stored directory is refused as well.
    let dir = server
        .server
        .ipfs
        .add_directory(&[("page.html".to_owned(), identity, page.len() as u64)])
        .await
        .unwrap();
    let linked = http
        .get(format!("{}/ipfs/{dir}/page.html", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 400);
    server.stop().await;
}

/// A directory of active documents (and a harmless one) added to the server's node.
async fn active_files(server: &zipiq::Server) -> (Cid, Cid) {
    let html = Bytes::from_static(
        b"<!doctype html><script>parent.postMessage(localStorage.length,'*')</script>",
    );
    let mut entries = Vec::new();
    for (name, bytes) in [
        ("page.html", html.clone()),
        ("index.html", html.clone()),
        (
            "a.svg",
            Bytes::from_static(
                b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>1</script></svg>",
            ),
        ),
        (
            "feed.xml",
            Bytes::from_static(
                b"<x xmlns:h=\"http://www.w3.org/1999/xhtml\"><h:script>1</h:script></x>",
            ),
        ),
        ("app.js", Bytes::from_static(b"fetch('/api/v1/me')")),
        ("live.mpd", Bytes::from_static(b"<MPD/>")),
        ("notes.txt", Bytes::from_static(b"plain")),
    ] {
        let cid = server.ipfs.add(bytes.clone()).await.unwrap();
        entries.push((name.to_owned(), cid, bytes.len() as u64));
    }
    let file = entries[0].1;
    (server.ipfs.add_directory(&entries).await.unwrap(), file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_scripts_from_ipfs_never_run_on_the_pages_origin() {
    let server = start_server("").await;
    let http = client();
    let (dir, html) = active_files(&server.server).await;
    for name in ["page.html", "a.svg", "feed.xml", "app.js", "live.mpd", ""] {
        let response = http
            .get(format!("{}/ipfs/{dir}/{name}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            header(&response, "content-type"),
            "text/plain; charset=utf-8",
            "{name:?}"
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "content-security-policy"), "sandbox");
    }
    // A file name given in the query does not make it a document either.
    let named = http
        .get(format!("{}/ipfs/{html}?filename=x.html", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&named, "content-type"), "text/plain; charset=utf-8");
    let text = http
        .get(format!("{}/ipfs/{dir}/notes.txt", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&text, "content-type"), "text/plain; charset=utf-8");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_gateway_origin_serves_active_types_and_takes_the_replay_links() {
    let server = start_server("[gateway]\npublic_url = \"http://ipfs.test\"\n").await;
    let http = client();
    let (dir, _) = active_files(&server.server).await;
    let url = format!("{}/ipfs/{dir}/page.html", server.base);

    // On the gateway's origin (by Host), the document keeps its type, still sandboxed.
    let there = http
        .get(&url)
        .header("host", "ipfs.test")
        .send()
        .await
        .unwrap();
    assert_eq!(there.status(), 200);
    assert_eq!(header(&there, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&there, "content-security-policy"), "sandbox");
    let svg = http
        .get(format!("{}/ipfs/{dir}/a.svg", server.base))
        .header("host", "ipfs.test:80")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&svg, "content-type"), "image/svg+xml");
    // On the pages' origin it stays text.
    let here = http.get(&url).send().await.unwrap();
    assert_eq!(header(&here, "content-type"), "text/plain; charset=utf-8");
    // The gateway's origin serves nothing but content: no pages, no API.
    for path in ["/", "/login", "/api/v1/live", "/replay/x"] {
        let page = http
            .get(format!("{}{path}", server.base))
            .header("host", "ipfs.test")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404, "{path}");
    }

    // Replay links point at the gateway's origin, and the pages may load from it.
    let broadcast = crate::archive_bundler::record_random_broadcast(&server.server, 3).await;
    let list: serde_json::Value = http
        .get(format!("{}/api/v1/streams/live/broadcasts", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["broadcasts"][0]["ipfs_playlist"],
        "http://ipfs.test/ipfs/bafyfakeroot/index.m3u8"
    );
    let playlist = http
        .get(format!(
            "{}/streams/live/broadcasts/{broadcast}/index.m3u8",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks = server.server.db.chunks_of(broadcast).await.unwrap();
    for c in &chunks {
        assert!(
            playlist.contains(&format!("http://ipfs.test/ipfs/{}", c.cid)),
            "{playlist}"
        );
    }
    let replay = http
        .get(format!("{}/replay/bafyfakeroot", server.base))
        .send()
        .await
        .unwrap();
    let csp = header(&replay, "content-security-policy");
    assert!(csp.contains("connect-src 'self' http://ipfs.test"), "{csp}");
    assert!(
        csp.contains("media-src 'self' blob: http://ipfs.test"),
        "{csp}"
    );
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("<meta name=\"zipiq-gateway\" content=\"http://ipfs.test\">")
    );
    server.stop().await;
}
