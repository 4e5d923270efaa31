-- Minting a code counts the pending ones (at most MAX_PENDING, 1,000) under a lock.
-- Without this index the count read every code ever minted: at 10,000 enrolled
-- servers each mint scanned 10,000 rows while holding the lock. The partial
-- index holds only unused codes, so the count stays small however large the
-- fleet grows.
CREATE INDEX enrollments_pending ON enrollments (expires_at) WHERE consumed_at IS NULL;
