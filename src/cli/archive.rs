//! `zipiq archive status|retry` and `zipiq verify`: the archive queue as the database holds it (jobs by state,
//! wallets), dead jobs given another chance, and the proof that a broadcast is archived (exit status 1 if not).

use clap::Subcommand;

use crate::archive::gateway_client::GatewayClient;
use crate::archive::verify;
use crate::archive::wallets::WalletPool;
use crate::config::Config;
use crate::db::Db;

/// The `zipiq archive` commands.
#[derive(Subcommand, Debug)]
pub enum ArchiveAction {
    /// Jobs by state, age of the oldest pending job, wallets and their runway.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Give a dead job (or every dead job with --dead) another chance.
    Retry {
        /// The id of the dead job to retry.
        job: Option<i64>,
        /// Retry every dead job.
        #[arg(long)]
        dead: bool,
    },
}

/// Runs one `zipiq archive` command.
pub async fn run(action: ArchiveAction, config: &Config) -> anyhow::Result<()> {
    let db = super::open_db(config).await?;
    match action {
        ArchiveAction::Status { json } => {
            let status = db.queue_status().await?;
            let wallets = WalletPool::load(&config.archive.wallets_path())?;
            wallets.apply_disabled(&db.disabled_wallets().await?);
            if json {
                let value = serde_json::json!({
                    "mode": format!("{:?}", config.archive.mode).to_lowercase(),
                    "jobs_by_state": status.jobs_by_state,
                    "oldest_pending_age_s": status.oldest_pending_age_s,
                    "wallets": wallets.statuses(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("mode: {:?}", config.archive.mode);
                for (state, n) in &status.jobs_by_state {
                    println!("{state:>10}: {n}");
                }
                match status.oldest_pending_age_s {
                    Some(age) => println!("oldest pending job: {age} s"),
                    None => println!("no pending job"),
                }
                println!("wallets ({}):", config.archive.wallets_path().display());
                for w in wallets.statuses() {
                    println!(
                        "  {} {}{}",
                        w.address,
                        w.file,
                        if w.disabled { " DISABLED" } else { "" }
                    );
                }
                println!(
                    "(balances, runway and breaker states: GET <admin.listen>/archive on the running server)"
                );
            }
        }
        ArchiveAction::Retry { job, dead } => {
            let n = match (job, dead) {
                (Some(id), false) => db.retry_dead(Some(id)).await?,
                (None, true) => db.retry_dead(None).await?,
                _ => anyhow::bail!("give a job id, or --dead for every dead job"),
            };
            println!("{n} job(s) queued again");
        }
    }
    db.close().await;
    Ok(())
}

/// `zipiq verify <broadcast>`: IPFS bytes, Arweave item and GraphQL by tags of every chunk; with `repair`, the
/// chunks whose item the gateway lacks are queued to be posted again. Exits the process with status 1 unless every
/// chunk checks out.
pub async fn verify(
    broadcast: i64,
    ipfs_gateway: Option<String>,
    json: bool,
    repair: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    let gateway = GatewayClient::new(
        &config.archive.gateway_url,
        std::time::Duration::from_millis(config.archive.request_timeout_ms),
    )?;
    let ipfs = ipfs_gateway.unwrap_or_else(|| config.public_url());
    let checks = verify::verify_broadcast(&db, &gateway, &ipfs, broadcast)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if repair {
        let missing = verify::missing_jobs(&db, broadcast, &checks).await?;
        let n = db.requeue_for_repost(&missing).await?;
        eprintln!("{n} job(s) queued to be posted again");
    }
    db.close().await;
    let ok = !checks.is_empty() && checks.iter().all(|c| c.ok());
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", verify::table(&checks));
        println!(
            "broadcast {broadcast}: {}",
            if ok {
                "archived and verified"
            } else {
                "NOT fully archived"
            }
        );
    }
    if ok { Ok(()) } else { std::process::exit(1) }
}
