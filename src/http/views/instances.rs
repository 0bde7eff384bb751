//! Instance views: the basic and detailed instance (upstream `InstanceView` / `InstanceDetailView`), the
//! management view, and instance listings rendered row by row.

use serde_json::{json, Map, Value};
use trove_core::api::{InstanceView, Page};
use trove_core::error::Error;

use super::{links, next_link, ts};
use crate::http::extract::Caller;
use crate::http::fault::ApiError;

/// Upstream `DATASTORE_VERSION` view fragment of an instance.
fn instance_datastore(v: &InstanceView, detail: bool) -> Value {
    let mut ds = json!({ "type": v.datastore.name, "version": v.datastore_version.name });
    if detail {
        ds["version_number"] = json!(v.datastore_version.version);
    }
    ds
}

/// The instance view: basic (lists) or detailed (show, `/detail`, create).
pub fn instance(c: &Caller, v: &InstanceView, detail: bool) -> Value {
    let i = &v.instance;
    let id = i.id.to_string();
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("name".into(), json!(i.name));
    o.insert("status".into(), json!(v.status));
    o.insert("operating_status".into(), json!(v.operating_status));
    o.insert("links".into(), links(c, "instances", &id));
    o.insert(
        "flavor".into(),
        json!({ "id": i.flavor_id, "links": links(c, "flavors", &i.flavor_id) }),
    );
    o.insert("datastore".into(), instance_datastore(v, detail));
    o.insert("region".into(), json!(i.region));
    let public = i.addresses.iter().any(|a| a.kind == "public");
    let access = if i.access.is_public || !i.access.allowed_cidrs.is_empty() {
        serde_json::to_value(&i.access)
            .unwrap_or_else(|_| json!({ "is_public": i.access.is_public }))
    } else {
        json!({ "is_public": public })
    };
    o.insert("access".into(), access);
    if let Some(size) = i.volume_size {
        let mut vol = json!({ "size": size });
        if detail {
            if let Some(u) = v.service.as_ref().and_then(|s| s.volume) {
                vol["used"] = json!((u.used_gb() * 100.0).round() / 100.0);
                vol["used_percent"] = json!((u.used_percent() * 100.0).round() / 100.0);
            }
        }
        o.insert("volume".into(), vol);
    }
    if !i.addresses.is_empty() {
        o.insert(
            "ip".into(),
            json!(i
                .addresses
                .iter()
                .map(|a| a.address.clone())
                .collect::<Vec<_>>()),
        );
        o.insert(
            "addresses".into(),
            Value::Array(
                i.addresses
                    .iter()
                    .map(|a| json!({ "address": a.address, "type": a.kind }))
                    .collect(),
            ),
        );
    }
    if let Some(port) = i.port {
        o.insert("port".into(), json!(port));
    }
    if let Some(src) = i.replica_of {
        o.insert(
            "replica_of".into(),
            json!({ "id": src, "links": links(c, "instances", &src.to_string()) }),
        );
    }
    if !v.replicas.is_empty() {
        let reps: Vec<Value> = v
            .replicas
            .iter()
            .map(|r| json!({ "id": r, "links": links(c, "instances", &r.to_string()) }))
            .collect();
        o.insert("replicas".into(), Value::Array(reps));
    }
    if let Some(auto) = i.auto_failover {
        // Extension: the replication source's own automatic-failover setting.
        o.insert("auto_failover".into(), json!(auto));
    }
    if c.ctx.is_admin() {
        o.insert("tenant_id".into(), json!(i.tenant_id));
    }
    if detail {
        o.insert("created".into(), json!(ts(&i.created)));
        o.insert("updated".into(), json!(ts(&i.updated)));
        let ssu = v.service.as_ref().map_or(i.updated, |s| s.updated_at);
        o.insert("service_status_updated".into(), json!(ts(&ssu)));
        if let Some((cid, cname)) = &v.configuration {
            o.insert(
                "configuration".into(),
                json!({ "id": cid, "name": cname, "links": links(c, "configurations", &cid.to_string()) }),
            );
        }
        if let Some(l) = i.locality {
            o.insert("locality".into(), json!(l.as_str()));
        }
        if let Some(f) = &i.fault {
            let details = if c.ctx.is_admin() {
                json!(f.details)
            } else {
                Value::Null
            };
            o.insert(
                "fault".into(),
                json!({ "message": f.message, "created": ts(&f.created), "details": details }),
            );
        }
        if let Some(p) = &v.password {
            o.insert("password".into(), json!(p.expose()));
        }
        if let Some(cl) = i.cluster_id {
            o.insert("cluster_id".into(), json!(cl));
        }
        if c.ctx.is_admin() {
            o.insert("server_id".into(), json!(i.server_id));
            o.insert("volume_id".into(), json!(i.volume_id));
            o.insert("encrypted_rpc_messaging".into(), json!(true));
        }
    }
    Value::Object(o)
}

