-- Staff can block a student's account at the box (fair-share abuse), with a reason.
-- NULL means not blocked. A block is local to the box; the cloud learns of it through
-- the outbox (`account.blocked` / `account.unblocked`).
ALTER TABLE student ADD COLUMN blocked_reason TEXT;
ALTER TABLE student ADD COLUMN blocked_at TEXT;

-- Unpaid open orders per student (the fair-share cap): a small partial index, holding
-- only orders waiting for payment.
CREATE INDEX orders_unpaid_by_student ON orders (student_id, placed_at) WHERE state = 'placed';
