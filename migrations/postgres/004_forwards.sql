-- Meetings across servers (docs/PROTOCOL.md §1.11, "Meetings across servers"): what one
-- server asks the owner's home server to send it, or tells the server holding a
-- meeting about a punch probe. The addressee takes its rows (DELETE ... RETURNING) on
-- every NOTIFY on fileapp_forwards and every beat; rows older than a minute are
-- pruned (a meeting lives 30 s).
CREATE TABLE forwards (
    seq    bigserial   PRIMARY KEY,
    server text        NOT NULL,
    body   bytea       NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forwards_server ON forwards (server, seq);
