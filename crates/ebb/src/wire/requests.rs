//! The bodies the admin API accepts. Each refuses unknown fields, so a typo
//! is a 400 rather than a silently ignored setting.

use std::collections::BTreeMap;

use ebb_core::deploy::Strategy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `PUT /api/v1/services/{name}/desired`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDesiredRequest {
    /// The new desired capacity; clamped to the service's min and max.
    #[schema(example = 3, maximum = 1000000)]
    #[serde(deserialize_with = "whole_u32")]
    pub desired: u32,
    /// Free text recorded in the event (default `manual (API)`); one line,
    /// no control characters.
    #[serde(default)]
    #[schema(max_length = 1000, example = "traffic expected at 9:00", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/services/{name}/deploy`: what changes in the spec.
// What it does not name stays as it is. The admin API hands it on to the
// service's controller as it came, plus `from_config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The new command (default: the current one, e.g. to restart every
    /// replica); not blank; newlines and tabs allowed, no other control
    /// character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        example = "{ebb} demo-app --port $PORT",
        min_length = 1,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$"
    )]
    pub command: Option<String>,
    /// Environment variables to set (merged over the current ones); no
    /// control character in a name, only newlines and tabs in a value.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// Default: the service's configured strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = strategy_schema)]
    pub strategy: Option<Strategy>,
    /// A new image (docker and swarm drivers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "ebb-demo:v2", pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
    /// The whole spec to roll out instead of changes to the current one:
    /// what the config file says now (set by the admin API when a deploy
    /// names no change). Never on the wire.
    #[serde(skip)]
    pub from_config: Option<crate::controller::ConfigSpec>,
}

impl DeployRequest {
    /// Whether it names a change to the spec (`strategy` and `reason` alone do not).
    pub fn names_a_change(&self) -> bool {
        self.command.is_some() || self.image.is_some() || !self.env.is_empty()
    }
}

/// `"env": null` is what the schema allows for "no change".
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// The schema of a deploy's `env`: names and values as the admin API's text
/// checks and the controller accept them (a name is not empty and has no `=`).
fn env_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let string = |pattern: &str| ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(string(r"^[^=\u0000-\u001F\u007F-\u009F]+$")))
        .additional_properties(Some(string(r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")))
        .build()
}

/// The schema of [`Strategy`] as JSON spells it (ebb-core knows no OpenAPI).
fn strategy_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(
            "How a deploy replaces replicas (default: the service's configured strategy): `rolling` replaces a few \
             replicas at a time, each new one healthy before an old one leaves; `blue_green` starts a whole new \
             fleet, waits until it is healthy, moves traffic, retires the old. `blue-green` is accepted too.",
        ))
        .enum_values(Some([serde_json::Value::from("rolling"), "blue_green".into(), serde_json::Value::Null]))
        .build()
}

/// Body of `POST /api/v1/services/{name}/rollback` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Free text recorded in the event; one line, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/replicas/{id}/protect`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    /// `true` to protect the replica from scale-in, `false` to lift it.
    pub protected: bool,
}

/// Body of `POST /api/v1/replicas/{id}/interrupt` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InterruptRequest {
    /// Seconds of notice, as a spot reclaim gives (default 120): a
    /// replacement starts at once, and the replica leaves when the
    /// replacement is in service, or in time to drain before the notice ends.
    #[serde(default, deserialize_with = "whole_opt_u64", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400, example = 120)]
    pub notice_s: Option<u64>,
}

/// Body of `POST /api/v1/shutdown` and `POST /api/v1/dashboard/login`
/// (optional): an empty object, nothing else, so a stray or garbled request
/// never stops the fleet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {}

/// A whole number, also when written `3.0` (JSON Schema's `integer` allows it).
fn whole_u64(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19).map(|f| f as u64))
}

fn whole_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    whole_u64(&n)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number from 0 to {}, not {n}", u32::MAX)))
}

fn whole_opt_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => {
            whole_u64(&n).map(Some).ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, not {n}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_reads_in_both_spellings_and_an_unknown_one_names_the_known() {
        for (name, want) in
            [("rolling", Strategy::Rolling), ("blue_green", Strategy::BlueGreen), ("blue-green", Strategy::BlueGreen)]
        {
            let body: DeployRequest = serde_json::from_str(&format!(r#"{{"strategy": "{name}"}}"#)).unwrap();
            assert_eq!(body.strategy, Some(want));
        }
        let err = serde_json::from_str::<DeployRequest>(r#"{"strategy": "fast"}"#).unwrap_err().to_string();
        assert!(err.contains("`fast`") && err.contains("`rolling`") && err.contains("`blue_green`"), "{err}");
        let body: DeployRequest = serde_json::from_str(r#"{"env": null}"#).unwrap();
        assert!(body.env.is_empty() && !body.names_a_change());
    }

    /// What `ebb deploy` sends: the fields it sets, `env` always.
    #[test]
    fn a_deploy_request_sends_only_what_it_names() {
        let mut request = DeployRequest { strategy: Some(Strategy::BlueGreen), ..DeployRequest::default() };
        request.env.insert("A".into(), "1".into());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json, serde_json::json!({"env": {"A": "1"}, "strategy": "blue_green"}));
        assert_eq!(serde_json::to_value(ReasonRequest::default()).unwrap(), serde_json::json!({}));
    }
}
