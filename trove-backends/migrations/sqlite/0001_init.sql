-- trove-rs infrastructure schema, version 1 (SQLite).
-- Each entity is one row: the columns the store filters, orders or locks on, plus the whole record as JSON in
-- `body`. Times used for ordering are nanoseconds since the Unix epoch (UTC).

CREATE TABLE datastores (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    default_version_id TEXT,
    body TEXT NOT NULL
);

CREATE TABLE datastore_versions (
    id TEXT PRIMARY KEY,
    datastore_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (datastore_id, name)
);

CREATE TABLE flavors (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE config_params (
    datastore_version_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (datastore_version_id, name)
);

CREATE TABLE configurations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX configurations_by_tenant ON configurations (tenant_id, deleted, created DESC, id);

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    clustered BOOLEAN NOT NULL,
    replica_of TEXT,
    configuration_id TEXT,
    ram_mb BIGINT NOT NULL,
    volume_size BIGINT NOT NULL,
    created BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX instances_by_tenant ON instances (tenant_id, deleted, created DESC, id);
CREATE INDEX instances_by_created ON instances (created DESC, id);
CREATE INDEX instances_by_replica_of ON instances (replica_of);
CREATE INDEX instances_by_configuration ON instances (configuration_id);

CREATE TABLE service_statuses (
    instance_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    instance_id TEXT,
    deleted BOOLEAN NOT NULL,
    updated BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX backups_by_tenant ON backups (tenant_id, deleted, updated DESC, id);
CREATE INDEX backups_by_instance ON backups (instance_id);

CREATE TABLE quotas (
    tenant_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE root_history (
    instance_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    is_open BOOLEAN NOT NULL,
    created BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX workflows_open ON workflows (is_open, created, id);

CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX journal_by_workflow ON journal (workflow_id, seq);
