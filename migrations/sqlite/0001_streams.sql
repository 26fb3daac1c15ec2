-- Streams: a name people publish to and watch, with the hash of its publishing key.
CREATE TABLE streams (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    -- SHA-256 (hex) of the stream key; NULL when the key was revoked and no new one made.
    key_hash    TEXT,
    -- public, unlisted or private
    visibility  TEXT    NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'unlisted', 'private')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
