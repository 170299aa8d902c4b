-- Owners' signed records (see docs/PROTOCOL.md, "Records the server cannot forge"):
-- the signature over an owner's record as it stands, or NULL seq/sig while it changed
-- and is not yet signed. `ver` is the table version of the last change.
CREATE TABLE records (
    owner     bytea  NOT NULL PRIMARY KEY,
    ver       bigint NOT NULL,
    seq       bigint,
    advertise text,
    sig       bytea
);

-- A folder's file count (its manifest's), 0 for a file: shown by `list`, signed by its
-- owner with the rest of the record.
ALTER TABLE files ADD COLUMN files bigint NOT NULL DEFAULT 0;
