-- trove-rs infrastructure schema, version 6 (SQLite): clusters, one row each (the members are instances whose
-- body names the cluster), with the version task managers change them at.

CREATE TABLE clusters (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX clusters_by_tenant ON clusters (tenant_id, deleted, created, id);
