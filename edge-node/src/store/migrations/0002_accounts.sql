-- Accounts: blocks by staff (fair share) and where an account was made.
-- Staff can block a student's account at the box (fair-share abuse), with a reason.
-- NULL means not blocked. A block is local to the box; the cloud learns of it through
-- the outbox (`account.blocked` / `account.unblocked`).
ALTER TABLE student ADD COLUMN blocked_reason TEXT;
ALTER TABLE student ADD COLUMN blocked_at TEXT;


-- Where an account was made: 'local' (roster import, staff add, the demo) or 'cloud'.
-- Accounts from the cloud never overwrite local ones.
ALTER TABLE student ADD COLUMN origin TEXT NOT NULL DEFAULT 'local' CHECK (origin IN ('local', 'cloud'));
ALTER TABLE staff ADD COLUMN origin TEXT NOT NULL DEFAULT 'local' CHECK (origin IN ('local', 'cloud'));

-- Bumped by every change to an account, by whichever process makes it (the command
-- line writes the same database while the box serves): the box reloads its account
-- states when it moves.
INSERT INTO box_meta (key, value) VALUES ('accounts_version', '0')
    ON CONFLICT (key) DO NOTHING;
CREATE TRIGGER student_inserted AFTER INSERT ON student BEGIN
    UPDATE box_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'accounts_version';
END;
CREATE TRIGGER student_updated AFTER UPDATE ON student BEGIN
    UPDATE box_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'accounts_version';
END;
CREATE TRIGGER staff_inserted AFTER INSERT ON staff BEGIN
    UPDATE box_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'accounts_version';
END;
CREATE TRIGGER staff_updated AFTER UPDATE ON staff BEGIN
    UPDATE box_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'accounts_version';
END;
