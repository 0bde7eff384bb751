//! Route table and handlers. Each handler decodes, calls [`ApiService`](trove_core::api::ApiService) and
//! renders; no business rule lives here.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use trove_core::api::{
    BackupQuery, BackupStrategyQuery, ConfigParamSpec, CreateBackup, CreateBackupStrategy,
    CreateConfiguration, DatastoreVersionPatch, DatastoreVersionSpec, InstanceView, MgmtAction,
    MgmtInstanceQuery, Page, PageRequest, RestoreFrom, UpdateConfiguration, UserRef,
};
use trove_core::error::Error;
use trove_core::model::{ParamType, Secret};

use super::bodies::{self, InstanceAction};
use super::extract::{uuid_or_404, Caller, JsonBody, OptJsonBody, P, Q};
use super::fault::{ApiError, ApiResult};
use super::openapi::RouteDoc;
use super::{views, AppState};

/// The router under construction plus its documentation.
pub struct Routes {
    /// Router.
    pub router: Router<AppState>,
    /// One entry per route.
    pub docs: Vec<RouteDoc>,
}

impl Routes {
    fn at<H, T>(
        mut self,
        method: &'static str,
        path: &'static str,
        op: &'static str,
        status: u16,
        h: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        self.router = self.router.route(path, on(filter, h));
        let tag = path.split('/').nth(3).unwrap_or("versions");
        let tag = if tag == "mgmt" { "mgmt" } else { tag };
        self.docs.push(RouteDoc {
            method,
            path,
            op,
            status,
            tag,
            admin: path.contains("/mgmt/"),
        });
        self
    }
}

type JsonResult = ApiResult<Response>;

fn ok(v: Value) -> JsonResult {
    Ok((StatusCode::OK, Json(v)).into_response())
}
fn with_status(status: StatusCode, v: Value) -> JsonResult {
    Ok((status, Json(v)).into_response())
}
fn accepted() -> JsonResult {
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The page a listing asks for: `limit` and `marker` as the query gives them (the core checks and applies them),
/// with the configured maximum page size.
fn page_request(s: &AppState, q: &Q) -> PageRequest {
    PageRequest::from_query(q.get("limit"), q.get("marker"), s.config.max_page_size)
}

fn list_body<T>(c: &Caller, key: &str, page: &Page<T>, row: impl Fn(&T) -> Value) -> Value {
    let mut o = Map::new();
    o.insert(key.into(), page.items.iter().map(row).collect());
    if let Some(m) = &page.next {
        o.insert("links".into(), views::next_link(c, &m));
    }
    Value::Object(o)
}

/// The version document of `GET /`.
fn version_entry(base: &str) -> Value {
    json!({
        "id": "v1.0",
        "status": "CURRENT",
        "updated": "2012-08-01T00:00:00Z",
        "links": [{ "rel": "self", "href": format!("{base}/v1.0/") }],
    })
}

fn base_of(s: &AppState, headers: &axum::http::HeaderMap) -> String {
    if let Some(b) = &s.config.public_endpoint {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn versions(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Json<Value> {
    Json(json!({ "versions": [version_entry(&base_of(&s, &headers))] }))
}

async fn version_show(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Json<Value> {
    Json(json!({ "version": version_entry(&base_of(&s, &headers)) }))
}

async fn openapi_json(State(s): State<AppState>) -> Json<Value> {
    Json((*s.openapi).clone())
}

// ---------------------------------------------------------------- instances

async fn instances_list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    instances_index(s, c, q, false).await
}

async fn instances_detail(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    instances_index(s, c, q, true).await
}

async fn instances_index(s: AppState, c: Caller, q: Q, detail: bool) -> JsonResult {
    let page = s
        .api
        .list_instances_page(&c.ctx, q.flag("include_clustered"), &page_request(&s, &q))
        .await?;
    instance_page(c, page, move |c, v| views::instance(c, v, detail)).await
}

/// Pages at least this long are rendered off the async workers, split over threads.
const PARALLEL_RENDER_MIN: usize = 200;

/// The body of an instance listing, `{"instances": [...], "links": [...]}`: byte for byte what serializing
/// [`list_body`] gives (object keys in the same sorted order, rows joined by commas), but each row is serialized
/// as soon as it is rendered, and a long page is rendered on a blocking thread split over the cores, so a
/// 1,000-row page neither holds an async worker nor builds one large JSON tree.
async fn instance_page<F>(c: Caller, page: Page<InstanceView>, render: F) -> JsonResult
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
            serde_json::to_writer(&mut body, &views::next_link(c, m)).map_err(failed)?;
        }
        body.push(b'}');
        Ok(body)
    }
    let Page { items: rows, next } = page;
    let body = if rows.len() < PARALLEL_RENDER_MIN {
        assemble(&c, &rows, next.as_deref(), &render)?
    } else {
        tokio::task::spawn_blocking(move || assemble(&c, &rows, next.as_deref(), &render))
            .await
            .map_err(failed)??
    };
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

async fn instance_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::CreateInstanceBody>,
) -> JsonResult {
    let req = b.into_request()?;
    let v = s.api.create_instance(&c.ctx, req).await?;
    ok(json!({ "instance": views::instance(&c, &v, true) }))
}

async fn instance_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let v = s.api.show_instance(&c.ctx, id).await?;
    ok(json!({ "instance": views::instance(&c, &v, true) }))
}

