//! What the `zipiq users`, `zipiq secrets` and `zipiq audit` commands do: make the first admin, manage roles,
//! rotate the JWT signing keys, read the audit log. Every change is audit-logged with the actor "cli".
//! Passwords are read from standard input or generated and printed once; they are never taken as arguments
//! (arguments are visible to every user of the machine in the process list).

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use rand::RngCore;

use crate::auth::jwt::KeyRing;
use crate::auth::passwords::Passwords;
use crate::auth::validate;
use crate::config::Config;
use crate::db::Db;
use crate::db::audit::{AuditEvent, AuditQuery, actions};
use crate::db::users::Role;
use crate::secrets;

/// `zipiq users create <email> [--admin] [--password-stdin]`: a verified account. Returns the text to print.
pub async fn create_user(
    db: &Db,
    config: &Config,
    email: &str,
    admin: bool,
    password_stdin: bool,
) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        (line.trim_end_matches(['\r', '\n']).to_owned(), false)
    } else {
        let mut bytes = [0u8; 15];
        rand::rng().fill_bytes(&mut bytes);
        (
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes),
            true,
        )
    };
    validate::new_password("password", &password, config.auth.password_min_length)?;
    let passwords = Passwords::new(&config.auth)?;
    let hash = passwords.hash(&password).await?;
    let role = if admin { Role::Admin } else { Role::Streamer };
    let user = db.create_user(&email, &hash, role, true).await?;
    db.audit(
        AuditEvent::new(actions::USER_CREATED)
            .by("cli")
            .target(format!("user:{}", user.id))
            .detail("role", role.as_str()),
    )
    .await?;
    let mut out = format!(
        "created {} account {} (id {}), email verified\n",
        role.as_str(),
        user.email,
        user.id
    );
    if generated {
        out.push_str(&format!(
            "password (shown once; change it after logging in): {password}\n"
        ));
    }
    out.push_str(&format!("log in at {}/login\n", config.public_url()));
    Ok(out)
}

/// `zipiq users list`.
pub async fn list_users(db: &Db) -> anyhow::Result<String> {
    let mut out = String::from("id\temail\trole\tverified\tdisabled\n");
    let mut after = 0;
    loop {
        let page = db.list_users(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for u in &page {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                u.id,
                u.email,
                u.role.as_str(),
                if u.is_verified() { "yes" } else { "no" },
                if u.is_disabled() { "yes" } else { "no" }
            ));
        }
    }
    Ok(out)
}

/// `zipiq users set-role <email> <role>`.
pub async fn set_role(db: &Db, email: &str, role: &str) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let Some(role) = Role::parse(role) else {
        bail!("role must be admin or streamer, not {role:?}");
    };
    let Some(user) = db.user_by_email(&email).await? else {
        bail!("no account {email}");
    };
    db.set_user_role(user.id, role).await?;
    db.audit(
        AuditEvent::new(actions::ADMIN_ROLE_CHANGED)
            .by("cli")
            .target(format!("user:{}", user.id))
            .detail("from", user.role.as_str())
            .detail("to", role.as_str()),
    )
    .await?;
    Ok(format!("{email} is now {}\n", role.as_str()))
}

/// `zipiq users disable|enable <email>`.
pub async fn set_disabled(db: &Db, email: &str, disabled: bool) -> anyhow::Result<String> {
    let email = validate::email("email", email)?;
    let Some(user) = db.user_by_email(&email).await? else {
        bail!("no account {email}");
    };
    db.set_user_disabled(user.id, disabled).await?;
    let action = if disabled {
        actions::ADMIN_USER_DISABLED
    } else {
        actions::ADMIN_USER_ENABLED
    };
    db.audit(
        AuditEvent::new(action)
            .by("cli")
            .target(format!("user:{}", user.id)),
    )
    .await?;
    Ok(if disabled {
        format!(
            "{email} is disabled; every login session of it has ended, and running servers end its streams' \
             publishers and viewers within {} s\n",
            crate::sfu::key_watch::CHECK_INTERVAL.as_secs()
        )
    } else {
        format!("{email} is enabled\n")
    })
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

/// `zipiq audit`: the newest entries, as text or JSON lines.
pub async fn audit(
    db: &Db,
    limit: i64,
    action: Option<String>,
    user: Option<String>,
    json: bool,
) -> anyhow::Result<String> {
    let actor_id = match user {
        Some(email) => {
            let email = validate::email("user", &email)?;
            match db.user_by_email(&email).await? {
                Some(u) => Some(u.id),
                None => bail!("no account {email}"),
            }
        }
        None => None,
    };
    let rows = db
        .audit_log(&AuditQuery {
            action,
            actor_id,
            before_id: None,
            limit,
        })
        .await?;
    let mut out = String::new();
    for r in rows.iter().rev() {
        if json {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{}  {:<26} {:<7} {:<28} {:<15} {:<24} {}\n",
                format_utc_ms(r.at),
                r.action,
                r.outcome.as_str(),
                r.actor,
                r.ip.as_deref().unwrap_or("-"),
                r.target.as_deref().unwrap_or("-"),
                r.details
            ));
        }
    }
    Ok(out)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc_ms(1_767_225_599_000), "2025-12-31T23:59:59Z");
    }
}
