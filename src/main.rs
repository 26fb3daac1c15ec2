//! The `zipiq` command: `serve` runs the server; `migrate`, `keys`, `users`, `secrets` and `audit` manage its
//! database and secrets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zipiq::cli::accounts as cli;
use zipiq::config::Config;
use zipiq::db::Db;
use zipiq::db::audit::{AuditEvent, actions};

/// jemalloc instead of glibc malloc: measured with the load tool (README "Performance").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "zipiq",
    version,
    about = "Censorship-resistant live streaming: WHIP/WHEP SFU, IPFS chunks, Arweave archive"
)]
struct Cli {
    /// Configuration file laid over the embedded defaults (see config.toml).
    #[arg(long, short, global = true, env = "ZIPIQ_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve,
    /// Apply database migrations (they also run at every start).
    Migrate {
        /// Only list the migrations that would run.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage stream keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage accounts (the first admin is made here).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Manage secrets.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Read the audit log, oldest of the selection first.
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only this action (login, refresh_token.reuse, stream.key_rotated, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only entries by this account (email).
        #[arg(long)]
        user: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// The archive queue.
    Archive {
        #[command(subcommand)]
        action: ArchiveAction,
    },
    /// Prove a broadcast is archived: IPFS bytes, Arweave item, GraphQL by tags; exits non-zero on any miss.
    Verify {
        /// Broadcast id (see `GET /api/v1/streams/{stream}/broadcasts`).
        broadcast: i64,
        /// IPFS gateway to read chunks from. Default: this server's (http.public_url).
        #[arg(long)]
        ipfs_gateway: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Queue every chunk whose item is missing at the gateway to be posted again (same signed bytes).
        #[arg(long)]
        repair: bool,
    },
    /// Arweave wallets of the archive pool.
    Wallets {
        #[command(subcommand)]
        action: WalletsAction,
    },
    /// Write a broadcast as a CAR v1 file (the server must be stopped: it holds the IPFS repository).
    Export {
        broadcast: i64,
        #[arg(long)]
        car: PathBuf,
    },
    /// Import a CAR v1 file into the IPFS repository (verified block by block, pinned).
    Import { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum ArchiveAction {
    /// Jobs by state, age of the oldest pending job, wallets and their runway.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Give a dead job (or every dead job with --dead) another chance.
    Retry {
        job: Option<i64>,
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WalletsAction {
    /// Wallet files, addresses and whether an operator disabled them.
    List,
    /// Stop using a wallet at once (lost or compromised); running servers notice within seconds.
    Disable {
        address: String,
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
    },
    /// Use a disabled wallet again.
    Enable { address: String },
    /// Make a new Arweave wallet (RSA-4096 JWK) in the wallets directory and print its address to fund.
    Create,
}

#[derive(Subcommand, Debug)]
enum UsersAction {
    /// Make an account with a verified email. Without --password-stdin a password is generated and printed once.
    Create {
        email: String,
        /// Give it the admin role.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Set an account's role (admin or streamer).
    SetRole { email: String, role: String },
    /// Disable an account: its sessions end and it cannot log in.
    Disable { email: String },
    /// Enable a disabled account.
    Enable { email: String },
}

#[derive(Subcommand, Debug)]
enum SecretsAction {
    /// Add a new JWT signing key (it signs from now on; older keys keep verifying until their tokens expire) and
    /// drop keys no valid token needs.
    RotateJwt {
        /// Key file to rotate (default: auth.jwt_key_file; for systemd, /etc/zipiq/credentials/jwt-key).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Make a new key for a stream (creating the stream if needed) and print it once. The old key stops working.
    Create { stream: String },
    /// Remove a stream's key: nobody can publish to it until a new key is made.
    Revoke { stream: String },
    /// List streams and whether they have a key.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zipiq: {e}");
            return ExitCode::from(2);
        }
    };
    zipiq::telemetry::init_logs(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zipiq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, config, cli.config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zipiq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    match command {
        Command::Serve => zipiq::serve(config, path).await,
        Command::Migrate { dry_run } => {
            let db = Db::connect(&config.database).await?;
            if dry_run {
                let pending = db.pending_migrations().await?;
                if pending.is_empty() {
                    println!("database is up to date");
                }
                for m in pending {
                    println!("would apply {} {}", m.version, m.description);
                }
            } else {
                let applied = db.migrate().await?;
                if applied.is_empty() {
                    println!("database is up to date");
                }
                for m in applied {
                    println!("applied {} {}", m.version, m.description);
                }
            }
            db.close().await;
            Ok(())
        }
        Command::Archive { action } => archive_command(action, &config).await,
        Command::Verify {
            broadcast,
            ipfs_gateway,
            json,
            repair,
        } => verify_command(broadcast, ipfs_gateway, json, repair, &config).await,
        Command::Wallets { action } => wallets_command(action, &config).await,
        Command::Export { broadcast, car } => {
            let db = Db::connect(&config.database).await?;
            let b = db
                .broadcast(broadcast)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no broadcast {broadcast}"))?;
            let root = b.root_cid.ok_or_else(|| {
                anyhow::anyhow!("broadcast {broadcast} has not ended yet (no root CID)")
            })?;
            let root: zipiq::store::Cid = root.parse()?;
            let node = offline_node(&config).await?;
            let file = tokio::fs::File::create(&car).await?;
            let result = node.export_car(&root, file).await;
            node.shutdown().await;
            result?;
            println!(
                "wrote broadcast {broadcast} (root {root}) to {}",
                car.display()
            );
            Ok(())
        }
        Command::Import { file } => {
            let node = offline_node(&config).await?;
            let reader = tokio::fs::File::open(&file).await?;
            let result = node.import_car(reader).await;
            node.shutdown().await;
            let roots = result?;
            for r in roots {
                println!("imported and pinned {r}");
            }
            Ok(())
        }
        Command::Keys { action } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            match action {
                KeysAction::Create { stream } => {
                    let (key, action) = match db.find_stream(&stream).await? {
                        Some(_) => (
                            db.rotate_stream_key(&stream).await?,
                            actions::STREAM_KEY_ROTATED,
                        ),
                        None => (db.create_stream(&stream).await?.1, actions::STREAM_CREATED),
                    };
                    db.audit(
                        AuditEvent::new(action)
                            .by("cli")
                            .target(format!("stream:{stream}")),
                    )
                    .await?;
                    println!("stream: {stream}\nkey:    {key}");
                    println!(
                        "OBS: Service WHIP, Server {}/whip/{stream}, Bearer Token {key}",
                        config.public_url()
                    );
                }
                KeysAction::Revoke { stream } => {
                    db.revoke_stream_key(&stream).await?;
                    db.audit(
                        AuditEvent::new(actions::STREAM_KEY_REVOKED)
                            .by("cli")
                            .target(format!("stream:{stream}")),
                    )
                    .await?;
                    println!(
                        "stream {stream}: key revoked; publishing is refused until `zipiq keys create {stream}`"
                    );
                }
                KeysAction::List => {
                    for s in db.list_streams().await? {
                        println!(
                            "{}\t{}\t{}",
                            s.name,
                            s.visibility.as_str(),
                            if s.key_hash.is_some() {
                                "key set"
                            } else {
                                "no key"
                            }
                        );
                    }
                }
            }
            db.close().await;
            Ok(())
        }
        Command::Users { action } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            let out = match action {
                UsersAction::Create {
                    email,
                    admin,
                    password_stdin,
                } => cli::create_user(&db, &config, &email, admin, password_stdin).await,
                UsersAction::List => cli::list_users(&db).await,
                UsersAction::SetRole { email, role } => cli::set_role(&db, &email, &role).await,
                UsersAction::Disable { email } => cli::set_disabled(&db, &email, true).await,
                UsersAction::Enable { email } => cli::set_disabled(&db, &email, false).await,
            };
            db.close().await;
            print!("{}", out?);
            Ok(())
        }
        Command::Secrets {
            action: SecretsAction::RotateJwt { file },
        } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            let out = cli::rotate_jwt(&db, &config, file.as_deref()).await;
            db.close().await;
            print!("{}", out?);
            Ok(())
        }
        Command::Audit {
            limit,
            action,
            user,
            json,
        } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            let out = cli::audit(&db, limit, action, user, json).await;
            db.close().await;
            print!("{}", out?);
            Ok(())
        }
    }
}

/// The IPFS node on the configured repository, without listening (the CLI's own access).
async fn offline_node(config: &Config) -> anyhow::Result<zipiq::store::IpfsNode> {
    let mut cfg = config.ipfs.clone();
    cfg.listen = Vec::new();
    cfg.bootstrap = Vec::new();
    cfg.announce = false;
    Ok(zipiq::store::IpfsNode::start(&cfg).await?)
}

async fn archive_command(action: ArchiveAction, config: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    match action {
        ArchiveAction::Status { json } => {
            let status = db.queue_status().await?;
            let wallets =
                zipiq::archive::wallets::WalletPool::load(&config.archive.wallets_path())?;
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

async fn verify_command(
    broadcast: i64,
    ipfs_gateway: Option<String>,
    json: bool,
    repair: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    let gateway = zipiq::archive::gateway_client::GatewayClient::new(
        &config.archive.gateway_url,
        std::time::Duration::from_millis(config.archive.request_timeout_ms),
    )?;
    let ipfs = ipfs_gateway.unwrap_or_else(|| config.public_url());
    let checks = zipiq::archive::verify::verify_broadcast(&db, &gateway, &ipfs, broadcast)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if repair {
        let missing = zipiq::archive::verify::missing_jobs(&db, broadcast, &checks).await?;
        let n = db.requeue_for_repost(&missing).await?;
        eprintln!("{n} job(s) queued to be posted again");
    }
    db.close().await;
    let ok = !checks.is_empty() && checks.iter().all(|c| c.ok());
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", zipiq::archive::verify::table(&checks));
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

async fn wallets_command(action: WalletsAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.archive.wallets_path();
    match action {
        WalletsAction::Create => {
            zipiq::secrets::create_private_dir(&dir)?;
            let jwk = tokio::task::spawn_blocking(zipiq::archive::jwk::Jwk::generate).await??;
            let path = dir.join(format!("{}.json", jwk.address()));
            write_private(&path, jwk.to_json().as_bytes())?;
            println!("new wallet {} in {}", jwk.address(), path.display());
            println!(
                "fund it with AR (or Turbo credits for the bundler) before it can archive anything"
            );
            return Ok(());
        }
        WalletsAction::List => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            let pool = zipiq::archive::wallets::WalletPool::load(&dir)?;
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
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            db.set_wallet_disabled(&address, true, &reason, "cli")
                .await?;
            tracing::warn!(target: "audit", action = "disable", wallet = %address, by = "cli", reason = %reason, "wallet disabled");
            println!("wallet {address} disabled; running servers stop using it within seconds");
            db.close().await;
        }
        WalletsAction::Enable { address } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            db.set_wallet_disabled(&address, false, "", "cli").await?;
            tracing::warn!(target: "audit", action = "enable", wallet = %address, by = "cli", "wallet enabled");
            println!("wallet {address} enabled");
            db.close().await;
        }
    }
    Ok(())
}

/// Writes a secret file readable by its owner only.
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