async fn instance_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let req = bodies::update_instance(b, false)?;
    s.api.update_instance(&c.ctx, id, req).await?;
    accepted()
}

async fn instance_patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let req = bodies::update_instance(b, true)?;
    s.api.update_instance(&c.ctx, id, req).await?;
    accepted()
}

async fn instance_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.delete_instance(&c.ctx, id).await?;
    accepted()
}

async fn instance_action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    match bodies::instance_action(b)? {
        InstanceAction::Restart => s.api.restart_instance(&c.ctx, id).await?,
        InstanceAction::ResizeFlavor(f) => s.api.resize_flavor(&c.ctx, id, &f).await?,
        InstanceAction::ResizeVolume(n) => s.api.resize_volume(&c.ctx, id, n).await?,
        InstanceAction::Promote => s.api.promote_to_replica_source(&c.ctx, id).await?,
        InstanceAction::Eject => s.api.eject_replica_source(&c.ctx, id).await?,
        InstanceAction::ResetStatus {
            force_delete: false,
        } => s.api.reset_status(&c.ctx, id).await?,
        InstanceAction::ResetStatus { force_delete: true } => {
            s.api.force_delete_instance(&c.ctx, id).await?
        }
    }
    accepted()
}

async fn instance_backups(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .instance_backups_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(list_body(&c, "backups", &page, views::backup))
}

async fn instance_configuration(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let cfg = s.api.instance_configuration(&c.ctx, id).await?;
    ok(json!({ "instance": { "configuration": cfg } }))
}

async fn instance_unsupported(c: Caller, P((_, id)): P<(String, String)>) -> JsonResult {
    let _ = (c, id);
    Err(ApiError(Error::not_implemented(
        "Modules are not supported by this deployment (no module store); instances run without them.",
    )))
}

// ---------------------------------------------------------------- databases, users, root

async fn databases_list(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .list_databases_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(list_body(
        &c,
        "databases",
        &page,
        |d| json!({ "name": d.name }),
    ))
}

async fn databases_create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::DatabasesBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .create_databases(
            &c.ctx,
            id,
            b.databases.into_iter().map(Into::into).collect(),
        )
        .await?;
    accepted()
}

async fn database_show(c: Caller, P((_, _id, _db)): P<(String, String, String)>) -> JsonResult {
    let _ = c;
    Err(ApiError(Error::not_implemented(
        "Showing a single database is not supported (upstream answers 501).",
    )))
}

async fn database_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, db)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .delete_database(&c.ctx, id, &views::percent_decode(&db))
        .await?;
    accepted()
}

fn user_ref(seg: &str) -> UserRef {
    UserRef::parse(&views::percent_decode(seg))
}

fn user_view(u: &trove_core::ports::UserInfo) -> Value {
    let dbs: Vec<Value> = u.databases.iter().map(|d| json!({ "name": d })).collect();
    json!({ "name": u.name, "host": u.host, "databases": dbs })
}

