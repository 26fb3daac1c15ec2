//! The cluster's tables (PostgreSQL only, see `migrations/postgres/0006_cluster.sql` and `0007_cluster_pulls.sql`):
//! the node registry (`cluster_nodes`, a heartbeat row per node), the stream routes (`stream_routes`, which node is
//! a stream's origin, under a lease with a fencing epoch) and the pulls (`stream_pulls`, which edge pulls which
//! stream from where, so edges of one region share one pull). Every time is the database's clock, so nodes with skewed clocks
//! agree. A trigger notifies `zipiq_routes` (LISTEN/NOTIFY) when a route is claimed, taken over or released.

use sqlx::Row;

use super::{Db, DbError};

/// The database's clock in Unix milliseconds, as SQL.
const NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The channel route changes are notified on.
pub const ROUTES_CHANNEL: &str = "zipiq_routes";

/// What a node reports about itself at every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NodeReport {
    /// `server.node_name`.
    pub node_id: String,
    /// `cluster.region`.
    pub region: String,
    /// Public HTTP URL (no trailing slash).
    pub http_url: String,
    /// Media UDP address announced to peers (`ip:port`).
    pub media_addr: String,
    /// `media.max_sessions`.
    pub max_sessions: i64,
    /// Open sessions (publishers, viewers and cluster relays).
    pub sessions: i64,
    /// Publisher sessions.
    pub publishers: i64,
    /// Viewer sessions.
    pub viewers: i64,
    /// Bits per second forwarded over the last interval.
    pub egress_bps: i64,
    /// CPU use of the process over the last interval, thousandths of all cores.
    pub cpu_permille: i64,
    /// The node takes no new placements (it is shutting down).
    pub draining: bool,
    /// When the node started (its own clock, Unix ms).
    pub started_at: i64,
}

/// A node as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct NodeRow {
    /// What it last reported.
    #[serde(flatten)]
    pub report: NodeReport,
    /// Its last heartbeat (database clock, Unix ms).
    pub heartbeat_at: i64,
    /// Its heartbeat is recent enough (`cluster.node_dead_after_ms`).
    pub alive: bool,
}

/// A stream's route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RouteRow {
    /// The stream's name.
    pub stream: String,
    /// Its origin node.
    pub node_id: String,
    /// The fencing epoch: grows at every takeover by another node.
    pub epoch: i64,
    /// Until when the lease holds without renewal (database clock, Unix ms).
    pub lease_until: i64,
    /// The origin's HTTP URL, when it is in the registry.
    pub http_url: Option<String>,
    /// The lease holds and the origin is alive: the stream is served there.
    pub valid: bool,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node is the origin now, with this epoch.
    Claimed {
        /// The route's fencing epoch: the same when this node held it already, higher after a takeover.
        epoch: i64,
        /// Whether the route was another node's (its lease lapsed or its heartbeat stopped).
        took_over: bool,
    },
    /// Another live node holds the route.
    HeldBy(RouteRow),
}

fn node_row(r: &sqlx::any::AnyRow) -> Result<NodeRow, sqlx::Error> {
    Ok(NodeRow {
        report: NodeReport {
            node_id: r.try_get("node_id")?,
            region: r.try_get("region")?,
            http_url: r.try_get("http_url")?,
            media_addr: r.try_get("media_addr")?,
            max_sessions: r.try_get("max_sessions")?,
            sessions: r.try_get("sessions")?,
            publishers: r.try_get("publishers")?,
            viewers: r.try_get("viewers")?,
            egress_bps: r.try_get("egress_bps")?,
            cpu_permille: r.try_get("cpu_permille")?,
            draining: r.try_get("draining")?,
            started_at: r.try_get("started_at")?,
        },
        heartbeat_at: r.try_get("heartbeat_at")?,
        alive: r.try_get("alive")?,
    })
}

fn route_row(r: &sqlx::any::AnyRow) -> Result<RouteRow, sqlx::Error> {
    Ok(RouteRow {
        stream: r.try_get("stream")?,
        node_id: r.try_get("node_id")?,
        epoch: r.try_get("epoch")?,
        lease_until: r.try_get("lease_until")?,
        http_url: r.try_get("http_url")?,
        valid: r.try_get("valid")?,
    })
}

