-- Staff can block a student's account at the box (fair-share abuse), with a reason.
-- NULL means not blocked. A block is local to the box; the cloud learns of it through
-- the outbox (`account.blocked` / `account.unblocked`).
ALTER TABLE student ADD COLUMN blocked_reason TEXT;
ALTER TABLE student ADD COLUMN blocked_at TEXT;

