//! Runs database tests against BOTH engines: a SQLite file and a fresh database on the real PostgreSQL server
//! named by `ZIPIQ_TEST_PG_URL` (scripts/test starts one). Without that variable the PostgreSQL half fails with
//! a message saying so, rather than passing without testing anything.

use sqlx::Executor;
use zipiq::config::DatabaseConfig;
use zipiq::db::Db;

/// A database for one test, dropped afterwards.
pub struct TestDb {
    pub name: &'static str,
    pub db: Db,
    pub url: String,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn drop_db(self) {
        self.db.close().await;
        if let Some((admin_url, database)) = self.cleanup {
            sqlx::any::install_default_drivers();
            if let Ok(pool) = sqlx::AnyPool::connect(&admin_url).await {
                let _ = pool
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                    )))
                    .await;
                pool.close().await;
            }
        }
    }
}

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_owned(),
        max_connections: 4,
        acquire_timeout_ms: 5000,
    }
}

/// A fresh SQLite database in a temp dir.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::connect(&config(&url)).await.expect("sqlite");
    TestDb {
        name: "sqlite",
        db,
        url,
        cleanup: None,
        _dir: Some(dir),
    }
}

/// The URL of the PostgreSQL server tests use.
pub fn pg_url() -> String {
    std::env::var("ZIPIQ_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "ZIPIQ_TEST_PG_URL is not set: database tests run against a real PostgreSQL server too; \
             run them through scripts/test, which starts one, or point the variable at a server"
        )
    })
}

/// A fresh database on the test PostgreSQL server.
pub async fn postgres() -> TestDb {
    sqlx::any::install_default_drivers();
    let admin_url = pg_url();
    let database = format!("zq_{:016x}", rand::random::<u64>());
    let admin = sqlx::AnyPool::connect(&admin_url)
        .await
        .expect("connect to ZIPIQ_TEST_PG_URL");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .await
        .expect("create test database");
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .expect("url with a database");
    let url = format!("{base}/{database}");
    let db = Db::connect(&config(&url)).await.expect("postgres");
    TestDb {
        name: "postgres",
        db,
        url,
        cleanup: Some((admin_url, database)),
        _dir: None,
    }
}

/// Both engines, migrated.
pub async fn both() -> Vec<TestDb> {
    let mut out = vec![sqlite().await, postgres().await];
    for t in &mut out {
        t.db.migrate().await.expect("migrate");
    }
    out
}
