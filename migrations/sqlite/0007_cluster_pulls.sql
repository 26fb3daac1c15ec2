-- Which node pulls which stream from where (cluster edges; PostgreSQL only in use, the table exists on SQLite too
-- so that both engines keep one schema history). An edge pulls a stream from a node of its own region that
-- already pulls it straight from the origin, when there is one, so one copy of a stream crosses into each region.
-- A row is written when a pull is made and removed when it closes; rows of dead nodes are ignored (their
-- heartbeat is old) and removed when the node leaves. Times are Unix milliseconds of the database's clock.
CREATE TABLE stream_pulls (
    stream      TEXT   NOT NULL,
    node_id     TEXT   NOT NULL,
    -- The node it pulls from: the stream's origin, or a node of the same region pulling from the origin.
    source      TEXT   NOT NULL,
    -- The route's epoch when the pull was made.
    epoch       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (stream, node_id)
);
