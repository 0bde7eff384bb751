-- trove-rs infrastructure schema, version 5 (PostgreSQL): events the control plane recorded
-- (switchovers, ejects, automatic failovers), one row each, listed per project in time order.

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_tenant_at ON events (tenant_id, at);
