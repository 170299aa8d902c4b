-- What each owner's server judged of its reachability (docs/PROTOCOL.md §1.11), so that
-- the clients of every server of a deployment plan their paths to it: `reach_tcp` is
-- NULL until tested; `reach_nat` is 0 unknown, 1 endpoint-independent, 2 dependent.
ALTER TABLE owners ADD COLUMN reach_tcp boolean;
ALTER TABLE owners ADD COLUMN reach_nat smallint NOT NULL DEFAULT 0;
