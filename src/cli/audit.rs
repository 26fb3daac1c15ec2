//! `zipiq audit`: the newest entries of the audit log, oldest of the selection first, as text or JSON lines.

use anyhow::bail;

use crate::auth::validate;
use crate::config::Config;
use crate::db::Db;
use crate::db::audit::AuditQuery;

/// Runs `zipiq audit` and prints the entries.
pub async fn run(
    config: &Config,
    limit: i64,
    action: Option<String>,
    user: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let db = super::open_db(config).await?;
    let out = audit(&db, limit, action, user, json).await;
    db.close().await;
    print!("{}", out?);
    Ok(())
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
