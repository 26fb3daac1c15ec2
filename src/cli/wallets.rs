//! `zipiq wallets list|disable|enable|create`: the Arweave wallets of the archive pool, an operator's switch to
//! stop (or resume) using one, and a new wallet file made in the wallets directory.

use clap::Subcommand;

use crate::archive::jwk::Jwk;
use crate::archive::wallets::WalletPool;
use crate::config::Config;

/// The `zipiq wallets` commands.
#[derive(Subcommand, Debug)]
pub enum WalletsAction {
    /// Wallet files, addresses and whether an operator disabled them.
    List,
    /// Stop using a wallet at once (lost or compromised); running servers notice within seconds.
    Disable {
        /// The wallet's Arweave address.
        address: String,
        /// Why, recorded with it.
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
    },
    /// Use a disabled wallet again.
    Enable {
        /// The wallet's Arweave address.
        address: String,
    },
    /// Make a new Arweave wallet (RSA-4096 JWK) in the wallets directory and print its address to fund.
    Create,
}

/// Runs one `zipiq wallets` command (`create` needs no database).
pub async fn run(action: WalletsAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.archive.wallets_path();
    match action {
        WalletsAction::Create => {
            crate::secrets::create_private_dir(&dir)?;
            let jwk = tokio::task::spawn_blocking(Jwk::generate).await??;
            let path = dir.join(format!("{}.json", jwk.address()));
            write_private(&path, jwk.to_json().as_bytes())?;
            println!("new wallet {} in {}", jwk.address(), path.display());
            println!(
                "fund it with AR (or Turbo credits for the bundler) before it can archive anything"
            );
            return Ok(());
        }
        WalletsAction::List => {
            let db = super::open_db(config).await?;
            let pool = WalletPool::load(&dir)?;
            pool.apply_disabled(&db.disabled_wallets().await?);
            for w in pool.statuses() {
                println!(
                    "{}\t{}\t{}",
                    w.address,
                    if w.disabled { "disabled" } else { "enabled" },
                    w.file
                );
            }
            db.close().await;
        }
        WalletsAction::Disable { address, reason } => {
            let db = super::open_db(config).await?;
            db.set_wallet_disabled(&address, true, &reason, "cli")
                .await?;
            tracing::warn!(target: "audit", action = "disable", wallet = %address, by = "cli", reason = %reason, "wallet disabled");
            println!("wallet {address} disabled; running servers stop using it within seconds");
            db.close().await;
        }
        WalletsAction::Enable { address } => {
            let db = super::open_db(config).await?;
            db.set_wallet_disabled(&address, false, "", "cli").await?;
            tracing::warn!(target: "audit", action = "enable", wallet = %address, by = "cli", "wallet enabled");
            println!("wallet {address} enabled");
            db.close().await;
        }
    }
    Ok(())
}

/// Writes a secret file readable by its owner only; refuses to replace an existing file (a wallet is never
/// overwritten).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
