//! The OpenAPI document of the admin API, generated from the handlers'
//! `#[utoipa::path]` attributes and the shapes' `ToSchema` derives, served
//! at `/api/v1/openapi.json`. Nothing is downloaded at build or run time (no
//! swagger-ui): point any OpenAPI viewer at the JSON.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;
use super::ErrorBody;
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ebb admin API",
        description = "Control and observe an ebb fleet: services, replicas, the event log and metric history.\n\n\
            Every mutating call needs `Authorization: Bearer <token>`, the token being in `<state_dir>/admin.token`. \
            Reads need it too when the admin listener is not loopback-only. Errors are `{\"error\": ..., \"status\": ...}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        api::status,
        api::list_services,
        api::get_service,
        api::get_forecast,
        api::set_desired,
        api::deploy,
        api::rollback,
        api::list_replicas,
        api::get_replica,
        api::protect,
        api::interrupt,
        api::list_events,
        api::metrics,
        api::list_certs,
        api::renew_certs,
        api::reload_certs,
        api::plan_config,
        api::apply_config,
        api::shutdown,
        api::dashboard_login,
        api::openapi_json,
    ),
    components(schemas(
        ErrorBody,
        wire::FleetStatus,
        wire::ServiceStatus,
        wire::ServiceReplica,
        wire::ReplicaStatus,
        wire::ReplicaState,
        wire::SetDesiredRequest,
        wire::ScaleOutcome,
        wire::DeployRequest,
        wire::ReasonRequest,
        wire::ProtectRequest,
        wire::InterruptRequest,
        wire::ReplicaOutcome,
        wire::EventView,
        crate::metrics::history::ServicePoint,
        crate::metrics::history::PointTraffic,
        wire::ShutdownView,
        wire::ShutdownRequest,
        wire::DashboardLogin,
        wire::ConfigFileRequest,
        wire::PlanAnswer,
        wire::ApplyAnswer,
        wire::PlanChange,
        wire::DeployStatus,
        wire::SaturationStatus,
        wire::ShadowStatus,
        wire::HostStatus,
        wire::ListenerStatus,
        wire::ClusterStatus,
        wire::NodeStatus,
        wire::CertificateStatus,
        wire::RouteStatus,
        wire::CertView,
        wire::ForecastView,
        wire::ForecastPolicy,
        wire::ForecastSkill,
        wire::RenewRequest,
        wire::RenewOutcome,
        wire::ReloadRequest,
        wire::ReloadOutcome,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "services", description = "Services: status, desired capacity, deploys"),
        (name = "replicas", description = "Replicas: list, protect from scale-in, interrupt"),
        (name = "events", description = "The event log: every change with its reason"),
        (name = "metrics", description = "Per-second history for graphs (Prometheus is at /metrics)"),
        (name = "fleet", description = "The whole ebb process"),
        (name = "listeners", description = "Listeners' certificates: list, renew by ACME, reload files"),
        (name = "config", description = "The config file: plan and apply changes to the running ebb without a restart"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The token in `<state_dir>/admin.token` (64 hex digits)"))
                    .build(),
            ),
        );
    }
}

/// One Server-Sent Event of `GET /api/v1/events?follow=1`, as OpenAPI 3.1
/// describes an event stream (the `schema` of `text/event-stream` is one
/// event): `data` is a [`wire::EventView`] as JSON. utoipa has no words for
/// `contentSchema`, so it is written here.
fn sse_event_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "description": "One Server-Sent Event: `id` is the event's sequence number, `data` the event as JSON",
        "required": ["data"],
        "properties": {
            "id": { "type": "string", "pattern": "^[0-9]+$" },
            "event": { "type": "string" },
            "retry": { "type": "integer" },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/EventView" }
            }
        }
    })
}

/// The document as pretty JSON, built once.
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let mut value = match serde_json::to_value(&doc) {
            Ok(v) => v,
            Err(e) => return format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"),
        };
        if let Some(stream) = value.pointer_mut("/paths/~1api~1v1~1events/get/responses/200/content/text~1event-stream")
        {
            stream["schema"] = sse_event_schema();
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    })
    .clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&super::document_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/status",
            "/api/v1/services",
            "/api/v1/services/{name}",
            "/api/v1/services/{name}/desired",
            "/api/v1/services/{name}/deploy",
            "/api/v1/services/{name}/rollback",
            "/api/v1/replicas",
            "/api/v1/replicas/{id}",
            "/api/v1/replicas/{id}/protect",
            "/api/v1/replicas/{id}/interrupt",
            "/api/v1/events",
            "/api/v1/metrics",
            "/api/v1/certs",
            "/api/v1/certs/renew",
            "/api/v1/certs/reload",
            "/api/v1/plan",
            "/api/v1/apply",
            "/api/v1/shutdown",
            "/api/v1/openapi.json",
        ] {
            assert!(paths.contains_key(p), "missing {p}");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(doc["components"]["schemas"]["SetDesiredRequest"]["additionalProperties"], false);
        let sse = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
        assert_eq!(sse["properties"]["data"]["contentSchema"]["$ref"], "#/components/schemas/EventView");
    }
}
