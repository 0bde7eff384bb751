//! Request bodies of `/clusters`: create (`{"cluster": {...}}`) and the actions POSTed to a cluster (exactly one
//! key: `grow`, `shrink`, `reset-status`, `upgrade`, `restart`, `configuration_attach`, `configuration_detach`,
//! `add_shard`), decoded into the core's requests with upstream's 400s for what is malformed.

use serde_json::{Map, Value};
use trove_core::api::{ClusterAction, ClusterMemberRequest, CreateCluster};
use trove_core::error::Error;
use trove_core::model::Locality;

use crate::http::bodies::{
    empty_object, invalid, one_key, positive_int, string_or_int, uuid_field,
};
use crate::http::fault::ApiError;

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{what} must be an object")))
}

fn string(m: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{what}.{key} must be a string"))),
    }
}

/// A member's `type`: a string, or (as the client sends it, and upstream's schema allows for engines whose members
/// have several roles) a list of them; here a member has one role, so a list names one.
fn member_type(m: &Map<String, Value>, what: &str) -> Result<Option<String>, ApiError> {
    match m.get("type") {
        Some(Value::Array(a)) => match a.as_slice() {
            [] => Ok(None),
            [Value::String(s)] => Ok(Some(s.clone())),
            _ => Err(invalid(format!(
                "{what}.type must be a string or a list of one string"
            ))),
        },
        _ => string(m, "type", what),
    }
}

/// One `instances` item of a create or a grow.
fn member(v: &Value, what: &str) -> Result<ClusterMemberRequest, ApiError> {
    let m = object(v, what)?;
    const KNOWN: &[&str] = &[
        "flavorRef",
        "volume",
        "nics",
        "availability_zone",
        "modules",
        "region_name",
        "type",
        "related_to",
        "name",
    ];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(format!(
            "{what}: unexpected property '{}'",
            k.escape_default()
        )));
    }
    if m.get("modules")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError(Error::not_implemented(
            "Modules are not supported by this deployment.",
        )));
    }
    if m.get("nics")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1)
    {
        return Err(invalid(format!(
            "{what}.nics: at most one network may be given"
        )));
    }
    let (volume_size, volume_type) = match m.get("volume") {
        None | Some(Value::Null) => (None, None),
        Some(v) => {
            let vol = object(v, &format!("{what}.volume"))?;
            let size = vol
                .get("size")
                .ok_or_else(|| invalid(format!("{what}.volume.size is required")))?;
            (
                Some(positive_int(&format!("{what}.volume.size"), size)?),
                string(vol, "type", &format!("{what}.volume"))?,
            )
        }
    };
    Ok(ClusterMemberRequest {
        flavor_ref: m
            .get("flavorRef")
            .map(|f| string_or_int(&format!("{what}.flavorRef"), f))
            .transpose()?,
        volume_size,
        volume_type,
        availability_zone: string(m, "availability_zone", what)?,
        name: string(m, "name", what)?,
        kind: member_type(m, what)?,
        region_name: string(m, "region_name", what)?,
    })
}

fn members(v: &Value, what: &str) -> Result<Vec<ClusterMemberRequest>, ApiError> {
    let a = v
        .as_array()
        .ok_or_else(|| invalid(format!("{what} must be a list")))?;
    a.iter()
        .enumerate()
        .map(|(i, m)| member(m, &format!("{what}[{i}]")))
        .collect()
}

/// `POST /clusters`.
pub fn create_cluster(body: Map<String, Value>) -> Result<CreateCluster, ApiError> {
    if let Some(k) = body.keys().find(|k| *k != "cluster") {
        return Err(invalid(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            k.escape_default()
        )));
    }
    let c = object(
        body.get("cluster")
            .ok_or_else(|| invalid("'cluster' is a required property"))?,
        "cluster",
    )?;
    let name = string(c, "name", "cluster")?.ok_or_else(|| invalid("cluster.name is required"))?;
    let ds = object(
        c.get("datastore")
            .ok_or_else(|| invalid("cluster.datastore is required"))?,
        "cluster.datastore",
    )?;
    let datastore = string(ds, "type", "cluster.datastore")?
        .ok_or_else(|| invalid("cluster.datastore.type is required"))?;
    let datastore_version = string(ds, "version", "cluster.datastore")?
        .ok_or_else(|| invalid("cluster.datastore.version is required"))?;
    let instances = members(
        c.get("instances")
            .ok_or_else(|| invalid("cluster.instances is required"))?,
        "cluster.instances",
    )?;
    let locality = match string(c, "locality", "cluster")? {
        None => None,
        Some(l) => Some(
            serde_json::from_value::<Locality>(Value::String(l.clone())).map_err(|_| {
                invalid(format!(
                    "cluster.locality '{}' is not one of affinity, soft-affinity, anti-affinity, soft-anti-affinity",
                    l.escape_default()
                ))
            })?,
        ),
    };
    let configuration = string(c, "configuration", "cluster")?
        .map(|s| uuid_field("cluster.configuration", &s))
        .transpose()?;
    let extended_properties = match c.get("extended_properties") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => object(v, "cluster.extended_properties")?.clone(),
    };
    Ok(CreateCluster {
        name,
        datastore,
        datastore_version,
        instances,
        locality,
        configuration,
        extended_properties,
    })
}

