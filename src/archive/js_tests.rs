//! Cross-implementation tests: what zipIQ signs, the JavaScript reference implementations (arbundles 0.11.2,
//! arweave-js 1.15.7, run by `node` from the repository's node_modules) verify, and what they sign, zipIQ parses and
//! verifies. This is the proof that data items sign `deepHash(["dataitem", "1", "1", owner, target, anchor,
//! <raw Avro tags>, data])` as arbundles does. The scripts are in tests/js/.

use std::process::Command;

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::archive::ans104::{self, DataItem, DataItemBuilder};
use crate::archive::arweave_tx::{Transaction, TransactionBuilder, TransactionJson};
use crate::archive::avro_tags::Tag;
use crate::archive::b64url;
use crate::archive::merkle::DataTree;
use crate::archive::test_wallets;
use crate::test_support::repo_root;

/// Runs `node tests/js/<script> args...` from the repository root and gives its stdout; fails the test clearly
/// when node or the npm packages are missing.
pub(crate) fn node(script: &str, args: &[&str]) -> String {
    let root = repo_root();
    for package in ["arbundles", "arweave"] {
        let manifest = root.join("node_modules").join(package).join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: run `npm install --no-audit --no-fund` in {} (the cross-implementation tests need \
             the JavaScript reference libraries)",
            manifest.display(),
            root.display()
        );
    }
    let node = std::env::var("ZIPIQ_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
    let output = Command::new(&node)
        .arg(root.join("tests/js").join(script))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| {
            panic!("`{node}` must be installed for the cross-implementation tests: {e}")
        });
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the scripts print UTF-8")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn wallet_path(name: &str) -> String {
    repo_root()
        .join("tests/data/wallets")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn tags_json(tags: &[Tag]) -> Value {
    serde_json::to_value(tags).expect("tags serialize")
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::fill(&mut bytes[..]);
    bytes
}

