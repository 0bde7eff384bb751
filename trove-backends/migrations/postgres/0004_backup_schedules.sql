-- trove-rs infrastructure schema, version 4 (PostgreSQL): backup schedules, one row each, with the version a
-- task manager claims a run at.

CREATE TABLE backup_schedules (
    id TEXT COLLATE "C" PRIMARY KEY,
    instance_id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX backup_schedules_instance ON backup_schedules (instance_id);
