-- The delta log of several servers on one database: every commit adds one row per owner
-- it touched, numbered by one sequence, and NOTIFYs the new number on fileapp_changes.
-- Readers re-read the named owners' rows (see src/store/postgres/follow.rs).
CREATE TABLE changes (
    seq    bigserial   PRIMARY KEY,
    owner  bytea       NOT NULL,
    server text        NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
-- The servers of the deployment: each bumps `beat` while it runs; the others judge its
-- liveness by whether `beat` moves (their own clocks, never a comparison of two).
CREATE TABLE servers (
    id      text        PRIMARY KEY,
    addr    text        NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    beat    bigint      NOT NULL DEFAULT 0,
    seen    timestamptz NOT NULL DEFAULT now(),
    applied bigint      NOT NULL DEFAULT 0,
    online  bigint      NOT NULL DEFAULT 0
);
