//! The admin API's JSON, in one place: every request body and answer that
//! crosses it. The handlers (`admin/api.rs`) serve these types, the typed
//! client (`client.rs`) sends and reads them for the CLI and `ebb load
//! --ebb`, and their `ToSchema` derives are the OpenAPI document's shapes,
//! so the three cannot drift apart. Where a component keeps an older name
//! in the document (`ServiceView`, `ScaleResult`, ...), `#[schema(as)]`
//! says so: clients generated from it keep working.

mod answers;
mod certs;
mod forecast;
mod plan;
mod requests;
mod status;

pub use answers::{DashboardLogin, ErrorBody, EventView, ReplicaOutcome, ScaleOutcome, ShutdownView};
pub use certs::{CertView, ReloadOutcome, ReloadRequest, RenewOutcome, RenewRequest};
pub use forecast::{ForecastPolicy, ForecastSkill, ForecastView};
pub use plan::{ApplyAnswer, ConfigFileRequest, PlanAnswer, PlanChange};
pub use requests::{
    DeployRequest, InterruptRequest, ProtectRequest, ReasonRequest, SetDesiredRequest, ShutdownRequest,
};
pub use status::{
    CertificateStatus, ClusterStatus, DeployStatus, FleetStatus, HostStatus, ListenerStatus, NodeStatus, ReplicaState,
    ReplicaStatus, RouteStatus, SaturationStatus, ServiceReplica, ServiceStatus, ShadowStatus,
};
