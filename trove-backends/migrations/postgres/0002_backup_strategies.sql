-- trove-rs infrastructure schema, version 2 (PostgreSQL): backup strategies.
-- One row per (tenant, instance); `instance_id` is '' for the tenant-wide strategy, so the pair can be the key.

CREATE TABLE backup_strategies (
    tenant_id TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, instance_id)
);
