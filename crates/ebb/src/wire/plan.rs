//! `ebb plan` and `ebb apply`: the file sent, the plan's lines, and what
//! applying did.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/plan` and `POST /api/v1/apply`: a config file's text and
/// where it is (relative paths in it, such as certificate files, are
/// resolved against its directory; messages name it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFileRequest {
    /// The file's path, as messages should name it.
    #[schema(example = "/etc/ebb/ebb.toml", min_length = 1, max_length = 4096)]
    pub path: String,
    /// The whole file (at most 4 MiB).
    #[schema(example = "[service.web]\ncommand = \"{ebb} demo-app\"\nlisten = \"127.0.0.1:8080\"\n")]
    pub text: String,
}

/// One change a plan holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanChange {
    /// `+` added, `~` changed, `-` removed.
    #[schema(example = "~")]
    pub op: String,
    /// `service`, `listener` or `ebb`.
    #[schema(example = "service")]
    pub kind: String,
    /// The service's or listener's name (`ebb` for ebb's own settings).
    #[schema(example = "web")]
    pub name: String,
    /// The key inside it, or what changed in words; none for a whole
    /// service or listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "health.interval")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "\"10s\"")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "\"5s\"")]
    pub to: Option<String>,
    /// `in_place`, `new_replicas`, `rolling_deploy`, `start_service`,
    /// `drain_service`, `open_listener`, `close_listener` or `refused`.
    #[schema(example = "in_place")]
    pub effect: String,
    /// The line `ebb plan` prints.
    #[schema(example = "~ web: health.interval \"10s\" -> \"5s\" (applied in place)")]
    pub text: String,
}

/// `POST /api/v1/plan`: what applying the file would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanAnswer {
    /// The file planned against the running config, as the running ebb
    /// has it applied (the file it started with, or the last applied).
    pub applied_from: String,
    pub changes: Vec<PlanChange>,
    /// Some change cannot be applied to a running ebb: applying is refused.
    pub refused: bool,
}

/// `POST /api/v1/apply`: the plan that was applied and each step done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyAnswer {
    pub changes: Vec<PlanChange>,
    /// What was done, in order (services started, reconfigured, deploys
    /// started, routes switched, services draining).
    pub steps: Vec<String>,
    /// Services whose deploy this apply started (follow them in the status).
    pub deploying: Vec<String>,
    /// Services removed: they drain and stop in the background.
    pub draining: Vec<String>,
}
