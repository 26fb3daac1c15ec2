//! `zipiq keys create|revoke|list`: stream keys made, revoked and listed from the command line, each change
//! audit-logged with the actor "cli".

use clap::Subcommand;

use crate::config::Config;
use crate::db::audit::{AuditEvent, actions};

/// The `zipiq keys` commands.
#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Make a new key for a stream (creating the stream if needed) and print it once. The old key stops working.
    Create {
        /// The stream's name.
        stream: String,
    },
    /// Remove a stream's key: nobody can publish to it until a new key is made.
    Revoke {
        /// The stream's name.
        stream: String,
    },
    /// List streams and whether they have a key.
    List,
}

/// Runs one `zipiq keys` command.
pub async fn run(action: KeysAction, config: &Config) -> anyhow::Result<()> {
    let db = super::open_db(config).await?;
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
