//! The OpenAPI 3 document, generated from the same route table the router is built from.

use serde_json::{json, Map, Value};

/// One documented route.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// HTTP method (upper case).
    pub method: &'static str,
    /// axum path (also an OpenAPI path template).
    pub path: &'static str,
    /// Operation id.
    pub op: &'static str,
    /// Success status.
    pub status: u16,
    /// Tag (resource family).
    pub tag: &'static str,
    /// Whether the admin role is needed.
    pub admin: bool,
}

fn params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

/// What the trove-rs extensions (routes and fields upstream Trove does not have) take and answer.
fn extension_doc(op: &str) -> Option<&'static str> {
    Some(match op {
        "createBackupSchedule" => {
            "trove-rs extension: scheduled backups with retention, run by the task manager. Body: \
             {\"backup_schedule\": {\"name\": N, \"cron\": \"30 2 * * *\" | \"interval\": SECONDS (>= 60), \
             \"incremental\": false, \"keep_last\": COUNT, \"keep_days\": DAYS}} (exactly one of cron and interval; \
             cron in UTC, five fields). Answers 202 with the schedule and its next_run. Retention deletes the \
             schedule's oldest backups beyond keep_last / older than keep_days, never one a kept incremental \
             builds on."
        }
        "listBackupSchedules" => {
            "trove-rs extension: the instance's backup schedules, with next_run, last_run, last_backup_id and \
             last_error (why the last run took no backup)."
        }
        "createInstance" => {
            "Upstream's instance create, with one trove-rs extension field: \
             {\"instance\": {..., \"restorePoint\": {\"backupRef\": B, \"restore_time\": \"2026-12-06T08:30:00Z\"}}} \
             (point-in-time restore, PostgreSQL and MariaDB). The restore stops at restore_time (RFC 3339): the new \
             instance holds every transaction committed before it and none after. B's chain covers the moments from \
             the end of its full backup to the end of B (an incremental: it carries the engine's archive since its \
             parent); a time outside that range is refused with 400 naming the range covered."
        }
        "updateInstance" | "patchInstance" => {
            "Upstream's instance update, with one trove-rs extension field: {\"instance\": {\"auto_failover\": \
             true | false | null}} turns automatic failover of this replication source on or off (null: the \
             deployment's [core] auto_failover, on by default); the view shows the field once set."
        }
        "listInstanceEvents" => {
            "trove-rs extension: the events of the instance's replication set, oldest first: \
             {\"events\": [{\"id\", \"kind\": \"switchover\" | \"eject\" | \"failover\", \"instances\": [old source, \
             new source, others...], \"at\", \"ok\", \"message\", \"details\": {\"old_source\", \"new_source\", \
             \"reason\", \"positions\", \"fenced\", \"took_ms\", ...}}]}. A failover is the control plane's own eject of \
             a source whose engine stopped answering (automatic failover, on by default; the deployment's \
             [core] auto_failover and the instance's \"auto_failover\" field turn it off)."
        }
        "listClusterEvents" => {
            "trove-rs extension: what happened to the cluster, oldest first: {\"events\": [{\"id\", \"kind\": \
             \"cluster_create\" | \"cluster_grow\" | \"cluster_shrink\", \"instances\": [members concerned], \"at\", \
             \"ok\", \"message\", \"details\": {\"cluster_id\", \"members\", \"moved\": {\"slots\", \"keys\"}, \
             \"reason\": why the scaling policy acted, or null for a user's action}}]}."
        }
        "setClusterScalingPolicy" => {
            "trove-rs extension: load-driven scaling. Body {\"scaling_policy\": {\"min_members\": 3, \
             \"max_members\": 6, \"metric\": \"memory_used\" | \"ops_per_sec\" | \"connections\" | \
             \"flow_control_paused\" | \"cpu\" | \"volume_used\", \"grow_above\": X, \"shrink_below\": Y, \
             \"breach_secs\": S, \"cooldown_secs\": C, \"step\": 1}}. The task manager averages the metric over the \
             members' heartbeat reports; when the average stays above grow_above (below shrink_below) for \
             breach_secs it grows (shrinks, newest members first, their data moved away first) by step members \
             through the same workflows as grow and shrink, never beyond min_members..max_members (min_members at \
             least the datastore's minimum of 3), never while another cluster task runs, and waits cooldown_secs \
             after each action. Every decision is a \"scaling\" event of GET /clusters/{id}/events. 422 while a \
             cluster task runs; 400 for a policy that cannot hold."
        }
        "deleteClusterScalingPolicy" => {
            "trove-rs extension: the cluster no longer scales on its own."
        }
        "clusterAction" => {
            "Upstream's cluster actions, exactly one key: {\"grow\": [{\"flavorRef\", \"volume\": {\"size\"}}]} \
             (new members equal to the others; Redis hash slots and their keys move to them), {\"shrink\": \
             [{\"id\"}]} (beyond upstream, the leaving members' slots and keys move to the others first; never \
             below the datastore's minimum of 3), {\"reset-status\": {}}. Answers 202 with the cluster."
        }
        "deleteBackupSchedule" => {
            "trove-rs extension: removes a backup schedule; the backups it took stay."
        }
        _ => return None,
    })
}

/// Builds the document.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "operationId": r.op,
            "tags": [r.tag],
            "parameters": params(r.path),
            "responses": {
                r.status.to_string(): { "description": "Success" },
                "default": {
                    "description": "An upstream Trove fault",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Fault" } } }
                }
            }
        });
        if r.path.starts_with("/v1.0/{tenant_id}") {
            op["security"] = json!([{ "token": [] }]);
        }
        if r.admin {
            op["description"] = json!("Requires the admin role.");
        }
        if let Some(d) = extension_doc(r.op) {
            op["description"] = json!(d);
        }
        if matches!(r.method, "POST" | "PUT" | "PATCH") {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": { "type": "object" } } }
            });
        }
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Trove v1.0 API (trove-rs)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The OpenStack Trove v1.0 database-as-a-service API as served by trove-rs."
        },
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {
                "token": { "type": "apiKey", "in": "header", "name": "X-Auth-Token" }
            },
            "schemas": {
                "Fault": {
                    "type": "object",
                    "description": "{\"<faultName>\": {\"code\": N, \"message\": \"...\"}}",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "integer" },
                            "message": { "type": "string" }
                        }
                    }
                }
            }
        }
    })
}