impl Db {
    /// Writes this node's row (insert or update) with the database's time as its heartbeat.
    pub async fn cluster_heartbeat(&self, n: &NodeReport) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO cluster_nodes (node_id, region, http_url, media_addr, max_sessions, sessions, publishers, \
             viewers, egress_bps, cpu_permille, draining, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {NOW}) \
             ON CONFLICT (node_id) DO UPDATE SET region = EXCLUDED.region, http_url = EXCLUDED.http_url, \
             media_addr = EXCLUDED.media_addr, max_sessions = EXCLUDED.max_sessions, sessions = EXCLUDED.sessions, \
             publishers = EXCLUDED.publishers, viewers = EXCLUDED.viewers, egress_bps = EXCLUDED.egress_bps, \
             cpu_permille = EXCLUDED.cpu_permille, draining = EXCLUDED.draining, started_at = EXCLUDED.started_at, \
             heartbeat_at = EXCLUDED.heartbeat_at"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&n.node_id)
            .bind(&n.region)
            .bind(&n.http_url)
            .bind(&n.media_addr)
            .bind(n.max_sessions)
            .bind(n.sessions)
            .bind(n.publishers)
            .bind(n.viewers)
            .bind(n.egress_bps)
            .bind(n.cpu_permille)
            .bind(n.draining)
            .bind(n.started_at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes a node's row (a clean shutdown).
    pub async fn cluster_leave(&self, node_id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(node_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every node of the registry, `alive` when its heartbeat is younger than `dead_after_ms`, by name.
    pub async fn cluster_nodes(&self, dead_after_ms: i64) -> Result<Vec<NodeRow>, DbError> {
        let sql = format!(
            "SELECT node_id, region, http_url, media_addr, max_sessions, sessions, publishers, viewers, egress_bps, \
             cpu_permille, draining, started_at, heartbeat_at, (heartbeat_at >= {NOW} - $1) AS alive \
             FROM cluster_nodes ORDER BY node_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dead_after_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(node_row).collect::<Result<_, _>>()?)
    }

    /// Claims `stream`'s route for `node_id` in one statement: it succeeds when nobody holds it, when this node
    /// holds it already (the epoch stays), or when the holder's lease lapsed or its heartbeat is older than
    /// `dead_after_ms` (a takeover: the epoch grows). Two nodes claiming at once: exactly one wins.
    pub async fn claim_route(
        &self,
        stream: &str,
        node_id: &str,
        lease_ms: i64,
        dead_after_ms: i64,
    ) -> Result<Claim, DbError> {
        let sql = format!(
            "WITH now AS (SELECT {NOW} AS ms), \
             prev AS (SELECT node_id FROM stream_routes WHERE stream = $1) \
             INSERT INTO stream_routes AS r (stream, node_id, epoch, lease_until, claimed_at, renewed_at) \
             SELECT $1, $2, 1, now.ms + $3, now.ms, now.ms FROM now \
             ON CONFLICT (stream) DO UPDATE SET \
               epoch = CASE WHEN r.node_id = EXCLUDED.node_id THEN r.epoch ELSE r.epoch + 1 END, \
               claimed_at = CASE WHEN r.node_id = EXCLUDED.node_id THEN r.claimed_at ELSE EXCLUDED.claimed_at END, \
               node_id = EXCLUDED.node_id, lease_until = EXCLUDED.lease_until, renewed_at = EXCLUDED.renewed_at \
             WHERE r.node_id = EXCLUDED.node_id OR r.lease_until < EXCLUDED.renewed_at \
               OR NOT EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id = r.node_id \
                              AND n.heartbeat_at >= EXCLUDED.renewed_at - $4) \
             RETURNING r.epoch, COALESCE((SELECT node_id FROM prev) <> $2, FALSE) AS took_over"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream)
            .bind(node_id)
            .bind(lease_ms)
            .bind(dead_after_ms)
            .fetch_optional(self.pool())
            .await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed {
                epoch: row.try_get("epoch")?,
                took_over: row.try_get("took_over")?,
            });
        }
        match self.route(stream, dead_after_ms).await? {
            Some(route) => Ok(Claim::HeldBy(route)),
            // Released between the two statements: try once more is the caller's choice; say who held it.
            None => Err(DbError::Conflict(format!(
                "the route of {stream:?} changed while it was claimed; try again"
            ))),
        }
    }

    /// Renews this node's lease on `stream` if it still holds it at `epoch`. False: it was taken over.
    pub async fn renew_route(
        &self,
        stream: &str,
        node_id: &str,
        epoch: i64,
        lease_ms: i64,
    ) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE stream_routes SET lease_until = {NOW} + $3, renewed_at = {NOW} \
             WHERE stream = $1 AND node_id = $2 AND epoch = $4"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream)
            .bind(node_id)
            .bind(lease_ms)
            .bind(epoch)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up this node's route on `stream` (its publisher left), if it still holds it at `epoch`.
    pub async fn release_route(
        &self,
        stream: &str,
        node_id: &str,
        epoch: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "DELETE FROM stream_routes WHERE stream = $1 AND node_id = $2 AND epoch = $3",
        )
        .bind(stream)
        .bind(node_id)
        .bind(epoch)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `stream`'s route, if any (valid or not).
    pub async fn route(
        &self,
        stream: &str,
        dead_after_ms: i64,
    ) -> Result<Option<RouteRow>, DbError> {
        let sql = format!("{} WHERE r.stream = $2", routes_select());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dead_after_ms)
            .bind(stream)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(route_row).transpose()?)
    }

