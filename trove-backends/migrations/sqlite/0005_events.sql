-- trove-rs infrastructure schema, version 5 (SQLite): events the control plane recorded
-- (switchovers, ejects, automatic failovers), one row each, listed per project in time order.

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_tenant_at ON events (tenant_id, at);
