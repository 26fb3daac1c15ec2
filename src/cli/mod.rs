//! What the `zipiq` commands other than `serve` do, one file per command group, above every other part (a command
//! may use any of them): `keys`, `users`, `secrets`, `audit`, `archive` (with `verify`), `wallets`, `migrate`, and
//! `car` (`export` and `import`). Each group's arguments (clap) live with it; `src/main.rs` holds the top-level
//! command list and dispatches to these.

pub mod archive;
pub mod audit;
pub mod car;
pub mod keys;
pub mod migrate;
pub mod secrets;
pub mod users;
pub mod wallets;

use crate::config::Config;
use crate::db::Db;

/// The configured database, connected and migrated: how every command that reads or changes it opens it, except
/// `migrate` itself (its dry run must not migrate) and `verify` and `export`, which only connect.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    Ok(db)
}
