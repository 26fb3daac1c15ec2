-- Accounts: users, the single-use tokens of verification and reset mails, login sessions with their rotating
-- refresh tokens, the audit log, and stream ownership.
CREATE TABLE users (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Lowercased; compared without case.
    email             TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string.
    password_hash     TEXT    NOT NULL,
    role              TEXT    NOT NULL DEFAULT 'streamer' CHECK (role IN ('admin', 'streamer')),
    email_verified_at INTEGER,
    disabled_at       INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- Tokens of verification and password-reset links: only their SHA-256 is kept; each works once, until expires_at.
CREATE TABLE email_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT    NOT NULL CHECK (purpose IN ('verify', 'reset')),
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

-- A login session is one refresh-token family: revoking it ends every refresh token and access token of it.
CREATE TABLE login_sessions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT,
    ip             TEXT    NOT NULL DEFAULT '',
    user_agent     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);

-- Refresh tokens (SHA-256 only). used_at is set when the token is exchanged for the next one; presenting a used
-- token again is reuse, and revokes its session.
CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES login_sessions (id) ON DELETE CASCADE,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Who did what, when, from where. Rows are only ever added.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    -- The user acting, when one is logged in (no foreign key: the log outlives what it names).
    actor_id  INTEGER,
    -- The user's email, or "cli", "system", "anonymous".
    actor     TEXT    NOT NULL,
    ip        TEXT,
    action    TEXT    NOT NULL,
    outcome   TEXT    NOT NULL CHECK (outcome IN ('success', 'failure')),
    target    TEXT,
    -- JSON object.
    details   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action, at);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);

-- Streams belong to users (NULL: made by the CLI or at first start, managed by admins). A deleted stream keeps its
-- row (its broadcasts are archived forever) under the name "~<id>", which frees its name.
ALTER TABLE streams ADD COLUMN owner_id INTEGER REFERENCES users (id);
ALTER TABLE streams ADD COLUMN deleted_at INTEGER;
-- Viewer tokens carry the version they were made under; bumping it revokes all of them.
ALTER TABLE streams ADD COLUMN viewer_token_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX streams_owner ON streams (owner_id);