    /// Every route, by stream.
    pub async fn routes(&self, dead_after_ms: i64) -> Result<Vec<RouteRow>, DbError> {
        let sql = format!("{} ORDER BY r.stream", routes_select());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dead_after_ms)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(route_row).collect::<Result<_, _>>()?)
    }

    /// Records that `node_id` pulls `stream` from `source` (the route's `epoch`), replacing its earlier pull of it.
    pub async fn record_pull(
        &self,
        stream: &str,
        node_id: &str,
        source: &str,
        epoch: i64,
    ) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO stream_pulls (stream, node_id, source, epoch, created_at) VALUES ($1, $2, $3, $4, {NOW}) \
             ON CONFLICT (stream, node_id) DO UPDATE SET source = EXCLUDED.source, epoch = EXCLUDED.epoch, \
             created_at = EXCLUDED.created_at"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream)
            .bind(node_id)
            .bind(source)
            .bind(epoch)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets `node_id`'s pull of `stream` (None: every pull of the node, when it leaves).
    pub async fn forget_pull(&self, stream: Option<&str>, node_id: &str) -> Result<(), DbError> {
        match stream {
            Some(stream) => {
                sqlx::query("DELETE FROM stream_pulls WHERE node_id = $1 AND stream = $2")
                    .bind(node_id)
                    .bind(stream)
                    .execute(self.pool())
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM stream_pulls WHERE node_id = $1")
                    .bind(node_id)
                    .execute(self.pool())
                    .await?
            }
        };
        Ok(())
    }

    /// A node of `region` other than `me`, alive and not draining, that pulls `stream` straight from its origin
    /// `origin` at `epoch`: its name and HTTP URL (the oldest such pull, so every edge of a region picks the same).
    /// None when the origin itself is in `region` (it is as near).
    pub async fn regional_pull(
        &self,
        stream: &str,
        region: &str,
        origin: &str,
        epoch: i64,
        me: &str,
        dead_after_ms: i64,
    ) -> Result<Option<(String, String)>, DbError> {
        let sql = format!(
            "SELECT p.node_id, n.http_url FROM stream_pulls p JOIN cluster_nodes n ON n.node_id = p.node_id \
             WHERE p.stream = $1 AND n.region = $2 AND p.source = $3 AND p.epoch = $4 AND p.node_id <> $5 \
             AND n.heartbeat_at >= {NOW} - $6 AND NOT n.draining \
             AND NOT EXISTS (SELECT 1 FROM cluster_nodes o WHERE o.node_id = $3 AND o.region = $2) \
             ORDER BY p.created_at, p.node_id LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream)
            .bind(region)
            .bind(origin)
            .bind(epoch)
            .bind(me)
            .bind(dead_after_ms)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("node_id")?, r.try_get("http_url")?)),
            None => None,
        })
    }
}

/// The select of routes joined with their node; `$1` is the dead-after age.
fn routes_select() -> String {
    format!(
        "SELECT r.stream, r.node_id, r.epoch, r.lease_until, n.http_url, \
         (r.lease_until >= {NOW} AND n.heartbeat_at IS NOT NULL AND n.heartbeat_at >= {NOW} - $1) AS valid \
         FROM stream_routes r LEFT JOIN cluster_nodes n ON n.node_id = r.node_id"
    )
}
