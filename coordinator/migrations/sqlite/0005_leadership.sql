-- Leadership among coordinator replicas: one row, the lease. The holder
-- renews it well before it expires; another replica takes it only once it
-- has expired. `epoch` grows at every change of holder, and every write only
-- the leader may make checks it in its own transaction (fencing): a leader
-- that was paused or cut off and lost the lease can no longer write.
-- Times are milliseconds since the Unix epoch on the database's clock, so
-- the replicas' clocks never have to agree.
CREATE TABLE coordinator_lease (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    acquired_ms INTEGER NOT NULL,
    renewed_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