async fn users_list(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let page = s
        .api
        .list_users_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(list_body(&c, "users", &page, user_view))
}

async fn users_create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::UsersBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .create_users(&c.ctx, id, b.users.into_iter().map(Into::into).collect())
        .await?;
    accepted()
}

async fn users_change_passwords(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::UsersBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .change_passwords(&c.ctx, id, b.users.into_iter().map(Into::into).collect())
        .await?;
    accepted()
}

async fn user_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let info = s.api.show_user(&c.ctx, id, &user_ref(&u)).await?;
    ok(json!({ "user": user_view(&info) }))
}

async fn user_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::UserUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .update_user(&c.ctx, id, &user_ref(&u), b.into_update()?)
        .await?;
    accepted()
}

async fn user_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.delete_user(&c.ctx, id, &user_ref(&u)).await?;
    accepted()
}

async fn user_access_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let dbs = s.api.list_user_access(&c.ctx, id, &user_ref(&u)).await?;
    let rows: Vec<Value> = dbs.iter().map(|d| json!({ "name": d })).collect();
    ok(json!({ "databases": rows }))
}

async fn user_access_grant(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::DatabaseNamesBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let names = b.databases.into_iter().map(|d| d.name).collect();
    s.api
        .grant_user_access(&c.ctx, id, &user_ref(&u), names)
        .await?;
    accepted()
}

async fn user_access_revoke(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, u, db)): P<(String, String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api
        .revoke_user_access(&c.ctx, id, &user_ref(&u), &views::percent_decode(&db))
        .await?;
    accepted()
}

async fn root_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let enabled = s.api.root_show(&c.ctx, id).await?;
    ok(json!({ "rootEnabled": enabled }))
}

async fn root_enable(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    OptJsonBody(b): OptJsonBody<bodies::RootBody>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let pw = b.and_then(|b| b.password).map(Secret::new);
    let creds = s.api.root_enable(&c.ctx, id, pw).await?;
    ok(json!({ "user": { "name": creds.name, "password": creds.password.expose() } }))
}

async fn root_disable(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.root_disable(&c.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- datastores and flavors

async fn datastores_list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.list_datastores(&c.ctx).await?;
    let rows: Vec<Value> = all.iter().map(|d| views::datastore(&c, d)).collect();
    ok(json!({ "datastores": rows }))
}

async fn datastore_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    let d = s
        .api
        .show_datastore(&c.ctx, &views::percent_decode(&ds))
        .await?;
    ok(json!({ "datastore": views::datastore(&c, &d) }))
}

async fn datastore_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    s.api
        .delete_datastore(&c.ctx, &views::percent_decode(&ds))
        .await?;
    accepted()
}

async fn versions_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds)): P<(String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_datastore_versions(&c.ctx, &views::percent_decode(&ds))
        .await?;
    let rows: Vec<Value> = all.iter().map(|v| views::version(&c, &v.version)).collect();
    ok(json!({ "versions": rows }))
}

async fn version_show_in(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let v = s
        .api
        .show_datastore_version(
            &c.ctx,
            &views::percent_decode(&ds),
            &views::percent_decode(&v),
        )
        .await?;
    ok(json!({ "version": views::version(&c, &v.version) }))
}

async fn version_show_by_id(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let v = s.api.show_datastore_version_by_id(&c.ctx, id).await?;
    ok(json!({ "version": views::version(&c, &v.version) }))
}

async fn version_flavors(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_version_flavors(
            &c.ctx,
            &views::percent_decode(&ds),
            &views::percent_decode(&v),
        )
        .await?;
    let rows: Vec<Value> = all.iter().map(|f| views::flavor(&c, f)).collect();
    ok(json!({ "flavors": rows }))
}

async fn version_volume_types(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let all = s
        .api
        .list_version_volume_types(
            &c.ctx,
            &views::percent_decode(&ds),
            &views::percent_decode(&v),
        )
        .await?;
    let rows: Vec<Value> = all.iter().map(|t| json!({ "id": t, "name": t })).collect();
    ok(json!({ "volume_types": rows }))
}

