-- The transaction that stored each record (its 64-bit id). seq is taken at
-- insert, not at commit, so a reader paging by seq could pass a record whose
-- transaction commits later; the listing pages by (txid, seq) instead, and
-- reads only transactions older than every evidence writer still in flight
-- (postgres/evidence.rs). Records stored before this migration get the
-- migration's own id: they come first, in seq order.
ALTER TABLE evidence ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX evidence_txid_seq ON evidence(txid, seq);
CREATE INDEX evidence_runtime_txid_seq ON evidence(runtime_id, txid, seq);
