//! The `zipiq` command: `serve` runs the server; `migrate`, `keys` manage its database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zipiq::config::Config;
use zipiq::db::Db;

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
        Command::Keys { action } => {
            let db = Db::connect(&config.database).await?;
            db.migrate().await?;
            match action {
                KeysAction::Create { stream } => {
                    let key = match db.find_stream(&stream).await? {
                        Some(_) => db.rotate_stream_key(&stream).await?,
                        None => db.create_stream(&stream).await?.1,
                    };
                    println!("stream: {stream}\nkey:    {key}");
                    println!(
                        "OBS: Service WHIP, Server {}/whip/{stream}, Bearer Token {key}",
                        config.public_url()
                    );
                }
                KeysAction::Revoke { stream } => {
                    db.revoke_stream_key(&stream).await?;
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
    }
}
