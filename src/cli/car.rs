//! `zipiq export` and `zipiq import`: a broadcast written as a CAR v1 file, and a CAR v1 file imported into the
//! IPFS repository, both through the node opened offline (the server must be stopped: it holds the repository).

use std::path::Path;

use crate::config::Config;
use crate::db::Db;
use crate::store::{Cid, IpfsNode};

/// `zipiq export <broadcast> --car <file>`: the ended broadcast's root and every block under it.
pub async fn export(config: &Config, broadcast: i64, car: &Path) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    let b = db
        .broadcast(broadcast)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no broadcast {broadcast}"))?;
    let root = b
        .root_cid
        .ok_or_else(|| anyhow::anyhow!("broadcast {broadcast} has not ended yet (no root CID)"))?;
    let root: Cid = root.parse()?;
    let node = offline_node(config).await?;
    let file = tokio::fs::File::create(car).await?;
    let result = node.export_car(&root, file).await;
    node.shutdown().await;
    result?;
    println!(
        "wrote broadcast {broadcast} (root {root}) to {}",
        car.display()
    );
    Ok(())
}

/// `zipiq import <file>`: every block verified, the roots pinned.
pub async fn import(config: &Config, file: &Path) -> anyhow::Result<()> {
    let node = offline_node(config).await?;
    let reader = tokio::fs::File::open(file).await?;
    let result = node.import_car(reader).await;
    node.shutdown().await;
    let roots = result?;
    for r in roots {
        println!("imported and pinned {r}");
    }
    Ok(())
}

/// The IPFS node on the configured repository, without listening (the CLI's own access).
async fn offline_node(config: &Config) -> anyhow::Result<IpfsNode> {
    let mut cfg = config.ipfs.clone();
    cfg.listen = Vec::new();
    cfg.bootstrap = Vec::new();
    cfg.announce = false;
    Ok(IpfsNode::start(&cfg).await?)
}
