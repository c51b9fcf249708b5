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

-- Every coordinator process, for GET /api/v1/cluster: where it answers and
-- what it last said of itself. `id` is the holder name it campaigns under;
-- a row not refreshed for a day is removed by the others.
CREATE TABLE coordinator_replicas (
    id           TEXT PRIMARY KEY NOT NULL,
    replica      TEXT NOT NULL,
    http_url     TEXT NOT NULL,
    grpc_addr    TEXT,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    agents       TEXT NOT NULL DEFAULT '[]'
);
