-- Operator decisions about wallets, shared by every node: a disabled wallet (lost or compromised) is never used.
CREATE TABLE wallet_states (
    address     TEXT    PRIMARY KEY,
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    reason      TEXT    NOT NULL DEFAULT '',
    updated_at  BIGINT  NOT NULL,
    updated_by  TEXT    NOT NULL DEFAULT ''
);
