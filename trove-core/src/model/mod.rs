//! Domain records of the control plane. Plain data: no I/O, no behaviour beyond validation.

mod backup;
mod cluster;
mod config;
pub mod cron;
mod datastore;
mod event;
mod guest_log;
mod instance;
mod quota;
mod secret;
mod specs;
mod ssl;
mod workflow;

pub use backup::{
    restore_window, Backup, BackupFilter, BackupSchedule, BackupStrategy, BackupStrategyFilter,
    BackupType, ScheduleTimes,
};
pub use cluster::{
    assign_replicas, min_members, Cluster, ClusterTask, LoadMetrics, ScalingMetric, ScalingPolicy,
};
pub use config::{ConfigParam, Configuration, ParamType};
pub use datastore::{Datastore, DatastoreVersion, Facet, FacetSet, Flavor, Manager};
pub use event::{Event, EventFilter};
pub use guest_log::{
    exposed_log_type, exposed_logs, log_metafile, log_prefix, log_status, GuestLog, LogAction,
    LogActionRequest, LogState, LogStatus, LogType, LogView, DEFAULT_LOG_CONTAINER,
};
pub use instance::{
    Access, Address, Instance, InstanceFault, InstanceFilter, Locality, RootHistory,
    ServiceStatusRecord, VolumeUsage,
};
pub use quota::{QuotaLimits, QuotaUsage, Resource};
pub use secret::Secret;
pub use specs::{
    validate_database_name, validate_host, validate_instance_name, validate_password,
    validate_user_name, DatabaseSpec, UserSpec, UserUpdate,
};
pub use ssl::{
    validate_file_ref, SslActionBody, SslCertificate, SslChange, SslChangeResult, SslMode,
    SslRequest, SslStatus, SslView,
};
pub use workflow::{
    JournalEntry, JournalPhase, Workflow, WorkflowKind, WorkflowParams, WorkflowState,
};