async fn flavors_list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.list_flavors(&c.ctx).await?;
    let rows: Vec<Value> = all.iter().map(|f| views::flavor(&c, f)).collect();
    ok(json!({ "flavors": rows }))
}

async fn flavor_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let f = s
        .api
        .show_flavor(&c.ctx, &views::percent_decode(&id))
        .await?;
    ok(json!({ "flavor": views::flavor(&c, &f) }))
}

// ---------------------------------------------------------------- configuration parameters

fn params_body(ps: &[trove_core::model::ConfigParam]) -> Value {
    json!({ "configuration-parameters": ps.iter().map(views::parameter).collect::<Vec<_>>() })
}

async fn params_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v)): P<(String, String, String)>,
) -> JsonResult {
    let ps = s
        .api
        .list_parameters(
            &c.ctx,
            &views::percent_decode(&ds),
            &views::percent_decode(&v),
        )
        .await?;
    ok(params_body(&ps))
}

async fn param_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, ds, v, name)): P<(String, String, String, String)>,
) -> JsonResult {
    let p = s
        .api
        .show_parameter(
            &c.ctx,
            &views::percent_decode(&ds),
            &views::percent_decode(&v),
            &views::percent_decode(&name),
        )
        .await?;
    ok(views::parameter(&p))
}

async fn params_list_by_version(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let ps = s.api.list_parameters_by_version(&c.ctx, id).await?;
    ok(params_body(&ps))
}

async fn param_show_by_version(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .show_parameter_by_version(&c.ctx, id, &views::percent_decode(&name))
        .await?;
    ok(views::parameter(&p))
}

// ---------------------------------------------------------------- configurations

async fn configurations_list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let page = s
        .api
        .list_configurations_page(&c.ctx, &page_request(&s, &q))
        .await?;
    ok(list_body(&c, "configurations", &page, |v| {
        views::configuration(v, false)
    }))
}

async fn configuration_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::ConfigurationCreateBody>,
) -> JsonResult {
    let (datastore, datastore_version, datastore_version_number) = b.configuration.datastore();
    let req = CreateConfiguration {
        name: b.configuration.name,
        description: b.configuration.description,
        values: b.configuration.values,
        datastore,
        datastore_version,
        datastore_version_number,
    };
    let v = s.api.create_configuration(&c.ctx, req).await?;
    ok(json!({ "configuration": views::configuration(&v, true) }))
}

async fn configuration_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    let v = s.api.show_configuration(&c.ctx, id).await?;
    ok(json!({ "configuration": views::configuration(&v, true) }))
}

async fn configuration_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ConfigurationUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    let f = b.configuration;
    s.api
        .update_configuration(
            &c.ctx,
            id,
            UpdateConfiguration {
                name: f.name,
                description: f.description,
                values: f.values,
            },
        )
        .await?;
    accepted()
}

async fn configuration_patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ConfigurationUpdateBody>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    if b.configuration.name.is_some() || b.configuration.description.is_some() {
        return Err(ApiError(Error::validation(
            "configuration: PATCH accepts only 'values'",
        )));
    }
    s.api
        .patch_configuration(&c.ctx, id, b.configuration.values)
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn configuration_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    s.api.delete_configuration(&c.ctx, id).await?;
    accepted()
}

async fn configuration_instances(
    State(s): State<AppState>,
    c: Caller,
    q: Q,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Configuration", &id)?;
    let page = s
        .api
        .configuration_instances_page(&c.ctx, id, &page_request(&s, &q))
        .await?;
    ok(list_body(
        &c,
        "instances",
        &page,
        |(i, n)| json!({ "id": i, "name": n }),
    ))
}

// ---------------------------------------------------------------- backups

async fn backups_list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let query = BackupQuery {
        datastore: q.get("datastore").map(str::to_string),
        instance_id: q
            .get("instance_id")
            .map(|i| uuid_or_404("Instance", i))
            .transpose()?,
        project_id: q.get("project_id").map(str::to_string),
        all_projects: q.flag("all_projects"),
    };
    let page = s
        .api
        .list_backups_page(&c.ctx, query, &page_request(&s, &q))
        .await?;
    ok(list_body(&c, "backups", &page, views::backup))
}