/// `POST /clusters/{id}`.
pub fn cluster_action(body: Map<String, Value>) -> Result<ClusterAction, ApiError> {
    let (key, v) = one_key(&body, "cluster action")?;
    match key.as_str() {
        "grow" => Ok(ClusterAction::Grow(members(&v, "grow")?)),
        "shrink" => {
            let a = v
                .as_array()
                .ok_or_else(|| invalid("shrink must be a list"))?;
            let ids = a
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let id = object(m, &format!("shrink[{i}]"))?
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("shrink[{i}].id is required")))?;
                    uuid_field(&format!("shrink[{i}].id"), id)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClusterAction::Shrink(ids))
        }
        "reset-status" => {
            let m = match &v {
                Value::Object(m) => m.clone(),
                Value::Null => Map::new(),
                _ => return Err(invalid("reset-status must be an object")),
            };
            let force_delete = match m.get("force_delete") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid("reset-status.force_delete is not a boolean")),
            };
            Ok(ClusterAction::ResetStatus { force_delete })
        }
        "upgrade" => {
            let m = object(&v, "upgrade")?;
            let dv = string(m, "datastore_version", "upgrade")?
                .ok_or_else(|| invalid("upgrade.datastore_version is required"))?;
            Ok(ClusterAction::Upgrade(dv))
        }
        "restart" => empty_object("restart", &v).map(|_| ClusterAction::Restart),
        "configuration_attach" => {
            let m = object(&v, "configuration_attach")?;
            let id = string(m, "configuration_id", "configuration_attach")?
                .ok_or_else(|| invalid("configuration_attach.configuration_id is required"))?;
            Ok(ClusterAction::ConfigurationAttach(uuid_field(
                "configuration_attach.configuration_id",
                &id,
            )?))
        }
        "configuration_detach" => {
            empty_object("configuration_detach", &v).map(|_| ClusterAction::ConfigurationDetach)
        }
        "add_shard" => empty_object("add_shard", &v).map(|_| ClusterAction::AddShard),
        other => Err(invalid(format!(
            "'{}' is not a known cluster action",
            other.escape_default()
        ))),
    }
}

/// `PUT /clusters/{id}/scaling_policy`: `{"scaling_policy": {"min_members", "max_members", "metric",
/// "grow_above", "shrink_below", "breach_secs", "cooldown_secs", "step"}}` (every field required).
pub fn scaling_policy(
    body: Map<String, Value>,
) -> Result<trove_core::model::ScalingPolicy, ApiError> {
    if let Some(k) = body.keys().find(|k| *k != "scaling_policy") {
        return Err(invalid(format!(
            "Additional properties are not allowed ('{}' was unexpected)",
            k.escape_default()
        )));
    }
    let v = body
        .get("scaling_policy")
        .cloned()
        .ok_or_else(|| invalid("'scaling_policy' is a required property"))?;
    serde_json::from_value(v).map_err(|e| invalid(format!("scaling_policy: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn the_clients_create_body_decodes() {
        let c = create_cluster(map(json!({"cluster": {
            "name": "c1",
            "datastore": {"type": "redis", "version": "7.0"},
            "instances": [
                {"flavorRef": "2", "volume": {"size": 1}, "availability_zone": "h2"},
                {"flavorRef": 2, "volume": {"size": "1"}},
                {"flavorRef": 2, "type": ["replica"]},
                {"flavorRef": 2, "type": "replica"},
            ],
            "locality": "anti-affinity",
        }})))
        .expect("decodes");
        assert_eq!(c.instances[2].kind.as_deref(), Some("replica"));
        assert_eq!(c.instances[3].kind.as_deref(), Some("replica"));
        assert_eq!(c.instances.len(), 4);
        assert_eq!(c.instances[1].flavor_ref.as_deref(), Some("2"));
        assert_eq!(c.instances[0].availability_zone.as_deref(), Some("h2"));
        assert_eq!(c.locality, Some(Locality::AntiAffinity));
    }

    #[test]
    fn malformed_bodies_are_400s() {
        for bad in [
            json!({"cluster": {"name": "c"}}),
            json!({"cluster": {"name": "c", "datastore": {"type": "redis", "version": "7"}, "instances": {}}}),
            json!({"cluster": {"name": "c", "datastore": {"type": "redis", "version": "7"},
                "instances": [{"flavorRef": "1", "volume": {"size": 0}}]}}),
            json!({"cluster": {"name": "c", "datastore": {"type": "redis", "version": "7"},
                "instances": [{"flavorRef": "1", "bogus": 1}]}}),
            json!({"cluster": {"name": "c", "datastore": {"type": "redis", "version": "7"},
                "instances": [{"flavorRef": "1", "type": ["replica", "member"]}]}}),
            json!({"clusters": {}}),
        ] {
            let e = create_cluster(map(bad.clone())).expect_err("refused");
            assert_eq!(e.0.fault().status, 400, "{bad}");
        }
        for bad in [
            json!({"grow": [], "shrink": []}),
            json!({"shrink": [{"id": "nope"}]}),
            json!({"explode": {}}),
        ] {
            let e = cluster_action(map(bad.clone())).expect_err("refused");
            assert_eq!(e.0.fault().status, 400, "{bad}");
        }
        assert_eq!(
            cluster_action(map(json!({"reset-status": {}}))).expect("decodes"),
            ClusterAction::ResetStatus {
                force_delete: false
            }
        );
    }
}
