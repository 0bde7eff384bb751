-- trove-rs infrastructure schema, version 3 (PostgreSQL): the service status as a column, so that a heartbeat
-- batch can leave RESTART_REQUIRED and DELETED rows alone inside its own statement.

ALTER TABLE service_statuses ADD COLUMN status TEXT COLLATE "C";
UPDATE service_statuses SET status = (body::json ->> 'status');
