-- Gateway archive mode: every bundle transaction is signed and stored with the list of its items BEFORE it is
-- posted. A restart (after a crash between the gateway accepting it and the jobs being marked uploaded) posts that
-- same transaction again, which pays no second reward, instead of bundling the items into a new transaction.
CREATE TABLE archive_bundles (
    tx_id           TEXT    PRIMARY KEY,
    -- The address of the wallet that signed (and pays for) it.
    wallet          TEXT    NOT NULL,
    -- The signed transaction as `POST /tx` takes it, without its data: the data is the bundle of its items, rebuilt
    -- from their stored signed bytes.
    tx_json         TEXT    NOT NULL,
    -- Winston, as a decimal string.
    reward          TEXT    NOT NULL,
    data_size       BIGINT  NOT NULL,
    -- signed: stored, perhaps posted (not known to be accepted); posted: the gateway accepted it; abandoned: refused
    -- and unknown to the gateway, its items went back to be bundled again; dropped: accepted, then lost before it
    -- was confirmed (its items were put in a new transaction).
    state           TEXT    NOT NULL DEFAULT 'signed'
                    CHECK (state IN ('signed', 'posted', 'abandoned', 'dropped')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    claimed_by      TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    posted_at       BIGINT,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX archive_bundles_due ON archive_bundles (state, next_attempt_at);

-- The items of each bundle transaction, in order. An item in more than one transaction shows here (`zipiq verify`).
CREATE TABLE archive_bundle_items (
    tx_id    TEXT    NOT NULL REFERENCES archive_bundles (tx_id) ON DELETE CASCADE,
    position BIGINT  NOT NULL,
    job_id   BIGINT  NOT NULL REFERENCES archive_jobs (id) ON DELETE CASCADE,
    item_id  TEXT    NOT NULL,
    PRIMARY KEY (tx_id, position)
);
CREATE INDEX archive_bundle_items_job ON archive_bundle_items (job_id);

-- A job in state 'signed' whose bundle_tx is set belongs to that stored bundle: it is posted with it, never put in
-- another one (claims of signed jobs skip it).
CREATE INDEX archive_jobs_bundle ON archive_jobs (bundle_tx);
