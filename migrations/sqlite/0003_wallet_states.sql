-- Operator decisions about wallets, shared by every node: a disabled wallet (lost or compromised) is never used.
CREATE TABLE wallet_states (
    address     TEXT    PRIMARY KEY,
    disabled    INTEGER NOT NULL DEFAULT 0,
    reason      TEXT    NOT NULL DEFAULT '',
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL DEFAULT ''
);