/// The management instance view: the detail view plus server, volume and guest fields.
pub fn mgmt_instance(c: &Caller, v: &InstanceView) -> Value {
    let mut o = instance(c, v, true);
    let i = &v.instance;
    o["tenant_id"] = json!(i.tenant_id);
    o["deleted"] = json!(i.deleted);
    o["deleted_at"] = json!(i.deleted_at.as_ref().map(ts));
    o["server_id"] = json!(i.server_id);
    o["volume_id"] = json!(i.volume_id);
    o["encrypted_rpc_messaging"] = json!(true);
    o["task_description"] = json!(i.task.description());
    let service = v.service.as_ref();
    o["service_status"] = json!(service.map_or("NEW", |s| s.status.api_status()));
    o["guest_status"] = json!({ "state_description": service.map_or("new", |s| s.status.description()).to_ascii_lowercase() });
    let addresses: Vec<Value> = i
        .addresses
        .iter()
        .map(|a| {
            json!({
                "addr": a.address,
                "version": if a.address.contains(':') { 6 } else { 4 },
                "OS-EXT-IPS:type": if a.kind == "public" { "floating" } else { "fixed" },
                "OS-EXT-IPS-MAC:mac_addr": "",
            })
        })
        .collect();
    o["server"] = json!({
        "id": i.server_id,
        "name": i.name,
        "status": i.server_status.as_str(),
        "host": i.host,
        "tenant_id": i.tenant_id,
        "addresses": { "private": addresses },
    });
    if let Some(size) = i.volume_size {
        let usage = service.and_then(|s| s.volume);
        o["volume"] = json!({
            "id": i.volume_id,
            "size": size,
            "status": if i.volume_id.is_some() { "in-use" } else { "creating" },
            "availability_zone": i.availability_zone.clone().unwrap_or_else(|| "nova".into()),
            "created_at": ts(&i.created),
            "attachments": [],
            "used": usage.map(|u| (u.used_gb() * 100.0).round() / 100.0),
            "total": usage.map(|u| (u.total_bytes as f64 / 1073741824.0 * 100.0).round() / 100.0),
        });
    }
    o
}

/// `{"instance": ...}`: the detailed view (show, create).
pub fn show(c: &Caller, v: &InstanceView) -> Value {
    json!({ "instance": instance(c, v, true) })
}

/// `{"instance": ...}`: the management view (`GET /mgmt/instances/{id}`).
pub fn mgmt_show(c: &Caller, v: &InstanceView) -> Value {
    json!({ "instance": mgmt_instance(c, v) })
}

/// `GET /instances/{id}/configuration`: the configuration values in effect.
pub fn configuration(values: &Map<String, Value>) -> Value {
    json!({ "instance": { "configuration": values } })
}

/// The body of `GET /instances` (basic views) or `/instances/detail` (detailed views), one page.
pub async fn list(c: Caller, page: Page<InstanceView>, detail: bool) -> Result<Vec<u8>, ApiError> {
    page_body(c, page, move |c, v| instance(c, v, detail)).await
}

/// The body of `GET /mgmt/instances`, one page of management views.
pub async fn mgmt_list(c: Caller, page: Page<InstanceView>) -> Result<Vec<u8>, ApiError> {
    page_body(c, page, mgmt_instance).await
}

/// Pages at least this long are rendered off the async workers, split over threads.
const PARALLEL_RENDER_MIN: usize = 200;

/// The body of an instance listing, `{"instances": [...], "links": [...]}`: byte for byte what serializing
/// [`super::page`] gives (object keys in the same sorted order, rows joined by commas), but each row is serialized
/// as soon as it is rendered, and a long page is rendered on a blocking thread split over the cores, so a
/// 1,000-row page neither holds an async worker nor builds one large JSON tree.
async fn page_body<F>(c: Caller, page: Page<InstanceView>, render: F) -> Result<Vec<u8>, ApiError>
where
    F: Fn(&Caller, &InstanceView) -> Value + Send + Sync + 'static,
{
    fn failed(e: impl std::fmt::Display) -> ApiError {
        ApiError(Error::backend(
            "http",
            format!("rendering an instance page failed: {e}"),
            false,
        ))
    }
    fn serialize_rows<F: Fn(&Caller, &InstanceView) -> Value>(
        c: &Caller,
        rows: &[InstanceView],
        render: &F,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(rows.len() * 640);
        for (n, v) in rows.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &render(c, v))?;
        }
        Ok(out)
    }
    fn assemble<F: Fn(&Caller, &InstanceView) -> Value + Sync>(
        c: &Caller,
        rows: &[InstanceView],
        next: Option<&str>,
        render: &F,
    ) -> Result<Vec<u8>, ApiError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, 4);
        let parts: Vec<Vec<u8>> = if rows.len() < PARALLEL_RENDER_MIN || threads == 1 {
            vec![serialize_rows(c, rows, render).map_err(failed)?]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = rows
                    .chunks(rows.len().div_ceil(threads))
                    .map(|chunk| scope.spawn(move || serialize_rows(c, chunk, render)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| failed("a render thread panicked"))?
                            .map_err(failed)
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })?
        };
        let mut body = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 512);
        body.extend_from_slice(b"{\"instances\":[");
        for (n, part) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(part);
        }
        body.push(b']');
        if let Some(m) = next {
            body.extend_from_slice(b",\"links\":");
            serde_json::to_writer(&mut body, &next_link(c, m)).map_err(failed)?;
        }
        body.push(b'}');
        Ok(body)
    }
    let Page { items: rows, next } = page;
    if rows.len() < PARALLEL_RENDER_MIN {
        assemble(&c, &rows, next.as_deref(), &render)
    } else {
        tokio::task::spawn_blocking(move || assemble(&c, &rows, next.as_deref(), &render))
            .await
            .map_err(failed)?
    }
}
