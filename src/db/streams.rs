//! The `streams` table: names people publish to and watch, the hashes of their keys, who owns them and who may
//! watch them. A deleted stream keeps its row (its broadcasts are archived for good) under the name `~<id>`,
//! which no valid name can take, so its old name is free again; every lookup here skips deleted streams.

use sqlx::Row;

use super::{Db, DbError, DbKind, now_ms};
use crate::secrets::stream_keys;

/// Who may watch a stream.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    /// The stored form: `public` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
        }
    }

    /// The visibility of a stored form; None for an unknown one.
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
    /// Row id.
    pub id: i64,
    /// The name: its WHIP/WHEP path and API name.
    pub name: String,
    /// The stream key's hash; None once the key is revoked.
    pub key_hash: Option<String>,
    /// Public, or private (viewer token needed).
    pub visibility: Visibility,
    /// When it was created, in Unix milliseconds.
    pub created_at: i64,
    /// The owning user; None for streams made by the CLI or at first start (admins manage those).
    pub owner_id: Option<i64>,
    /// Viewer tokens carry this; bumping it revokes them all.
    pub viewer_token_version: i64,
    /// When the owning account was disabled, if it is: nobody publishes to or watches its streams meanwhile.
    pub owner_disabled_at: Option<i64>,
}

impl StreamRow {
    /// Whether the stream's owner is a disabled account.
    pub fn owner_disabled(&self) -> bool {
        self.owner_disabled_at.is_some()
    }
}

/// Columns read into [`StreamRow`] (from `streams` unaliased: the owner's state is a subquery on it).
macro_rules! stream_columns {
    () => {
        "id, name, key_hash, visibility, created_at, owner_id, viewer_token_version, \
         (SELECT u.disabled_at FROM users u WHERE u.id = streams.owner_id) AS owner_disabled_at"
    };
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
        owner_id: row.try_get("owner_id")?,
        viewer_token_version: row.try_get("viewer_token_version")?,
        owner_disabled_at: row.try_get("owner_disabled_at")?,
    })
}

impl Db {
    /// Creates a public stream owned by nobody, with a new key; returns the row and the key (shown once, never
    /// stored).
    pub async fn create_stream(&self, name: &str) -> Result<(StreamRow, String), DbError> {
        self.create_owned_stream(name, None, Visibility::Public)
            .await
    }

    /// Creates a stream owned by `owner` with a new key; returns the row and the key (shown once, never stored).
    pub async fn create_owned_stream(
        &self,
        name: &str,
        owner: Option<i64>,
        visibility: Visibility,
    ) -> Result<(StreamRow, String), DbError> {
        self.create_owned_stream_within(name, owner, visibility, None)
            .await
    }

    /// Like [`Db::create_owned_stream`], refused with [`DbError::Limit`] when `owner` already owns `max_streams`
    /// streams. The count and the insert are one write transaction (the owner's row locked first on PostgreSQL,
    /// the database's write lock on SQLite), so requests made in parallel cannot pass the limit together.
    pub async fn create_owned_stream_within(
        &self,
        name: &str,
        owner: Option<i64>,
        visibility: Visibility,
        max_streams: Option<i64>,
    ) -> Result<(StreamRow, String), DbError> {
        if !valid_name(name) {
            return Err(DbError::Conflict(format!(
                "invalid stream name {name:?}: use 1-{MAX_NAME_LEN} characters a-z, 0-9, - and _"
            )));
        }
        let key = stream_keys::generate();
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if let (Some(owner), Some(max)) = (owner, max_streams) {
            if self.kind() == DbKind::Postgres {
                // Parallel creations by one owner queue here; each then counts what the previous ones committed.
                sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM streams WHERE owner_id = $1 AND deleted_at IS NULL",
            )
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
            let owned: i64 = row.try_get("n")?;
            if owned >= max {
                tx.rollback().await?;
                return Err(DbError::Limit(format!(
                    "an account may own at most {max} streams; delete one first"
                )));
            }
        }
        let result = sqlx::query(
            "INSERT INTO streams (name, key_hash, visibility, owner_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(name)
        .bind(stream_keys::hash(&key))
        .bind(visibility.as_str())
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DbError::Conflict(format!("stream {name:?} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        let row = self
            .find_stream(name)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("stream {name:?} vanished after insert")))?;
        Ok((row, key))
    }

    /// The stream called `name`, if any.
    pub async fn find_stream(&self, name: &str) -> Result<Option<StreamRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE name = $1 AND deleted_at IS NULL"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_stream).transpose()
    }

