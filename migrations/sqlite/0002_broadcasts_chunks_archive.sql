-- A broadcast is one live session of a stream (publisher reconnects within the grace period stay in it).
CREATE TABLE broadcasts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    -- UnixFS directory linking every chunk and index.m3u8, set when the broadcast ends.
    root_cid    TEXT,
    -- Node that recorded it (several nodes may share one database).
    node        TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX broadcasts_stream ON broadcasts (stream_id, started_at);

-- A chunk is one CMAF segment (init or media) stored in IPFS.
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    broadcast_id INTEGER NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('init', 'media')),
    cid          TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (broadcast_id, seq)
);

-- The durable archive queue (outbox): one job per chunk and one per finished broadcast directory, written in the
-- same transaction as what it archives.
CREATE TABLE archive_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL CHECK (kind IN ('chunk', 'broadcast')),
    chunk_id        INTEGER UNIQUE REFERENCES chunks (id) ON DELETE CASCADE,
    broadcast_id    INTEGER NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'signed', 'uploaded', 'confirmed', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_by      TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    -- The signed ANS-104 data item, stored before the first upload so that a retry re-sends the same bytes.
    item_id         TEXT,
    signed_item     BLOB,
    wallet          TEXT,
    -- Receipt: bundle or Arweave transaction id, the bundler's receipt, when it was uploaded and confirmed.
    bundle_tx       TEXT,
    receipt         TEXT,
    uploaded_at     INTEGER,
    confirmed_at    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX archive_jobs_one_per_broadcast ON archive_jobs (broadcast_id) WHERE kind = 'broadcast';
CREATE INDEX archive_jobs_due ON archive_jobs (state, next_attempt_at);
