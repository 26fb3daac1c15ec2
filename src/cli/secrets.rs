//! `zipiq secrets rotate-jwt`: a new JWT signing key added to the key file, and keys no valid token needs any more
//! dropped; audit-logged with the actor "cli".

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::auth::jwt::KeyRing;
use crate::config::Config;
use crate::db::Db;
use crate::db::audit::{AuditEvent, actions};
use crate::secrets;

/// The `zipiq secrets` commands.
#[derive(Subcommand, Debug)]
pub enum SecretsAction {
    /// Add a new JWT signing key (it signs from now on; older keys keep verifying until their tokens expire) and
    /// drop keys no valid token needs.
    RotateJwt {
        /// Key file to rotate (default: auth.jwt_key_file; for systemd, /etc/zipiq/credentials/jwt-key).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// Runs one `zipiq secrets` command and prints what it returns.
pub async fn run(action: SecretsAction, config: &Config) -> anyhow::Result<()> {
    let SecretsAction::RotateJwt { file } = action;
    let db = super::open_db(config).await?;
    let out = rotate_jwt(&db, config, file.as_deref()).await;
    db.close().await;
    print!("{}", out?);
    Ok(())
}

/// `zipiq secrets rotate-jwt [--file PATH]`: adds a signing key to the key file (creating it if needed) and drops
/// keys that no valid token can still need.
pub async fn rotate_jwt(db: &Db, config: &Config, file: Option<&Path>) -> anyhow::Result<String> {
    let path = file.unwrap_or(&config.auth.jwt_key_file);
    let now = crate::db::now_ms() / 1000;
    let mut ring = if path.exists() {
        let text = secrets::read(path)?;
        KeyRing::parse(&text).map_err(|reason| secrets::SecretError::Invalid {
            path: path.to_owned(),
            reason,
        })?
    } else {
        KeyRing::generate(now)
    };
    let (kid, dropped) = ring.rotate(now, crate::auth::max_token_ttl_s(config));
    secrets::write_private(path, &ring.to_text())?;
    db.audit(
        AuditEvent::new(actions::JWT_KEY_ROTATED)
            .by("cli")
            .target(format!("jwt_key:{kid}"))
            .detail("file", path.display().to_string())
            .detail("dropped", &dropped),
    )
    .await?;
    let mut out = format!(
        "{}: new signing key {kid}; keys now {}\n",
        path.display(),
        ring.kids().join(", ")
    );
    if !dropped.is_empty() {
        out.push_str(&format!(
            "dropped keys no valid token needs any more: {}\n",
            dropped.join(", ")
        ));
    }
    out.push_str(
        "A server reading this file picks the keys up at SIGHUP (systemctl reload zipiq); one reading the systemd \
         credential at its next restart (systemd copies credentials at start). Tokens signed with the older keys \
         keep working until they expire. Several nodes must all get the same file.\n",
    );
    Ok(out)
}