async fn backup_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::BackupBody>,
) -> JsonResult {
    let f = b.backup;
    f.check()?;
    let restore_from = match &f.restore_from {
        None => None,
        Some(m) => Some(
            serde_json::from_value::<RestoreFrom>(Value::Object(m.clone()))
                .map_err(|e| ApiError(Error::validation(format!("backup.restore_from: {e}"))))?,
        ),
    };
    let req = CreateBackup {
        instance: f.instance_id()?,
        parent_id: f.parent()?,
        incremental: f.is_incremental()?,
        name: f.name,
        description: f.description,
        restore_from,
        container: f.swift_container,
    };
    let v = s.api.create_backup(&c.ctx, req).await?;
    with_status(StatusCode::ACCEPTED, json!({ "backup": views::backup(&v) }))
}

async fn backup_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Backup", &id)?;
    let v = s.api.show_backup(&c.ctx, id).await?;
    ok(json!({ "backup": views::backup(&v) }))
}

async fn backup_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Backup", &id)?;
    s.api.delete_backup(&c.ctx, id).await?;
    accepted()
}

async fn backup_strategy_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::BackupStrategyBody>,
) -> JsonResult {
    let f = b.backup_strategy;
    let instance_id = match f.instance_id.as_deref() {
        None | Some("") => None,
        Some(i) => Some(uuid_or_404("Instance", i)?),
    };
    let req = CreateBackupStrategy {
        instance_id,
        container: f.swift_container,
    };
    let st = s.api.create_backup_strategy(&c.ctx, req).await?;
    with_status(
        StatusCode::ACCEPTED,
        json!({ "backup_strategy": views::backup_strategy(&st) }),
    )
}

/// `?instance_id` (empty: the tenant-wide strategy) and `?project_id` of the strategy routes.
fn backup_strategy_query(q: &Q) -> Result<BackupStrategyQuery, ApiError> {
    Ok(BackupStrategyQuery {
        instance_id: match q.get("instance_id") {
            None | Some("") => None,
            Some(i) => Some(uuid_or_404("Instance", i)?),
        },
        project_id: q.get("project_id").map(str::to_string),
    })
}

async fn backup_strategies_list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let all = s
        .api
        .list_backup_strategies(&c.ctx, backup_strategy_query(&q)?)
        .await?;
    let views: Vec<Value> = all.iter().map(views::backup_strategy).collect();
    ok(json!({ "backup_strategies": views }))
}

async fn backup_strategy_delete(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    s.api
        .delete_backup_strategy(&c.ctx, backup_strategy_query(&q)?)
        .await?;
    accepted()
}

// ---------------------------------------------------------------- limits and quotas

async fn limits(State(s): State<AppState>, c: Caller) -> JsonResult {
    let q = s.api.limits(&c.ctx).await?;
    let mut rows = vec![views::absolute_limits(&q)];
    match &s.limiter {
        Some(l) => rows.extend(l.limits_view(&c.tenant)),
        None => rows.extend(super::ratelimit::unlimited_view()),
    }
    ok(json!({ "limits": rows }))
}

async fn quota_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, project)): P<(String, String)>,
) -> JsonResult {
    let q = s
        .api
        .show_quota(&c.ctx, &views::percent_decode(&project))
        .await?;
    ok(views::quotas(&q))
}

async fn quota_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, project)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::QuotasBody>,
) -> JsonResult {
    let mut limits = BTreeMap::new();
    for (k, v) in b.quotas {
        let n = v
            .as_i64()
            .ok_or_else(|| ApiError(Error::validation(format!("quotas.{k} is not an integer"))))?;
        limits.insert(k, n);
    }
    let l = s
        .api
        .update_quota(&c.ctx, &views::percent_decode(&project), limits)
        .await?;
    ok(
        json!({ "quotas": { "instances": l.instances, "ram": l.ram, "volumes": l.volumes, "backups": l.backups } }),
    )
}

// ---------------------------------------------------------------- mgmt: datastore versions and parameters

