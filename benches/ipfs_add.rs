//! IPFS add bench: a CMAF segment (1 MiB and 3 MiB) added to the embedded node, beside the raw sha2-256 of the same
//! bytes in the same run. Three stages, so the cost of each layer shows:
//! - `sha256`: hashing the bytes once (the floor: an add hashes every byte at least once);
//! - `unixfs_import`: chunking and building the `unixfs-v1-2025` DAG in memory (hashes + dag-pb encoding);
//! - `node_add`: `IpfsNode::add` end to end: import, write every block to the on-disk repository (fsync'd by
//!   rust-ipfs), recursive pin. Each iteration adds different bytes so nothing is deduplicated.
//! - `node_add_x8`: eight such adds at once (eight streams cutting segments together), throughput counted over
//!   the eight: the repository's fsyncs overlap, which is how the side path runs with many streams.
//!
//! Throughput is in bytes of segment. Target (ARCHITECTURE.md): the side path keeps up with 100 streams at
//! 6 Mbit/s, i.e. 75 MB/s of segments on one core.
//!
//! Run: `cargo bench --bench ipfs_add`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use zipiq::store::unixfs::import_file;
use zipiq::store::{IpfsConfig, IpfsNode};

const SIZES: [(&str, usize); 2] = [("1MiB", 1_048_576), ("3MiB", 3 * 1_048_576)];

fn segment(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn ipfs_add(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let repo = tempfile::tempdir().expect("temporary repository");
    let config = IpfsConfig {
        repo_dir: repo.path().to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        announce: false,
        ..IpfsConfig::default()
    };
    let node = runtime
        .block_on(IpfsNode::start(&config))
        .expect("node starts");
    let counter = AtomicU64::new(1);

    let mut group = c.benchmark_group("ipfs_add");
    group.sample_size(20);
    for (label, len) in SIZES {
        let bytes = segment(len, 42);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("sha256", label), &bytes, |b, bytes| {
            b.iter(|| Sha256::digest(bytes.as_ref()))
        });
        group.bench_with_input(
            BenchmarkId::new("unixfs_import", label),
            &bytes,
            |b, bytes| b.iter(|| import_file(bytes)),
        );
        group.bench_function(BenchmarkId::new("node_add", label), |b| {
            b.iter_batched(
                || {
                    // A fresh segment each time: same length, different first bytes.
                    let mut fresh = bytes.to_vec();
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    fresh[..8].copy_from_slice(&n.to_le_bytes());
                    Bytes::from(fresh)
                },
                |fresh| runtime.block_on(node.add(fresh)).expect("added"),
                BatchSize::SmallInput,
            )
        });
        group.throughput(Throughput::Bytes(8 * len as u64));
        group.bench_function(BenchmarkId::new("node_add_x8", label), |b| {
            b.iter_batched(
                || {
                    (0..8)
                        .map(|_| {
                            let mut fresh = bytes.to_vec();
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            fresh[..8].copy_from_slice(&n.to_le_bytes());
                            Bytes::from(fresh)
                        })
                        .collect::<Vec<_>>()
                },
                |batch| {
                    runtime.block_on(async {
                        let adds = batch.into_iter().map(|fresh| node.add(fresh));
                        for added in futures::future::join_all(adds).await {
                            added.expect("added");
                        }
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    runtime.block_on(node.shutdown());
}

criterion_group!(benches, ipfs_add);
criterion_main!(benches);
