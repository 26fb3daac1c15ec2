//! The `zipiq` command: `serve` runs the server; the other commands (`migrate`, `keys`, `users`, `secrets`,
//! `audit`, `archive`, `verify`, `wallets`, `export`, `import`) manage its database, secrets, archive and IPFS
//! repository, each group in its file of `zipiq::cli`. Here: the command list, the configuration, the runtime and the
//! exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zipiq::cli;
use zipiq::cli::archive::ArchiveAction;
use zipiq::cli::keys::KeysAction;
use zipiq::cli::secrets::SecretsAction;
use zipiq::cli::users::UsersAction;
use zipiq::cli::wallets::WalletsAction;
use zipiq::config::Config;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zipiq: {e}");
            return ExitCode::from(2);
        }
    };
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
    let serving = matches!(cli.command, Command::Serve);
    if serving {
        // Spans are exported from the server only; its exporter's requests run on this runtime.
        let _entered = runtime.enter();
        zipiq::telemetry::init(&config);
    } else {
        zipiq::telemetry::init_logs(&config.log);
    }
    let result = runtime.block_on(run(cli.command, config, cli.config));
    if serving {
        // The last spans (the shutdown's) go out before the runtime their requests run on ends.
        runtime.block_on(async {
            let _ = tokio::task::spawn_blocking(zipiq::telemetry::shutdown_traces).await;
        });
    }
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
        Command::Migrate { dry_run } => cli::migrate::run(&config, dry_run).await,
        Command::Keys { action } => cli::keys::run(action, &config).await,
        Command::Users { action } => cli::users::run(action, &config).await,
        Command::Secrets { action } => cli::secrets::run(action, &config).await,
        Command::Audit {
            limit,
            action,
            user,
            json,
        } => cli::audit::run(&config, limit, action, user, json).await,
        Command::Archive { action } => cli::archive::run(action, &config).await,
        Command::Verify {
            broadcast,
            ipfs_gateway,
            json,
            repair,
        } => cli::archive::verify(broadcast, ipfs_gateway, json, repair, &config).await,
        Command::Wallets { action } => cli::wallets::run(action, &config).await,
        Command::Export { broadcast, car } => cli::car::export(&config, broadcast, &car).await,
        Command::Import { file } => cli::car::import(&config, &file).await,
    }
}
