-- SQLite's migration 6 (control-plane/src/db/mod.rs) in PostgreSQL's types:
-- the latest record of each stream, kept as records are stored (see
-- results.rs for why a table), the references it carries for the reference
-- filter, the retention scan per runtime by age, and the expiry of issued
-- client certificates (the fleet view). Filled from the records already
-- stored.
CREATE TABLE evidence_latest (
    runtime_id       TEXT NOT NULL REFERENCES runtimes(id),
    uuid             TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    plugin           TEXT,
    check_id         TEXT,
    status           TEXT,
    severity         TEXT,
    subject          TEXT,
    title            TEXT,
    failing          INTEGER NOT NULL,
    received_at      BIGINT NOT NULL,
    PRIMARY KEY (runtime_id, uuid)
);
-- The results' keyset order, failing first.
CREATE INDEX evidence_latest_order ON evidence_latest ((1 - failing), runtime_id, uuid);
CREATE INDEX evidence_latest_uuid ON evidence_latest(uuid);
CREATE TABLE evidence_latest_refs (
    runtime_id  TEXT NOT NULL,
    uuid        TEXT NOT NULL,
    reference   TEXT NOT NULL,
    PRIMARY KEY (runtime_id, uuid, reference)
);
CREATE INDEX evidence_latest_refs_reference ON evidence_latest_refs(reference);
CREATE INDEX evidence_runtime_received ON evidence(runtime_id, received_at);
CREATE TABLE issued_certificates (
    sha256     TEXT PRIMARY KEY,
    not_after  BIGINT NOT NULL
);

-- A label as the store reads it: a JSON string, else nothing (as
-- json_extract and the Rust code read only strings).
INSERT INTO evidence_latest
    (runtime_id, uuid, seq, idempotency_key, plugin, check_id, status, severity, subject,
     title, failing, received_at)
SELECT DISTINCT ON (e.runtime_id, e.uuid)
       e.runtime_id, e.uuid, e.seq, e.idempotency_key, e.plugin, e.check_id, e.status,
       CASE WHEN json_typeof(b.body -> 'labels' -> 'severity') = 'string'
            THEN b.body -> 'labels' ->> 'severity' END,
       CASE WHEN json_typeof(b.body -> 'labels' -> 'subject') = 'string'
            THEN b.body -> 'labels' ->> 'subject' END,
       CASE WHEN json_typeof(b.body -> 'title') = 'string' THEN b.body ->> 'title' END,
       CASE WHEN e.status = 'not-satisfied' THEN 1 ELSE 0 END, e.received_at
FROM evidence e, LATERAL (SELECT e.body::json AS body) b
ORDER BY e.runtime_id, e.uuid, e.seq DESC;

-- The first 64 references (MAX_INDEXED_REFERENCES), as records stored from
-- now on keep.
INSERT INTO evidence_latest_refs (runtime_id, uuid, reference)
SELECT DISTINCT runtime_id, uuid, reference
FROM (
    SELECT l.runtime_id, l.uuid, p.value ->> 'value' AS reference,
           row_number() OVER (PARTITION BY l.runtime_id, l.uuid ORDER BY p.ordinality) AS n
    FROM evidence_latest l
    JOIN evidence e ON e.seq = l.seq
    CROSS JOIN LATERAL json_array_elements(
        CASE WHEN json_typeof(e.body::json -> 'props') = 'array'
             THEN e.body::json -> 'props' ELSE '[]'::json END
    ) WITH ORDINALITY AS p(value, ordinality)
    WHERE json_typeof(p.value) = 'object'
      AND p.value ->> 'name' = 'reference'
      AND json_typeof(p.value -> 'value') = 'string'
) refs
WHERE n <= 64;
