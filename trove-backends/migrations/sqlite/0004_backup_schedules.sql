-- trove-rs infrastructure schema, version 4 (SQLite): backup schedules, one row each, with the version a task
-- manager claims a run at.

CREATE TABLE backup_schedules (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX backup_schedules_instance ON backup_schedules (instance_id);
