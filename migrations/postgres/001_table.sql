-- The index table: one row per registered name, one per offered file. Names are bytea
-- (UTF-8 bytes): byte order is Rust's str order, and any string round-trips.
-- u64 values (instance, ver, size) are stored bit-cast to bigint.
CREATE TABLE owners (
    name     bytea   NOT NULL PRIMARY KEY,
    ip       text    NOT NULL,
    udp_port integer NOT NULL,
    flowinfo bigint  NOT NULL DEFAULT 0,
    scope_id bigint  NOT NULL DEFAULT 0,
    tcp_port integer NOT NULL,
    online   boolean NOT NULL,
    token    bytea   NOT NULL,
    instance bigint  NOT NULL,
    ver      bigint  NOT NULL,
    peer_ip  text    NOT NULL,
    key      bytea,
    -- The server whose session this is (the one authoritative for its liveness).
    home     text    NOT NULL
);
CREATE TABLE files (
    owner bytea  NOT NULL,
    name  bytea  NOT NULL,
    ver   bigint NOT NULL,
    size  bigint NOT NULL,
    hash  bytea  NOT NULL,
    PRIMARY KEY (owner, name)
);