#[test]
fn items_zipiq_signs_verify_with_arbundles() {
    let wallet = test_wallets::a();
    let items = vec![
        DataItemBuilder::new(&b"a CMAF segment"[..])
            .tag("App-Name", "zipIQ")
            .tag("Content-Type", "video/mp4")
            .tag("Chunk-Index", "00000007")
            .sign(wallet)
            .unwrap(),
        DataItemBuilder::new(random_bytes(1024 * 1024 + 3))
            .tag(
                "IPFS-CID",
                "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
            )
            .target(Some([0xab; 32]))
            .sign(wallet)
            .unwrap(),
        DataItemBuilder::new(Bytes::new())
            .anchor(None)
            .sign(wallet)
            .unwrap(),
        DataItemBuilder::new(&b"unicode"[..])
            .tag("Ünïcödé", "✓ tag 🎥")
            .tag("n".repeat(1024), "v".repeat(3000))
            .sign(wallet)
            .unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let path = dir.path().join(format!("zipiq-{index}.bin"));
        std::fs::write(&path, item.as_bytes()).unwrap();
        files.push(path.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let seen = json_lines(&node("ans104-verify.mjs", &args));
    assert_eq!(seen.len(), items.len());
    for (item, seen) in items.iter().zip(&seen) {
        assert_eq!(seen["valid"], true, "arbundles refuses {item:?}");
        assert_eq!(seen["id"], item.id_b64url());
        assert_eq!(seen["signatureType"], 1);
        assert_eq!(seen["owner"], b64url::encode(wallet.owner()));
        assert_eq!(
            seen["target"],
            item.target().map(b64url::encode).unwrap_or_default()
        );
        assert_eq!(
            seen["anchor"],
            item.anchor().map(b64url::encode).unwrap_or_default()
        );
        assert_eq!(seen["tags"], tags_json(item.tags()));
        assert_eq!(seen["dataSha256"], hex::encode(Sha256::digest(item.data())));
    }

    // The same items in a zipIQ bundle read back in arbundles.
    let bundle = ans104::bundle(&items);
    let path = dir.path().join("bundle.bin");
    std::fs::write(&path, &bundle).unwrap();
    let seen = json_lines(&node(
        "ans104-verify.mjs",
        &["--bundle", &path.to_string_lossy()],
    ));
    assert_eq!(seen[0]["valid"], true);
    let ids: Vec<String> = items.iter().map(DataItem::id_b64url).collect();
    assert_eq!(seen[0]["ids"], serde_json::to_value(&ids).unwrap());
    assert!(seen[1..].iter().all(|item| item["valid"] == true));
}

#[test]
fn a_tampered_item_is_refused_by_arbundles_too() {
    let item = DataItemBuilder::new(&b"honest data"[..])
        .tag("App-Name", "zipIQ")
        .sign(test_wallets::a())
        .unwrap();
    let mut bytes = item.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.bin");
    std::fs::write(&path, &bytes).unwrap();
    let seen = json_lines(&node("ans104-verify.mjs", &[&path.to_string_lossy()]));
    assert_eq!(seen[0]["valid"], false);
    assert!(DataItem::parse(bytes).unwrap().verify().is_err());
}

#[test]
fn items_and_bundles_arbundles_signs_parse_and_verify_in_zipiq() {
    let dir = tempfile::tempdir().unwrap();
    let made = json_lines(&node(
        "ans104-sign.mjs",
        &[
            &wallet_path("test-only-b.json"),
            &dir.path().to_string_lossy(),
        ],
    ));
    assert!(made.len() >= 4);
    for expected in &made {
        let file = expected["file"].as_str().unwrap();
        let item = DataItem::parse(std::fs::read(file).unwrap()).unwrap();
        item.verify()
            .unwrap_or_else(|e| panic!("{file}: arbundles' signature refused: {e}"));
        assert_eq!(item.id_b64url(), expected["id"].as_str().unwrap());
        assert_eq!(
            b64url::encode(item.owner()),
            expected["owner"].as_str().unwrap()
        );
        assert_eq!(item.owner_address(), test_wallets::B_ADDRESS);
        assert_eq!(
            item.target().map(b64url::encode).unwrap_or_default(),
            expected["target"].as_str().unwrap()
        );
        assert_eq!(
            item.anchor().map(b64url::encode).unwrap_or_default(),
            expected["anchor"].as_str().unwrap()
        );
        assert_eq!(tags_json(item.tags()), expected["tags"]);
        assert_eq!(
            hex::encode(Sha256::digest(item.data())),
            expected["dataSha256"].as_str().unwrap()
        );
    }
    let bundle = std::fs::read(dir.path().join("bundle.bin")).unwrap();
    let items = ans104::parse_bundle(bundle).unwrap();
    assert_eq!(items.len(), made.len());
    for (item, expected) in items.iter().zip(&made) {
        item.verify().unwrap();
        assert_eq!(item.id_b64url(), expected["id"].as_str().unwrap());
    }
}

#[test]
fn transactions_zipiq_signs_verify_with_arweave_js() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 5000, 700 * 1024 + 17] {
        let data = random_bytes(len);
        let tree = DataTree::new(&data);
        let tx = TransactionBuilder::new()
            .data(tree.as_ref())
            .last_tx(random_bytes(48))
            .reward(987_654_321_000)
            .tags(ans104::bundle_tags())
            .tag("App-Name", "zipIQ")
            .sign(test_wallets::a())
            .unwrap();
        let tx_path = dir.path().join(format!("tx-{len}.json"));
        std::fs::write(&tx_path, serde_json::to_vec(&tx.to_json(None)).unwrap()).unwrap();
        let data_path = dir.path().join(format!("data-{len}.bin"));
        std::fs::write(&data_path, &data).unwrap();
        let seen = json_lines(&node(
            "arweave-tx.mjs",
            &[
                "verify",
                &tx_path.to_string_lossy(),
                &data_path.to_string_lossy(),
            ],
        ));
        assert_eq!(
            seen[0]["valid"], true,
            "arweave-js refuses the transaction with {len} bytes of data"
        );
        let js_root = seen[0]["dataRoot"].as_str().unwrap();
        match &tree {
            Some(tree) => assert_eq!(b64url::encode(tree.data_root), js_root),
            // arweave-js gives the root of empty data as the hash of one empty chunk; transactions without data
            // carry an empty root instead (arweave-js `prepareChunks`), as zipIQ's do.
            None => assert_eq!(tx.to_json(None).data_root, ""),
        }
    }
}

#[test]
fn transactions_arweave_js_signs_verify_in_zipiq() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(300 * 1024);
    let data_path = dir.path().join("data.bin");
    std::fs::write(&data_path, &data).unwrap();
    let last_tx = b64url::encode(random_bytes(48));
    let out = node(
        "arweave-tx.mjs",
        &[
            "sign",
            &wallet_path("test-only-a.json"),
            &data_path.to_string_lossy(),
            &last_tx,
            "4242",
        ],
    );
    let json: TransactionJson = serde_json::from_str(out.trim()).unwrap();
    let tx = Transaction::from_json(&json).unwrap();
    tx.verify().unwrap();
    assert_eq!(tx.owner, test_wallets::a().owner());
    assert_eq!(tx.reward, 4242);
    assert_eq!(tx.tags, vec![Tag::new("App-Name", "arweave-js")]);
    assert_eq!(tx.data_root, DataTree::new(&data).map(|t| t.data_root));
    let mut changed = tx;
    changed.reward += 1;
    assert!(changed.verify().is_err());
}