    /// The stream with this id, if it exists and is not deleted.
    pub async fn stream_by_id(&self, id: i64) -> Result<Option<StreamRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_stream).transpose()
    }

    /// Every stream, by name.
    pub async fn list_streams(&self) -> Result<Vec<StreamRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE deleted_at IS NULL ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_stream).collect()
    }

    /// The streams `owner` owns, by name.
    pub async fn streams_of(&self, owner: i64) -> Result<Vec<StreamRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            stream_columns!(),
            " FROM streams WHERE owner_id = $1 AND deleted_at IS NULL ORDER BY name"
        ))
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_stream).collect()
    }

    /// Names of the public streams (the ones the home page may list).
    pub async fn public_stream_names(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT name FROM streams WHERE visibility = 'public' AND deleted_at IS NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("name").map_err(DbError::from))
            .collect()
    }

    /// Renames a stream. A taken name is a `Conflict`.
    pub async fn rename_stream(&self, id: i64, new_name: &str) -> Result<(), DbError> {
        if !valid_name(new_name) {
            return Err(DbError::Conflict(format!(
                "invalid stream name {new_name:?}"
            )));
        }
        let result = sqlx::query(
            "UPDATE streams SET name = $1, updated_at = $2 WHERE id = $3 AND deleted_at IS NULL",
        )
        .bind(new_name)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await;
        match result {
            Ok(done) if done.rows_affected() == 0 => {
                Err(DbError::NotFound(format!("no stream {id}")))
            }
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Conflict(
                format!("stream {new_name:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a stream: its key stops working, its name is freed, its broadcasts and chunks stay.
    pub async fn delete_stream(&self, id: i64) -> Result<(), DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE streams SET deleted_at = $1, updated_at = $1, key_hash = NULL, name = '~' || CAST(id AS TEXT) \
             WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no stream {id}")));
        }
        Ok(())
    }

    /// Revokes every viewer token of a stream (they carry the old version); returns the new version.
    pub async fn bump_viewer_token_version(&self, id: i64) -> Result<i64, DbError> {
        let row = sqlx::query(
            "UPDATE streams SET viewer_token_version = viewer_token_version + 1, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL RETURNING viewer_token_version",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => Ok(r.try_get("viewer_token_version")?),
            None => Err(DbError::NotFound(format!("no stream {id}"))),
        }
    }

    /// How many streams `owner` owns.
    pub async fn count_streams_of(&self, owner: i64) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM streams WHERE owner_id = $1 AND deleted_at IS NULL",
        )
        .bind(owner)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// How many streams exist (deleted ones included: this answers "is the database new?").
    pub async fn count_streams(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM streams")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Replaces a stream's key with a new one (the old key stops working at once) and returns the new key.
    pub async fn rotate_stream_key(&self, name: &str) -> Result<String, DbError> {
        let key = stream_keys::generate();
        let done = sqlx::query(
            "UPDATE streams SET key_hash = $1, updated_at = $2 WHERE name = $3 AND deleted_at IS NULL",
        )
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
            sqlx::query("UPDATE streams SET key_hash = NULL, updated_at = $1 WHERE name = $2 AND deleted_at IS NULL")
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
            sqlx::query("UPDATE streams SET visibility = $1, updated_at = $2 WHERE name = $3 AND deleted_at IS NULL")
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
