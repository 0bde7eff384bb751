//! Route table and handlers, one module per resource. Each handler extracts (path, query, body), calls
//! [`ApiService`](trove_core::api::ApiService) and renders the answer with a view function; no business rule,
//! paging rule or JSON shape lives here.

mod actions;
mod backup_strategies;
mod backups;
mod clusters;
mod configurations;
mod databases;
mod datastores;
mod flavors;
mod guest_logs;
mod instances;
mod mgmt;
mod parameters;
mod quotas;
mod root;
mod ssl;
mod users;
mod versions;

use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde_json::Value;
use trove_core::api::PageRequest;

use super::extract::Q;
use super::fault::ApiResult;
use super::openapi::RouteDoc;
use super::AppState;

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

/// 200 with a JSON body.
fn ok(v: Value) -> JsonResult {
    Ok((StatusCode::OK, Json(v)).into_response())
}

/// `status` with a JSON body.
fn with_status(status: StatusCode, v: Value) -> JsonResult {
    Ok((status, Json(v)).into_response())
}

/// 200 with an already serialized JSON body.
fn ok_bytes(body: Vec<u8>) -> JsonResult {
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

/// 200 with a rendered JSON body shared with other answers.
fn ok_shared(body: axum::body::Bytes) -> JsonResult {
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

/// 202 without a body.
fn accepted() -> JsonResult {
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `status` without a body (200 and 204 answers).
fn empty(status: StatusCode) -> JsonResult {
    Ok(status.into_response())
}

/// The page a listing asks for: `limit` and `marker` as the query gives them (the core checks and applies them),
/// with the configured maximum page size.
fn page_request(s: &AppState, q: &Q) -> PageRequest {
    PageRequest::from_query(q.get("limit"), q.get("marker"), s.config.max_page_size)
}

/// The complete route table.
pub fn routes() -> Routes {
    Routes {
        router: Router::new(),
        docs: Vec::new(),
    }
    .at("GET", "/", "listVersions", 200, versions::list)
    .at("GET", "/v1.0", "showVersion", 200, versions::show)
    .at("GET", "/v1.0/", "showVersionSlash", 200, versions::show)
    .at("GET", "/openapi.json", "openapi", 200, versions::openapi)
    // instances
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances",
        "listInstances",
        200,
        instances::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances",
        "createInstance",
        200,
        instances::create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/detail",
        "listInstancesDetail",
        200,
        instances::detail,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "showInstance",
        200,
        instances::show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "updateInstance",
        202,
        instances::update,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "patchInstance",
        202,
        instances::patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}",
        "deleteInstance",
        202,
        instances::delete,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/action",
        "instanceAction",
        202,
        actions::action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/backups",
        "listInstanceBackups",
        200,
        backups::of_instance,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/events",
        "listInstanceEvents",
        200,
        instances::events,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/backup_schedules",
        "listBackupSchedules",
        200,
        backups::schedules,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/backup_schedules",
        "createBackupSchedule",
        202,
        backups::create_schedule,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/backup_schedules/{schedule_id}",
        "deleteBackupSchedule",
        202,
        backups::delete_schedule,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/configuration",
        "showInstanceConfiguration",
        200,
        instances::configuration,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/log",
        "listInstanceLogs",
        200,
        guest_logs::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/log",
        "instanceLogAction",
        200,
        guest_logs::action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/ssl",
        "showInstanceSsl",
        200,
        ssl::show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/ssl",
        "instanceSslAction",
        200,
        ssl::action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/modules",
        "listInstanceModules",
        200,
        instances::modules,
    )
    // databases, users, root
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases",
        "listDatabases",
        200,
        databases::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases",
        "createDatabases",
        202,
        databases::create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases/{database}",
        "showDatabase",
        501,
        databases::show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/databases/{database}",
        "deleteDatabase",
        202,
        databases::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "listUsers",
        200,
        users::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "createUsers",
        202,
        users::create,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users",
        "changePasswords",
        202,
        users::change_passwords,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "showUser",
        200,
        users::show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "updateUser",
        202,
        users::update,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}",
        "deleteUser",
        202,
        users::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases",
        "listUserAccess",
        200,
        users::access_list,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases",
        "grantUserAccess",
        202,
        users::access_grant,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/users/{user}/databases/{database}",
        "revokeUserAccess",
        202,
        users::access_revoke,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "showRoot",
        200,
        root::show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "enableRoot",
        200,
        root::enable,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/instances/{instance_id}/root",
        "disableRoot",
        204,
        root::disable,
    )
    // datastores, versions, flavors, parameters
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores",
        "listDatastores",
        200,
        datastores::list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}",
        "showDatastore",
        200,
        datastores::show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/datastores/{datastore}",
        "deleteDatastore",
        202,
        datastores::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions",
        "listDatastoreVersions",
        200,
        datastores::versions,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}",
        "showDatastoreVersion",
        200,
        datastores::version_show,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}",
        "showDatastoreVersionById",
        200,
        datastores::version_by_id,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/flavors",
        "listVersionFlavors",
        200,
        datastores::version_flavors,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/volume-types",
        "listVersionVolumeTypes",
        200,
        datastores::version_volume_types,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters",
        "listParameters",
        200,
        parameters::list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/parameters/{name}",
        "showParameter",
        200,
        parameters::show,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters",
        "listParametersByVersion",
        200,
        parameters::list_by_version,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/datastores/versions/{version_id}/parameters/{name}",
        "showParameterByVersion",
        200,
        parameters::show_by_version,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/flavors",
        "listFlavors",
        200,
        flavors::list,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/flavors/{flavor_id}",
        "showFlavor",
        200,
        flavors::show,
    )
    // configurations
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations",
        "listConfigurations",
        200,
        configurations::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/configurations",
        "createConfiguration",
        200,
        configurations::create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "showConfiguration",
        200,
        configurations::show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "updateConfiguration",
        202,
        configurations::update,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "patchConfiguration",
        200,
        configurations::patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/configurations/{configuration_id}",
        "deleteConfiguration",
        202,
        configurations::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/configurations/{configuration_id}/instances",
        "listConfigurationInstances",
        200,
        configurations::instances,
    )
    // clusters
    .at(
        "GET",
        "/v1.0/{tenant_id}/clusters",
        "listClusters",
        200,
        clusters::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/clusters",
        "createCluster",
        200,
        clusters::create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/clusters/{cluster_id}",
        "showCluster",
        200,
        clusters::show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/clusters/{cluster_id}",
        "clusterAction",
        202,
        clusters::action,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/clusters/{cluster_id}",
        "deleteCluster",
        202,
        clusters::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/instances/{instance_id}",
        "showClusterInstance",
        200,
        clusters::show_instance,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/root",
        "showClusterRoot",
        200,
        root::cluster_show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/root",
        "enableClusterRoot",
        200,
        root::cluster_enable,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/scaling_policy",
        "setClusterScalingPolicy",
        200,
        clusters::set_scaling_policy,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/scaling_policy",
        "deleteClusterScalingPolicy",
        202,
        clusters::delete_scaling_policy,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/clusters/{cluster_id}/events",
        "listClusterEvents",
        200,
        clusters::events,
    )
    // backups
    .at(
        "GET",
        "/v1.0/{tenant_id}/backups",
        "listBackups",
        200,
        backups::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/backups",
        "createBackup",
        202,
        backups::create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/backups/{backup_id}",
        "showBackup",
        200,
        backups::show,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/backups/{backup_id}",
        "deleteBackup",
        202,
        backups::delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/backup_strategies",
        "listBackupStrategies",
        200,
        backup_strategies::list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/backup_strategies",
        "createBackupStrategy",
        202,
        backup_strategies::create,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/backup_strategies",
        "deleteBackupStrategy",
        202,
        backup_strategies::delete,
    )
    // limits, quotas
    .at(
        "GET",
        "/v1.0/{tenant_id}/limits",
        "listLimits",
        200,
        quotas::limits,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/quotas/{project_id}",
        "showQuota",
        200,
        quotas::show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/mgmt/quotas/{project_id}",
        "updateQuota",
        200,
        quotas::update,
    )
    // mgmt
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastore-versions",
        "mgmtListDatastoreVersions",
        200,
        datastores::mgmt_versions,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/datastore-versions",
        "mgmtCreateDatastoreVersion",
        202,
        datastores::mgmt_version_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtShowDatastoreVersion",
        200,
        datastores::mgmt_version_show,
    )
    .at(
        "PATCH",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtPatchDatastoreVersion",
        202,
        datastores::mgmt_version_patch,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/mgmt/datastore-versions/{version_id}",
        "mgmtDeleteDatastoreVersion",
        202,
        datastores::mgmt_version_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters",
        "mgmtListParameters",
        200,
        parameters::mgmt_list,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters",
        "mgmtCreateParameter",
        200,
        parameters::mgmt_create,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtShowParameter",
        200,
        parameters::mgmt_show,
    )
    .at(
        "PUT",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtUpdateParameter",
        200,
        parameters::mgmt_update,
    )
    .at(
        "DELETE",
        "/v1.0/{tenant_id}/mgmt/datastores/versions/{version_id}/parameters/{name}",
        "mgmtDeleteParameter",
        204,
        parameters::mgmt_delete,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances",
        "mgmtListInstances",
        200,
        mgmt::instances,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}",
        "mgmtShowInstance",
        200,
        mgmt::instance_show,
    )
    .at(
        "POST",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/action",
        "mgmtInstanceAction",
        202,
        mgmt::instance_action,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/root",
        "mgmtRootHistory",
        200,
        root::mgmt_history,
    )
    .at(
        "GET",
        "/v1.0/{tenant_id}/mgmt/instances/{instance_id}/rpc_ping",
        "mgmtRpcPing",
        204,
        mgmt::rpc_ping,
    )
}
