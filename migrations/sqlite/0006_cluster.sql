-- The cluster (`[cluster] enabled = true`, PostgreSQL only; the tables exist on SQLite too so that both engines
-- keep one schema history). Times are Unix milliseconds of the DATABASE's clock, so nodes whose clocks differ
-- still agree on who is alive and whose lease holds.

-- The node registry: each node upserts its row every `cluster.heartbeat_interval_ms`; a row whose heartbeat is
-- older than `cluster.node_dead_after_ms` is a dead node.
CREATE TABLE cluster_nodes (
    node_id       TEXT    PRIMARY KEY,
    region        TEXT    NOT NULL,
    -- The node's public HTTP URL (WHIP, WHEP, API), the base of redirects to it.
    http_url      TEXT    NOT NULL,
    -- The media UDP address its answers announce (ip:port).
    media_addr    TEXT    NOT NULL,
    max_sessions  BIGINT  NOT NULL,
    sessions      BIGINT  NOT NULL,
    publishers    BIGINT  NOT NULL,
    viewers       BIGINT  NOT NULL,
    -- Bits per second forwarded to viewers, over the last heartbeat interval.
    egress_bps    BIGINT  NOT NULL,
    -- CPU use of the process over the last heartbeat interval, in thousandths of all cores.
    cpu_permille  BIGINT  NOT NULL,
    draining      INTEGER NOT NULL DEFAULT 0,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL
);

-- Which node is each live stream's origin (where its publisher is). Claimed in one statement by the node that
-- accepts the publisher; `epoch` grows on every takeover by another node (a fencing token); the lease is renewed
-- every heartbeat and lapses after `cluster.lease_ms`.
CREATE TABLE stream_routes (
    stream        TEXT    PRIMARY KEY,
    node_id       TEXT    NOT NULL,
    epoch         BIGINT  NOT NULL,
    lease_until   BIGINT  NOT NULL,
    claimed_at    BIGINT  NOT NULL,
    renewed_at    BIGINT  NOT NULL
);
CREATE INDEX stream_routes_node ON stream_routes (node_id);
