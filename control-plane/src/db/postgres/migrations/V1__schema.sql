-- The schema of SQLite's migrations 1 to 5 (control-plane/src/db/mod.rs) in
-- PostgreSQL's types: times are milliseconds since the epoch (BIGINT), JSON
-- is kept as the text the API was given.
CREATE TABLE enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,
    group_name  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);
CREATE TABLE runtimes (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    group_name         TEXT NOT NULL,
    secret_hash        TEXT NOT NULL,
    enrolled_at        BIGINT NOT NULL,
    revoked_at         BIGINT,
    last_heartbeat_at  BIGINT,
    last_heartbeat     TEXT,
    next_secret_hash   TEXT,
    cert_sha256        TEXT,
    next_cert_sha256   TEXT,
    stored_bytes       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runtimes_name ON runtimes(name);
CREATE TABLE access_tokens (
    token_hash   TEXT PRIMARY KEY,
    runtime_id   TEXT NOT NULL REFERENCES runtimes(id),
    expires_at   BIGINT NOT NULL,
    cert_sha256  TEXT
);
CREATE INDEX access_tokens_runtime ON access_tokens(runtime_id);
CREATE TABLE configs (
    group_name  TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    document    TEXT NOT NULL,
    etag        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE runtime_configs (
    runtime_id  TEXT PRIMARY KEY REFERENCES runtimes(id),
    version     BIGINT NOT NULL,
    document    TEXT NOT NULL,
    etag        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE evidence (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  TEXT NOT NULL,
    runtime_id       TEXT NOT NULL REFERENCES runtimes(id),
    uuid             TEXT NOT NULL,
    plugin           TEXT,
    check_id         TEXT,
    status           TEXT,
    body             TEXT NOT NULL,
    received_at      BIGINT NOT NULL,
    body_sha256      TEXT,
    UNIQUE (runtime_id, idempotency_key)
);
CREATE INDEX evidence_received ON evidence(received_at, seq);
CREATE INDEX evidence_uuid ON evidence(uuid, seq);
CREATE INDEX evidence_runtime_seq ON evidence(runtime_id, seq);
