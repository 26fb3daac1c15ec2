//! `zipiq migrate [--dry-run]`: applies the database migrations (they also run at every start), or lists those
//! that would run.

use crate::config::Config;
use crate::db::Db;

/// Connects without migrating, then applies the pending migrations or, with `dry_run`, only lists them.
pub async fn run(config: &Config, dry_run: bool) -> anyhow::Result<()> {
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