async fn mgmt_versions_list(State(s): State<AppState>, c: Caller) -> JsonResult {
    let all = s.api.mgmt_list_datastore_versions(&c.ctx).await?;
    let rows: Vec<Value> = all
        .iter()
        .map(|v| views::mgmt_version(&v.version, &v.datastore.name, v.is_default))
        .collect();
    ok(json!({ "versions": rows }))
}

async fn mgmt_version_create(
    State(s): State<AppState>,
    c: Caller,
    JsonBody(b): JsonBody<bodies::VersionCreateBody>,
) -> JsonResult {
    let f = b.version;
    if f.image_tags.len() > 5 {
        return Err(ApiError(Error::validation(
            "version.image_tags: at most 5 tags",
        )));
    }
    let spec = DatastoreVersionSpec {
        datastore_name: f.datastore_name,
        name: f.name,
        manager: f.datastore_manager,
        image: f.image.unwrap_or_default(),
        packages: f.packages.join(","),
        active: f.active,
        version: f.version,
        default: f.default,
    };
    let v = s.api.mgmt_create_datastore_version(&c.ctx, spec).await?;
    with_status(
        StatusCode::ACCEPTED,
        json!({ "version": views::mgmt_version(&v.version, &v.datastore.name, v.is_default) }),
    )
}

async fn mgmt_version_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let v = s.api.mgmt_show_datastore_version(&c.ctx, id).await?;
    ok(json!({ "version": views::mgmt_version(&v.version, &v.datastore.name, v.is_default) }))
}

async fn mgmt_version_patch(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::VersionPatchBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let patch = DatastoreVersionPatch {
        manager: b.datastore_manager,
        packages: b.packages.map(|p| p.join(",")),
        image: b.image,
        active: b.active,
        default: b.default,
        name: b.name,
    };
    s.api
        .mgmt_update_datastore_version(&c.ctx, id, patch)
        .await?;
    accepted()
}

async fn mgmt_version_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    s.api.mgmt_delete_datastore_version(&c.ctx, id).await?;
    accepted()
}

fn param_spec(f: bodies::ParameterFields) -> Result<ConfigParamSpec, ApiError> {
    let data_type: ParamType = serde_json::from_value(Value::String(f.data_type.clone())).map_err(|_| {
        ApiError(Error::validation(format!(
            "configuration-parameter.data_type '{}' is not one of integer, string, boolean, float, list",
            f.data_type.escape_default()
        )))
    })?;
    Ok(ConfigParamSpec {
        restart_required: f.restart_required()?,
        name: f.name,
        data_type,
        min: f.min,
        max: f.max,
    })
}

async fn mgmt_params_list(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let ps = s.api.mgmt_list_parameters(&c.ctx, id).await?;
    ok(params_body(&ps))
}

async fn mgmt_param_create(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<bodies::ParameterBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_create_parameter(&c.ctx, id, param_spec(b.parameter)?)
        .await?;
    ok(params_body(std::slice::from_ref(&p)))
}

async fn mgmt_param_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_show_parameter(&c.ctx, id, &views::percent_decode(&name))
        .await?;
    ok(views::parameter(&p))
}

async fn mgmt_param_update(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
    JsonBody(b): JsonBody<bodies::ParameterBody>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    let p = s
        .api
        .mgmt_update_parameter(
            &c.ctx,
            id,
            &views::percent_decode(&name),
            param_spec(b.parameter)?,
        )
        .await?;
    // Upstream answers the raw row here (with `min_size`/`max_size` and the soft-delete columns).
    let mut v = views::parameter(&p);
    v["min_size"] = v.get("min").cloned().unwrap_or(Value::Null);
    v["max_size"] = v.get("max").cloned().unwrap_or(Value::Null);
    v["deleted"] = json!(0);
    v["deleted_at"] = Value::Null;
    ok(v)
}

