//! The `streams` table: names people publish to and watch, and the hashes of their keys.

use sqlx::Row;

use super::{Db, DbError, now_ms};
use crate::auth::stream_keys;

/// Who may watch a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed on the home page, anyone may watch.
    Public,
    /// Not listed, anyone with the link may watch.
    Unlisted,
    /// Viewers need a viewer token.
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "unlisted" => Some(Visibility::Unlisted),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// One row of `streams`.
#[derive(Debug, Clone)]
pub struct StreamRow {
    pub id: i64,
    pub name: String,
    pub key_hash: Option<String>,
    pub visibility: Visibility,
    pub created_at: i64,
}

/// The longest stream name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid stream name: 1-64 characters of `a-z 0-9 - _`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

fn row_to_stream(row: &sqlx::any::AnyRow) -> Result<StreamRow, DbError> {
    let visibility: String = row.try_get("visibility")?;
    Ok(StreamRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        visibility: Visibility::parse(&visibility).unwrap_or(Visibility::Private),
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Creates a stream with a new key and returns the row and the key (shown once, never stored).
    pub async fn create_stream(&self, name: &str) -> Result<(StreamRow, String), DbError> {
        if !valid_name(name) {
            return Err(DbError::Conflict(format!(
                "invalid stream name {name:?}: use 1-{MAX_NAME_LEN} characters a-z, 0-9, - and _"
            )));
        }
        let key = stream_keys::generate();
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO streams (name, key_hash, visibility, created_at, updated_at) \
             VALUES ($1, $2, 'public', $3, $3)",
        )
        .bind(name)
        .bind(stream_keys::hash(&key))
        .bind(now)
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DbError::Conflict(format!("stream {name:?} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        let row = self
            .find_stream(name)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("stream {name:?} vanished after insert")))?;
        Ok((row, key))
    }

    /// The stream called `name`, if any.
    pub async fn find_stream(&self, name: &str) -> Result<Option<StreamRow>, DbError> {
        let row = sqlx::query(
            "SELECT id, name, key_hash, visibility, created_at FROM streams WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_stream).transpose()
    }

    /// Every stream, by name.
    pub async fn list_streams(&self) -> Result<Vec<StreamRow>, DbError> {
        let rows = sqlx::query(
            "SELECT id, name, key_hash, visibility, created_at FROM streams ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_stream).collect()
    }

    /// How many streams exist.
    pub async fn count_streams(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM streams")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Replaces a stream's key with a new one (the old key stops working at once) and returns the new key.
    pub async fn rotate_stream_key(&self, name: &str) -> Result<String, DbError> {
        let key = stream_keys::generate();
        let done = sqlx::query("UPDATE streams SET key_hash = $1, updated_at = $2 WHERE name = $3")
            .bind(stream_keys::hash(&key))
            .bind(now_ms())
            .bind(name)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no stream {name:?}")));
        }
        Ok(key)
    }

    /// Removes a stream's key: nobody can publish to it until a new key is made.
    pub async fn revoke_stream_key(&self, name: &str) -> Result<(), DbError> {
        let done =
            sqlx::query("UPDATE streams SET key_hash = NULL, updated_at = $1 WHERE name = $2")
                .bind(now_ms())
                .bind(name)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no stream {name:?}")));
        }
        Ok(())
    }

    /// Sets who may watch a stream.
    pub async fn set_stream_visibility(
        &self,
        name: &str,
        visibility: Visibility,
    ) -> Result<(), DbError> {
        let done =
            sqlx::query("UPDATE streams SET visibility = $1, updated_at = $2 WHERE name = $3")
                .bind(visibility.as_str())
                .bind(now_ms())
                .bind(name)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no stream {name:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(valid_name("live"));
        assert!(valid_name("my-show_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("Live"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
