//! Tests of the embedded node with real rust-ipfs nodes on loopback: CIDs checked against independent
//! implementations, bitswap between two nodes, persistence across restarts, CAR export/import.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::store::{Cid, ContentPath, EntryKind, IpfsConfig, IpfsNode, StoreError};
use crate::test_support::repo_root;

/// Every test gets this long, network included.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn test_config(repo: &Path) -> IpfsConfig {
    IpfsConfig {
        repo_dir: repo.to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        bootstrap: Vec::new(),
        fetch_from_network: false,
        fetch_timeout_ms: 10_000,
        announce: true,
    }
}

/// Deterministic, incompressible-looking test bytes.
pub(crate) fn test_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// RFC 4648 base32, lower case, no padding: the multibase `b` alphabet, written here so the expected CIDs do not
/// come from the `cid` crate under test.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The raw CIDv1 of `bytes`, computed by hand: `b` + base32(0x01 0x55 0x12 0x20 || sha256(bytes)).
fn raw_cid_by_hand(bytes: &[u8]) -> String {
    let mut binary = vec![0x01, 0x55, 0x12, 0x20];
    binary.extend_from_slice(&Sha256::digest(bytes));
    format!("b{}", base32_lower(&binary))
}

/// The CID `ipfs-unixfs-importer` (profile unixfs-v1-2025) gives to `args` (see tests/js/unixfs-cid.mjs).
fn js_importer_cid(args: &[&Path]) -> String {
    let root = repo_root();
    let module = root.join("node_modules/ipfs-unixfs-importer/package.json");
    assert!(
        module.is_file(),
        "{} is missing: run `npm install --no-audit --no-fund` in {} (the CID cross-check needs the JavaScript \
         importer)",
        module.display(),
        root.display()
    );
    let output = std::process::Command::new("node")
        .arg(root.join("tests/js/unixfs-cid.mjs"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("`node` must be installed to cross-check CIDs");
    assert!(
        output.status.success(),
        "unixfs-cid.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn read_all(node: &IpfsNode, cid: Cid, segments: &[&str]) -> Result<Bytes, StoreError> {
    let path = ContentPath {
        root: cid,
        segments: segments.iter().map(|s| s.to_string()).collect(),
        trailing_slash: false,
    };
    let resolved = node.resolve(&path).await?;
    let EntryKind::File { size } = resolved.kind else {
        panic!("{cid}/{segments:?} is not a file: {:?}", resolved.kind);
    };
    let chunks: Vec<Bytes> = node.read_file(&resolved, 0..size).try_collect().await?;
    Ok(Bytes::from(chunks.concat()))
}

/// A started node on a temporary repository of its own, removed after the node is dropped.
struct TempNode {
    node: IpfsNode,
    _repo: tempfile::TempDir,
}

impl std::ops::Deref for TempNode {
    type Target = IpfsNode;
    fn deref(&self) -> &IpfsNode {
        &self.node
    }
}

/// A node on a fresh temporary repository with [`test_config`], changed by `adjust`.
async fn temp_node(adjust: impl FnOnce(&mut IpfsConfig)) -> TempNode {
    let repo = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(repo.path());
    adjust(&mut config);
    let node = IpfsNode::start(&config).await.expect("node starts");
    TempNode { node, _repo: repo }
}

/// Dials `to`'s first listen address from `from`.
async fn connect(from: &IpfsNode, to: &IpfsNode) {
    let addr = to
        .listen_addrs()
        .await
        .expect("addresses")
        .into_iter()
        .next()
        .expect("the node listens");
    from.connect(addr).await.expect("the nodes connect");
}

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test took longer than its time bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_up_to_one_mib_get_the_raw_cid_of_their_sha256() {
    bounded(async {
        let node = temp_node(|_| {}).await;
        for (len, seed) in [(0, 1), (1, 2), (188 * 1000, 3), (1_048_576, 4)] {
            let bytes = test_bytes(len, seed);
            let cid = node.add(bytes.clone()).await.expect("added");
            assert_eq!(cid.to_string(), raw_cid_by_hand(&bytes), "{len} bytes");
            assert!(
                node.is_pinned(&cid).await.expect("pin query"),
                "{len} bytes pinned"
            );
            assert_eq!(read_all(&node, cid, &[]).await.expect("reads"), bytes);
        }
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larger_files_and_directories_match_the_javascript_importer() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = IpfsNode::start(&test_config(&dir.path().join("repo")))
            .await
            .expect("node starts");
        let big = test_bytes(2_621_440, 7);
        let odd = test_bytes(3 * 1_048_576 + 17, 8);
        let small = test_bytes(5000, 9);
        let files = [
            ("000001.m4s", &big),
            ("000002.m4s", &odd),
            ("init.mp4", &small),
        ];
        let mut entries = Vec::new();
        let mut paths = Vec::new();
        for (name, bytes) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes.as_ref()).expect("write file");
            let cid = node.add(bytes.clone()).await.expect("added");
            assert_eq!(cid.to_string(), js_importer_cid(&[&path]), "{name}");
            entries.push((name.to_owned(), cid, bytes.len() as u64));
            paths.push(path);
        }
        let root = node.add_directory(&entries).await.expect("directory");
        let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let mut args = vec![Path::new("--dir")];
        args.extend(path_refs);
        assert_eq!(root.to_string(), js_importer_cid(&args));
        assert!(node.is_pinned(&root).await.expect("pin query"));
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ranges_cross_chunk_boundaries_correctly() {
    bounded(async {
        let node = temp_node(|_| {}).await;
        let bytes = test_bytes(2_621_440, 11);
        let cid = node.add(bytes.clone()).await.expect("added");
        let path = ContentPath {
            root: cid,
            segments: Vec::new(),
            trailing_slash: false,
        };
        let resolved = node.resolve(&path).await.expect("resolves");
        let mib = 1_048_576u64;
        for range in [
            0..1,
            mib - 3..mib + 3,
            0..2_621_440,
            2 * mib..2 * mib + 10,
            2_621_439..5_000_000,
            7..7,
        ] {
            let chunks: Vec<Bytes> = node
                .read_file(&resolved, range.clone())
                .try_collect()
                .await
                .expect("reads");
            let end = range.end.min(bytes.len() as u64) as usize;
            let start = (range.start as usize).min(end);
            assert_eq!(chunks.concat(), bytes[start..end].to_vec(), "{range:?}");
        }
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_content_is_not_found_at_once_when_the_network_is_off() {
    bounded(async {
        let node = temp_node(|_| {}).await;
        let absent = crate::store::block::cid_v1(crate::store::block::RAW, b"nobody has this");
        let started = Instant::now();
        let err = read_all(&node, absent, &[]).await.expect_err("absent");
        assert!(
            matches!(err, StoreError::NotFound(cid) if cid == absent),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_fetches_a_directory_over_bitswap_knowing_only_an_address() {
    bounded(async {
        let a = temp_node(|_| {}).await;
        let b = temp_node(|c| {
            c.fetch_from_network = true;
        })
        .await;
        assert_ne!(a.peer_id(), b.peer_id());

        let init = test_bytes(900, 21);
        let segment = test_bytes(2_621_440, 22);
        let playlist = Bytes::from_static(b"#EXTM3U\n#EXT-X-ENDLIST\n");
        let mut entries = Vec::new();
        for (name, bytes) in [
            ("init.mp4", &init),
            ("000001.m4s", &segment),
            ("index.m3u8", &playlist),
        ] {
            let cid = a.add(bytes.clone()).await.expect("added");
            entries.push((name.to_owned(), cid, bytes.len() as u64));
        }
        let root = a.add_directory(&entries).await.expect("directory");

        connect(&b, &a).await;
        assert!(b.connected_peers().await >= 1);

        for (name, bytes) in [
            ("init.mp4", &init),
            ("000001.m4s", &segment),
            ("index.m3u8", &playlist),
        ] {
            let fetched = read_all(&b, root, &[name])
                .await
                .expect("fetched over bitswap");
            assert!(fetched == *bytes, "{name} differs after bitswap");
        }
        b.pin(&root).await.expect("b pins the whole broadcast");
        assert!(b.is_pinned(&root).await.expect("pin query"));
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_peer_id_blocks_and_pins() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = test_config(dir.path());
        let bytes = test_bytes(1_500_000, 31);
        let (peer_id, cid) = {
            let node = IpfsNode::start(&config).await.expect("first start");
            let cid = node.add(bytes.clone()).await.expect("added");
            let peer_id = node.peer_id();
            node.shutdown().await;
            (peer_id, cid)
        };
        let node = IpfsNode::start(&config).await.expect("second start");
        assert_eq!(node.peer_id(), peer_id);
        assert!(node.has_block(&cid).await.expect("has"));
        assert!(node.is_pinned(&cid).await.expect("pin query"));
        assert_eq!(read_all(&node, cid, &[]).await.expect("reads"), bytes);
        assert_eq!(node.reprovide_all().await.expect("reprovide"), 1);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_export_imports_into_another_repository_byte_for_byte() {
    bounded(async {
        let a = temp_node(|_| {}).await;
        let b = temp_node(|_| {}).await;
        let segment = test_bytes(2_200_000, 41);
        let init = test_bytes(700, 42);
        let s = a.add(segment.clone()).await.expect("added");
        let i = a.add(init.clone()).await.expect("added");
        let root = a
            .add_directory(&[
                ("000001.m4s".to_owned(), s, segment.len() as u64),
                ("init.mp4".to_owned(), i, init.len() as u64),
            ])
            .await
            .expect("directory");
        let mut car = Vec::new();
        a.export_car(&root, &mut car).await.expect("exported");
        let roots = b.import_car(car.as_slice()).await.expect("imported");
        assert_eq!(roots, vec![root]);
        assert!(b.is_pinned(&root).await.expect("pin query"));
        assert_eq!(
            read_all(&b, root, &["000001.m4s"]).await.expect("reads"),
            segment
        );
        assert_eq!(
            read_all(&b, root, &["init.mp4"]).await.expect("reads"),
            init
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_car_without_its_whole_dag_fails_and_pins_nothing() {
    bounded(async {
        let a = temp_node(|_| {}).await;
        let b = temp_node(|_| {}).await;
        let root = a.add(test_bytes(2_100_000, 51)).await.expect("added");
        // Only the root node: its leaves are missing.
        let root_block = a.block(&root).await.expect("root block");
        let mut car = crate::store::car::CarWriter::new(Vec::new(), &[root])
            .await
            .expect("header");
        car.write_block(&root, &root_block).await.expect("block");
        let car = car.finish().await.expect("finish");
        let err = b.import_car(car.as_slice()).await.expect_err("incomplete");
        assert!(matches!(err, StoreError::IncompleteDag { .. }), "{err}");
        assert!(!b.is_pinned(&root).await.expect("pin query"));
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_entry_with_the_wrong_size_is_refused() {
    bounded(async {
        let node = temp_node(|_| {}).await;
        let cid = node.add(test_bytes(1000, 61)).await.expect("added");
        let err = node
            .add_directory(&[("x.m4s".to_owned(), cid, 999)])
            .await
            .expect_err("wrong size");
        assert!(
            matches!(err, StoreError::SizeMismatch { actual: 1000, .. }),
            "{err}"
        );
        let absent = crate::store::block::cid_v1(crate::store::block::RAW, b"absent");
        let err = node
            .add_directory(&[("y.m4s".to_owned(), absent, 6)])
            .await
            .expect_err("absent");
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_roots_are_announced_to_dht_peers() {
    bounded(async {
        let a = temp_node(|_| {}).await;
        let b = temp_node(|_| {}).await;
        a.force_dht_server().await;
        b.force_dht_server().await;
        connect(&a, &b).await;
        // Give identify a moment to put each peer in the other's routing table.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cid = a.add(test_bytes(4000, 81)).await.expect("added");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let providers = b
                .find_providers(&cid, Duration::from_secs(2))
                .await
                .expect("lookup");
            if providers.contains(&a.peer_id()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "b never learned that a provides {cid}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_past_256_kib_is_hamt_sharded_like_the_javascript_importer() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path().join("files");
        std::fs::create_dir(&files).expect("files dir");
        let node = IpfsNode::start(&test_config(&dir.path().join("repo")))
            .await
            .expect("node starts");
        // Long names make a flat node pass 256 KiB with ~1000 entries (each link is ~280 bytes).
        let padding = "x".repeat(230);
        let mut files_to_add = Vec::new();
        let mut paths = Vec::new();
        for i in 0..1000 {
            let name = format!("segment-{padding}-{i:06}.m4s");
            let bytes = test_bytes(64 + i % 7, 1000 + i as u64);
            let path = files.join(&name);
            std::fs::write(&path, bytes.as_ref()).expect("write file");
            files_to_add.push((name, bytes));
            paths.push(path);
        }
        // Added 16 at a time: each add syncs its blocks and pin to disk.
        let entries: Vec<(String, Cid, u64)> = futures::stream::iter(files_to_add)
            .map(|(name, bytes)| {
                let node = &node;
                async move {
                    let cid = node.add(bytes.clone()).await.expect("added");
                    (name, cid, bytes.len() as u64)
                }
            })
            .buffered(16)
            .collect()
            .await;
        let root = node.add_directory(&entries).await.expect("directory");
        let mut args = vec![Path::new("--dir")];
        args.extend(paths.iter().map(PathBuf::as_path));
        let root_node =
            crate::store::dagpb::PbNode::decode(&node.block(&root).await.expect("root block"))
                .expect("root decodes");
        let root_data =
            crate::store::dagpb::UnixfsData::decode(root_node.data.as_ref().expect("data"))
                .expect("data decodes");
        assert_eq!(root_data.kind, crate::store::dagpb::DataType::HamtShard);
        assert_eq!(
            root.to_string(),
            js_importer_cid(&args),
            "HAMT root differs from the JS importer's"
        );

        // Every entry resolves through the shards; a listing finds them all.
        for (name, cid, _) in entries.iter().step_by(97) {
            let path = ContentPath {
                root,
                segments: vec![name.clone()],
                trailing_slash: false,
            };
            let resolved = node
                .resolve(&path)
                .await
                .expect("resolves through the HAMT");
            assert_eq!(resolved.cid, *cid, "{name}");
        }
        let absent = ContentPath {
            root,
            segments: vec!["nothing-here.m4s".to_owned()],
            trailing_slash: false,
        };
        assert!(matches!(
            node.resolve(&absent).await,
            Err(StoreError::NoSuchPath { .. })
        ));
        let listing = node
            .resolve(&ContentPath {
                root,
                segments: Vec::new(),
                trailing_slash: true,
            })
            .await
            .expect("root resolves");
        assert_eq!(listing.kind, EntryKind::Directory);
        let listed = node.list_directory(&listing).await.expect("lists");
        assert_eq!(listed.len(), entries.len());
        // Page by page (as the gateway's listing does): every entry once, pages bounded, the last says so.
        let mut paged = Vec::new();
        loop {
            let (page, more) = node
                .list_directory_page(&listing, paged.len(), 300)
                .await
                .expect("a page");
            assert!(page.len() <= 300);
            assert_eq!(
                more,
                paged.len() + page.len() < entries.len(),
                "after {}",
                paged.len()
            );
            paged.extend(page.into_iter().map(|e| e.name));
            if !more {
                break;
            }
        }
        let mut names: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
        names.sort();
        paged.sort();
        assert_eq!(paged, names);
        let (past, more) = node
            .list_directory_page(&listing, entries.len() + 5, 300)
            .await
            .expect("past the end");
        assert!(past.is_empty() && !more);
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_fetch_of_content_nobody_has_ends_at_the_timeout() {
    bounded(async {
        let a = temp_node(|_| {}).await;
        let b = temp_node(|c| {
            c.fetch_from_network = true;
            c.fetch_timeout_ms = 1500;
        })
        .await;
        connect(&b, &a).await;
        let absent =
            crate::store::block::cid_v1(crate::store::block::RAW, b"neither node has this");
        let started = Instant::now();
        let err = b.block(&absent).await.expect_err("nobody has it");
        let waited = started.elapsed();
        assert!(
            matches!(err, StoreError::FetchTimeout(cid) if cid == absent),
            "{err}"
        );
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "gave up after {waited:?}"
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}