async fn mgmt_param_delete(
    State(s): State<AppState>,
    c: Caller,
    P((_, id, name)): P<(String, String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Datastore version", &id)?;
    s.api
        .mgmt_delete_parameter(&c.ctx, id, &views::percent_decode(&name))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------- mgmt: instances

async fn mgmt_instances_list(State(s): State<AppState>, c: Caller, q: Q) -> JsonResult {
    let query = MgmtInstanceQuery {
        deleted: q.flag("deleted"),
        include_clustered: q.flag("include_clustered"),
        project_id: q.get("project_id").map(str::to_string),
    };
    // The core checks the admin role before the page: a non-admin caller gets 403 whatever the `limit`.
    let page = s
        .api
        .mgmt_list_instances_page(&c.ctx, query, &page_request(&s, &q))
        .await?;
    instance_page(c, page, views::mgmt_instance).await
}

async fn mgmt_instance_show(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let v = s.api.mgmt_show_instance(&c.ctx, id).await?;
    ok(json!({ "instance": views::mgmt_instance(&c, &v) }))
}

async fn mgmt_instance_action(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
    JsonBody(b): JsonBody<Map<String, Value>>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    let action = match bodies::mgmt_action(b)? {
        bodies::MgmtAction::Stop => MgmtAction::Stop,
        bodies::MgmtAction::Reboot => MgmtAction::Reboot,
        bodies::MgmtAction::ResetTaskStatus => MgmtAction::ResetTaskStatus,
        bodies::MgmtAction::Migrate(host) => MgmtAction::Migrate { host },
        bodies::MgmtAction::Rebuild(image_id) => MgmtAction::Rebuild { image_id },
    };
    s.api.mgmt_instance_action(&c.ctx, id, action).await?;
    accepted()
}

async fn mgmt_root_history(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    match s.api.mgmt_root_history(&c.ctx, id).await? {
        Some(h) => ok(
            json!({ "root_history": { "id": h.instance_id, "enabled": views::ts(&h.created), "user": h.user } }),
        ),
        None => ok(json!({ "root_history": { "id": id, "enabled": "Never", "user": "Nobody" } })),
    }
}

async fn mgmt_rpc_ping(
    State(s): State<AppState>,
    c: Caller,
    P((_, id)): P<(String, String)>,
) -> JsonResult {
    let id = uuid_or_404("Instance", &id)?;
    s.api.mgmt_rpc_ping(&c.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The complete route table.
pub fn routes() -> Routes {
    const T: &str = "/v1.0/{tenant_id}";
    let _ = T;
    Routes {
        router: Router::new(),
        docs: Vec::new(),
    }
    .at("GET", "/", "listVersions", 200, versions)
    .at("GET", "/v1.0", "showVersion", 200, version_show)
    .at("GET", "/v1.0/", "showVersionSlash", 200, version_show)
    .at("GET", "/openapi.json", "openapi", 200, openapi_json)
    // instances
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances",
        "listInstances",
        200,
        instances_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances",
        "createInstance",
        200,
        instance_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/detail",
        "listInstancesDetail",
        200,
        instances_detail,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "showInstance",
        200,
        instance_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "updateInstance",
        202,
        instance_update,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "patchInstance",
        202,
        instance_patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "deleteInstance",
        202,
        instance_delete,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/action",
        "instanceAction",
        202,
        instance_action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/backups",
        "listInstanceBackups",
        200,
        instance_backups,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/configuration",
        "showInstanceConfiguration",
        200,
        instance_configuration,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/log",
        "listInstanceLogs",
        200,
        super::logs::instance_logs_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/log",
        "instanceLogAction",
        200,
        super::logs::instance_log_action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/ssl",
        "showInstanceSsl",
        200,
        super::ssl::ssl_show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/ssl",
        "instanceSslAction",
        200,
        super::ssl::ssl_action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/modules",
        "listInstanceModules",
        200,
        instance_unsupported,
    )
    // databases, users, root
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases",
        "listDatabases",
        200,
        databases_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases",
        "createDatabases",
        202,
        databases_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases/{database}",
        "showDatabase",
        501,
        database_show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases/{database}",
        "deleteDatabase",
        202,
        database_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "listUsers",
        200,
        users_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "createUsers",
        202,
        users_create,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "changePasswords",
        202,
        users_change_passwords,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "showUser",
        200,
        user_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "updateUser",
        202,
        user_update,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "deleteUser",
        202,
        user_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases",
        "listUserAccess",
        200,
        user_access_list,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases",
        "grantUserAccess",
        202,
        user_access_grant,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases/{database}",
        "revokeUserAccess",
        202,
        user_access_revoke,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "showRoot",
        200,
        root_show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "enableRoot",
        200,
        root_enable,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "disableRoot",
        204,
        root_disable,
    )
    // datastores, versions, flavors, parameters
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores",
        "listDatastores",
        200,
        datastores_list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}",
        "showDatastore",
        200,
        datastore_show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/datastores/{datastore}",
        "deleteDatastore",
        202,
        datastore_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions",
        "listDatastoreVersions",
        200,
        versions_list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}",
        "showDatastoreVersion",
        200,
        version_show_in,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}",
        "showDatastoreVersionById",
        200,
        version_show_by_id,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/flavors",
        "listVersionFlavors",
        200,
        version_flavors,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/volume-types",
        "listVersionVolumeTypes",
        200,
        version_volume_types,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters",
        "listParameters",
        200,
        params_list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters/{name}",
        "showParameter",
        200,
        param_show,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters",
        "listParametersByVersion",
        200,
        params_list_by_version,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters/{name}",
        "showParameterByVersion",
        200,
        param_show_by_version,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/flavors",
        "listFlavors",
        200,
        flavors_list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/flavors/{flavor_id}",
        "showFlavor",
        200,
        flavor_show,
    )
    // configurations
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations",
        "listConfigurations",
        200,
        configurations_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/configurations",
        "createConfiguration",
        200,
        configuration_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "showConfiguration",
        200,
        configuration_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "updateConfiguration",
        202,
        configuration_update,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "patchConfiguration",
        200,
        configuration_patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "deleteConfiguration",
        202,
        configuration_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations/{configuration_id}/instances",
        "listConfigurationInstances",
        200,
        configuration_instances,
    )
    // backups
    .at(
        "GET",
        "/v1.0/{tenant_id}/backups",
        "listBackups",
        200,
        backups_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/backups",
        "createBackup",
        202,
        backup_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/backups/{backup_id}",
        "showBackup",
        200,
        backup_show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/backups/{backup_id}",
        "deleteBackup",
        202,
        backup_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/backup_strategies",
        "listBackupStrategies",
        200,
        backup_strategies_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/backup_strategies",
        "createBackupStrategy",
        202,
        backup_strategy_create,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/backup_strategies",
        "deleteBackupStrategy",
        202,
        backup_strategy_delete,
    )
    // limits, quotas
    .at("GET", "/v1.0/{tenant_id}/limits", "listLimits", 200, limits)
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/quotas/{project_id}",
        "showQuota",
        200,
        quota_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/mgmt/quotas/{project_id}",
        "updateQuota",
        200,
        quota_update,
    )
    // mgmt
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastore-versions",
        "mgmtListDatastoreVersions",
        200,
        mgmt_versions_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/datastore-versions",
        "mgmtCreateDatastoreVersion",
        202,
        mgmt_version_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtShowDatastoreVersion",
        200,
        mgmt_version_show,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtPatchDatastoreVersion",
        202,
        mgmt_version_patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtDeleteDatastoreVersion",
        202,
        mgmt_version_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters",
        "mgmtListParameters",
        200,
        mgmt_params_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters",
        "mgmtCreateParameter",
        200,
        mgmt_param_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtShowParameter",
        200,
        mgmt_param_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtUpdateParameter",
        200,
        mgmt_param_update,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtDeleteParameter",
        204,
        mgmt_param_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances",
        "mgmtListInstances",
        200,
        mgmt_instances_list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}",
        "mgmtShowInstance",
        200,
        mgmt_instance_show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/action",
        "mgmtInstanceAction",
        202,
        mgmt_instance_action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/root",
        "mgmtRootHistory",
        200,
        mgmt_root_history,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/rpc_ping",
        "mgmtRpcPing",
        204,
        mgmt_rpc_ping,
    )
}
