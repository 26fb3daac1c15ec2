//! The `zipiq` command: `serve` runs the server; `migrate`, `keys`, `users`, `secrets` and `audit` manage its
//! database and secrets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zipiq::auth::cli;
use zipiq::config::Config;
use zipiq::db::Db;
use zipiq::db::audit::{AuditEvent, actions};

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
