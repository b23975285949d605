-- Box identity and secrets (node id, token signing key). Travels with a backup.
CREATE TABLE box_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Replicated documents (menu, settings), stored the way automerge-repo stores them:
-- a compacted snapshot plus incremental change chunks, appended in the transaction of
-- the edit; compacted into a new snapshot when the chunks outgrow it.
CREATE TABLE doc_chunk (
    doc   TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    kind  TEXT NOT NULL CHECK (kind IN ('snapshot', 'incremental')),
    data  BLOB NOT NULL,
    PRIMARY KEY (doc, seq)
) STRICT;

-- Automerge sync state per (document, peer), so a reconnect sends only what is new.
CREATE TABLE doc_sync_state (
    doc        TEXT NOT NULL,
    peer       TEXT NOT NULL,
    state      BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (doc, peer)
) STRICT;

CREATE TABLE student (
    id             TEXT PRIMARY KEY,
    student_number TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    pin_hash       TEXT NOT NULL,
    active         INTEGER NOT NULL DEFAULT 1
) STRICT;

CREATE TABLE staff (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('staff', 'manager')),
    password_hash TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1
) STRICT;

-- Stock per item per service day. remaining = quota + adjusted - reserved - sold,
-- and the CHECK makes "never below zero" a property of the database itself.
CREATE TABLE stock_day (
    item_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    quota       INTEGER NOT NULL,
    adjusted    INTEGER NOT NULL DEFAULT 0,
    reserved    INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold        INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    sold_out    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, service_day),
    CHECK (quota + adjusted - reserved - sold >= 0)
) STRICT, WITHOUT ROWID;

-- Stock changes made by staff or the menu, for audit: quota, restock, adjust,
-- sold_out, back. (Reservations and sales are the orders themselves.)
CREATE TABLE stock_ledger (
    id          INTEGER PRIMARY KEY,
    item_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    kind        TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    staff_id    TEXT,
    reason      TEXT,
    at          TEXT NOT NULL
) STRICT;

-- Orders. Lines are immutable once placed, so they live in the row as JSON (one
-- B-tree write per order instead of one per line); SQLite's json_each reads them for
-- the day summary.
CREATE TABLE orders (
    id            TEXT PRIMARY KEY,
    student_id    TEXT NOT NULL REFERENCES student(id),
    service_day   TEXT NOT NULL,
    pickup_number INTEGER NOT NULL,
    -- The order id's 32 hex digits followed by 128 random bits: found through the
    -- primary key, so no index of random values is written per order.
    pickup_token  TEXT NOT NULL,
    state         TEXT NOT NULL,
    version       INTEGER NOT NULL,
    total_fen     INTEGER NOT NULL CHECK (total_fen >= 0),
    payment_mode  TEXT NOT NULL,
    lines         TEXT NOT NULL,
    pickup_slot   TEXT,
    -- Idempotency-Key of the placement (per student and day) and a hash of its body.
    idempotency_key TEXT,
    request_hash  TEXT,
    placed_at     TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (service_day, pickup_number)
) STRICT, WITHOUT ROWID;
-- One index for both "my orders today" and the idempotency lookup.
CREATE UNIQUE INDEX orders_by_student ON orders (student_id, service_day, idempotency_key);
CREATE INDEX orders_by_state ON orders (state, service_day);
-- Unpaid orders by expiry, for the expiry sweep. Partial: only placed orders are in it,
-- and expiry times grow with time, so each placement appends at its end.
CREATE INDEX orders_expiry ON orders (expires_at) WHERE state = 'placed';

-- Payments and refunds. external_txn_id makes campus-card webhooks idempotent.
CREATE TABLE payment (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders(id),
    kind            TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    method          TEXT NOT NULL,
    amount_fen      INTEGER NOT NULL,
    external_txn_id TEXT UNIQUE,
    staff_id        TEXT,
    service_day     TEXT NOT NULL,
    at              TEXT NOT NULL
) STRICT;

-- Orders taken per pickup slot per day, against the slot's capacity.
CREATE TABLE slot_usage (
    service_day TEXT NOT NULL,
    slot_id     TEXT NOT NULL,
    taken       INTEGER NOT NULL CHECK (taken >= 0),
    PRIMARY KEY (service_day, slot_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE pickup_counter (
    service_day TEXT PRIMARY KEY,
    last_number INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The outbox: every change to orders, stock, payments and pickups, numbered without
-- gaps. AUTOINCREMENT never reuses a number, and since only the writer inserts and a
-- rolled-back savepoint also rolls back sqlite_sequence, committed numbers are gapless.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    at           TEXT NOT NULL
) STRICT;
