//! Eureka's JSON wire format, read leniently.
//!
//! Eureka's JSON is converted from XML, and it shows:
//! - a one-element list may arrive as an object, an absent list as a
//!   missing key (`application`, `instance`);
//! - ports look like `{"$": 8080, "@enabled": "true"}`, with `$` a number or
//!   a string and `@enabled` a string or a bool;
//! - empty metadata is `{"@class": "java.util.Collections$EmptyMap"}`, and
//!   that `@class` is not a metadata key;
//! - `overriddenStatus` is also spelled `overriddenstatus`.
//!
//! Parsing is per instance: an instance that cannot be used (no host, no
//! enabled port, a bad address) is skipped with a warning and reported in
//! [`Application::rejected`], and the rest of the list is kept. A payload
//! that is not Eureka JSON at all is an error.
//!
//! ```
//! use tower_ribbon::discovery::eureka::wire;
//!
//! let body = br#"{"application": {"name": "USER-SERVICE", "instance": {
//!     "instanceId": "u1", "hostName": "127.0.0.1", "app": "USER-SERVICE", "status": "UP",
//!     "port": {"$": "8081", "@enabled": true}, "securePort": {"$": 443, "@enabled": "false"},
//!     "metadata": {"zone": "zone-a"}}}}"#;
//! let app = wire::parse_application(body).unwrap();
//! assert_eq!(app.instances[0].instance.to_string(), "http://127.0.0.1:8081");
//! assert_eq!(app.instances[0].instance.zone(), Some("zone-a"));
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

use crate::instance::{Instance, InstanceStatus};

/// What a delta entry says happened to an instance (`actionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActionType {
    /// Registered.
    Added,
    /// Changed (status, metadata, ...).
    Modified,
    /// Cancelled or evicted.
    Deleted,
    /// Missing or not one of the three.
    Unknown,
}

impl ActionType {
    pub(crate) fn parse(s: Option<&str>) -> Self {
        match s.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("ADDED") => Self::Added,
            Some(s) if s.eq_ignore_ascii_case("MODIFIED") => Self::Modified,
            Some(s) if s.eq_ignore_ascii_case("DELETED") => Self::Deleted,
            _ => Self::Unknown,
        }
    }
}

/// One instance record of a payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EurekaInstance {
    /// The instance, with scheme and port chosen, zone and metadata read.
    pub instance: Instance,
    /// `actionType` (meaningful in delta payloads).
    pub action: ActionType,
    /// `vipAddress`, if present.
    pub vip_address: Option<String>,
    /// `secureVipAddress`, if present.
    pub secure_vip_address: Option<String>,
    /// `status` as the server wrote it, upper-cased (`UNKNOWN` if absent);
    /// the status-count hash is computed from it.
    pub raw_status: String,
}

/// An instance record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The instance id or host name, if the record had one.
    pub id: Option<String>,
    /// Why it was skipped.
    pub reason: String,
    /// `status` as the server wrote it, upper-cased, if it had one (a
    /// skipped record still counts in the server's status-count hash).
    pub raw_status: Option<String>,
    /// `actionType`, for skipped delta entries.
    pub action: ActionType,
}

/// One application (`GET /apps/{APP}`, or an element of `/apps`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Application {
    /// The application name (upper case by Eureka's convention).
    pub name: String,
    /// Usable instance records, in payload order.
    pub instances: Vec<EurekaInstance>,
    /// Records that were skipped.
    pub rejected: Vec<Rejected>,
}

/// The whole registry or a delta (`GET /apps`, `/apps/delta`, `/vips/{vip}`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Applications {
    /// `apps__hashcode`: the status-count hash (`DOWN_1_UP_3_`), empty for
    /// an empty registry.
    pub apps_hashcode: Option<String>,
    /// `versions__delta`.
    pub versions_delta: Option<String>,
    /// The applications.
    pub applications: Vec<Application>,
}

/// Options for turning records into instances.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Use `ipAddr` instead of `hostName` as the host (Spring's
    /// `preferIpAddress`). Default: `false`.
    pub prefer_ip_address: bool,
}

/// Parses `GET /apps/{APP}` (root key `application`).
///
/// # Errors
/// A message saying what is wrong if the body is not such a JSON document.
pub fn parse_application(body: &[u8]) -> Result<Application, String> {
    parse_application_with(body, ParseOptions::default())
}

/// [`parse_application`] with options.
///
/// # Errors
/// As [`parse_application`].
pub fn parse_application_with(body: &[u8], options: ParseOptions) -> Result<Application, String> {
    let raw: RawApplication = root_object(body, "application")?;
    Ok(raw.convert(options))
}

/// Parses `GET /apps`, `/apps/delta` or `/vips/{vip}` (root key
/// `applications`).
///
/// # Errors
/// A message saying what is wrong if the body is not such a JSON document.
pub fn parse_applications(body: &[u8]) -> Result<Applications, String> {
    parse_applications_with(body, ParseOptions::default())
}

/// [`parse_applications`] with options.
///
/// # Errors
/// As [`parse_applications`].
pub fn parse_applications_with(body: &[u8], options: ParseOptions) -> Result<Applications, String> {
    let raw: RawApplications = root_object(body, "applications")?;
    Ok(Applications {
        apps_hashcode: raw.apps_hashcode.as_ref().and_then(scalar_string),
        versions_delta: raw.versions_delta.as_ref().and_then(scalar_string),
        applications: raw
            .application
            .into_iter()
            .map(|a| a.convert(options))
            .collect(),
    })
}

/// Parses `{"<key>": {...}}` and deserializes the inner object.
fn root_object<T: DeserializeOwned>(body: &[u8], key: &str) -> Result<T, String> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            format!("truncated JSON: {e}")
        } else {
            format!("not Eureka JSON: {e}")
        }
    })?;
    match root.get(key) {
        Some(inner @ Value::Object(_)) => {
            serde_json::from_value(inner.clone()).map_err(|e| format!("malformed `{key}`: {e}"))
        }
        Some(other) => Err(format!("`{key}` is not an object but {}", kind(other))),
        None => Err(format!("no `{key}` object at the root")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Deserialize)]
struct RawApplications {
    #[serde(default, rename = "apps__hashcode")]
    apps_hashcode: Option<Value>,
    #[serde(default, rename = "versions__delta")]
    versions_delta: Option<Value>,
    #[serde(default, deserialize_with = "one_or_many")]
    application: Vec<RawApplication>,
}

#[derive(Deserialize)]
struct RawApplication {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    instance: Vec<Value>,
}

impl RawApplication {
    fn convert(self, options: ParseOptions) -> Application {
        let name = self.name.unwrap_or_default();
        let mut app = Application {
            name,
            ..Application::default()
        };
        for value in self.instance {
            let id = value
                .get("instanceId")
                .or_else(|| value.get("hostName"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let raw_status = value
                .get("status")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_uppercase());
            let action = ActionType::parse(value.get("actionType").and_then(Value::as_str));
            match convert_instance(&app.name, value, options) {
                Ok(instance) => app.instances.push(instance),
                Err(reason) => {
                    tracing::warn!(app = %app.name, id = ?id, %reason, "skipping Eureka instance record");
                    app.rejected.push(Rejected {
                        id,
                        reason,
                        raw_status,
                        action,
                    });
                }
            }
        }
        app
    }
}

/// Accepts `null`, one `T`, or a list of `T`.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(t)) => vec![t],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInstance {
    instance_id: Option<String>,
    host_name: Option<String>,
    app: Option<String>,
    ip_addr: Option<String>,
    status: Option<String>,
    port: Option<Value>,
    secure_port: Option<Value>,
    metadata: Option<Map<String, Value>>,
    data_center_info: Option<Value>,
    vip_address: Option<String>,
    secure_vip_address: Option<String>,
    health_check_url: Option<String>,
    secure_health_check_url: Option<String>,
    action_type: Option<String>,
}

/// A string or number as a string (`"8080"`, `8080`); anything else `None`.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads `{"$": 8080, "@enabled": "true"}` (or a bare number or string).
/// Returns `(port, enabled)`; `enabled` is `default_enabled` when absent.
fn read_port(v: &Value, default_enabled: bool) -> Result<(u16, bool), String> {
    let (num, enabled) = match v {
        Value::Object(m) => (m.get("$"), m.get("@enabled")),
        other => (Some(other), None),
    };
    let enabled = match enabled {
        None | Some(Value::Null) => default_enabled,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => false,
        Some(other) => {
            return Err(format!(
                "`@enabled` is neither a bool nor \"true\"/\"false\": {other}"
            ));
        }
    };
    let text = num
        .and_then(scalar_string)
        .ok_or("port has no `$` number")?;
    let port: u16 = text
        .trim()
        .parse()
        .map_err(|_| format!("port `{text}` is not a number in 1..=65535"))?;
    if port == 0 && enabled {
        return Err("port 0".to_owned());
    }
    Ok((port, enabled))
}

fn convert_instance(
    app_name: &str,
    value: Value,
    options: ParseOptions,
) -> Result<EurekaInstance, String> {
    let raw: RawInstance =
        serde_json::from_value(value).map_err(|e| format!("malformed instance record: {e}"))?;
    let non_empty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let host_name = non_empty(&raw.host_name);
    let ip_addr = non_empty(&raw.ip_addr);
    let host = if options.prefer_ip_address {
        ip_addr.clone().or(host_name.clone())
    } else {
        host_name.clone().or(ip_addr.clone())
    }
    .ok_or("no hostName or ipAddr")?;

    let plain = raw.port.as_ref().map(|p| read_port(p, true)).transpose()?;
    let secure = raw
        .secure_port
        .as_ref()
        .map(|p| read_port(p, false))
        .transpose()?;
    // Scheme and port are chosen together: https only with an enabled
    // secure port (Spring Cloud's EurekaServiceInstance does the same).
    let (port, is_secure) = match (plain, secure) {
        (_, Some((port, true))) => (port, true),
        (Some((port, true)), _) => (port, false),
        _ => return Err("neither port nor securePort is enabled".to_owned()),
    };

    let service_id = non_empty(&raw.app).unwrap_or_else(|| app_name.to_owned());
    let id = non_empty(&raw.instance_id)
        .or(host_name)
        .unwrap_or_else(|| host.clone());
    let status = raw
        .status
        .as_deref()
        .map(InstanceStatus::parse)
        .unwrap_or(InstanceStatus::Unknown);

    let mut metadata = BTreeMap::new();
    for (key, value) in raw.metadata.unwrap_or_default() {
        if key.starts_with('@') {
            continue; // "@class": a type tag of the XML converter, not a key
        }
        if let Some(v) = scalar_string(&value) {
            metadata.insert(key, v);
        }
    }
    let zone = metadata
        .get("zone")
        .cloned()
        .or_else(|| {
            raw.data_center_info
                .as_ref()
                .and_then(|d| d.get("metadata"))
                .and_then(|m| m.get("availability-zone"))
                .and_then(scalar_string)
        })
        .filter(|z| !z.trim().is_empty());
    let weight = metadata
        .get("weight")
        .and_then(|w| w.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let health = if is_secure {
        non_empty(&raw.secure_health_check_url).or(non_empty(&raw.health_check_url))
    } else {
        non_empty(&raw.health_check_url)
    };

    let mut instance = Instance::new(service_id, host, port)
        .map_err(|e| e.to_string())?
        .with_id(id)
        .with_secure(is_secure)
        .with_status(status)
        .with_weight(weight);
    if let Some(zone) = zone {
        instance = instance.with_zone(zone);
    }
    if let Some(url) = health {
        instance = instance.with_health_check_url(url);
    }
    for (k, v) in metadata {
        instance = instance.with_metadata(k, v);
    }
    Ok(EurekaInstance {
        instance,
        action: ActionType::parse(raw.action_type.as_deref()),
        vip_address: non_empty(&raw.vip_address),
        secure_vip_address: non_empty(&raw.secure_vip_address),
        raw_status: raw
            .status
            .as_deref()
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_else(|| "UNKNOWN".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_encodings() {
        assert_eq!(
            read_port(&serde_json::json!({"$": 8080, "@enabled": "true"}), false),
            Ok((8080, true))
        );
        assert_eq!(
            read_port(&serde_json::json!({"$": "8081", "@enabled": true}), false),
            Ok((8081, true))
        );
        assert_eq!(
            read_port(&serde_json::json!({"$": 443, "@enabled": "false"}), true),
            Ok((443, false))
        );
        assert_eq!(
            read_port(&serde_json::json!({"$": 80}), true),
            Ok((80, true))
        );
        assert_eq!(read_port(&serde_json::json!(" 81 "), true), Ok((81, true)));
        assert!(read_port(&serde_json::json!({"$": 70000}), true).is_err());
        assert!(read_port(&serde_json::json!({"$": -1}), true).is_err());
        assert!(read_port(&serde_json::json!({"$": 0, "@enabled": "true"}), true).is_err());
        assert_eq!(
            read_port(&serde_json::json!({"$": 0, "@enabled": "false"}), true),
            Ok((0, false))
        );
        assert!(read_port(&serde_json::json!({"$": 8080, "@enabled": "yes"}), true).is_err());
        assert!(read_port(&serde_json::json!({"@enabled": "true"}), true).is_err());
        assert!(read_port(&serde_json::json!([1]), true).is_err());
    }

    #[test]
    fn bad_records_are_rejected_not_fatal() {
        let body = br#"{"application": {"name": "A", "instance": [
            {"instanceId": "ok", "hostName": "h", "status": "UP", "port": {"$": 1}},
            {"instanceId": "noport", "hostName": "h", "status": "UP", "port": {"$": 1, "@enabled": "false"}},
            {"instanceId": "badhost", "hostName": "a b", "status": "UP", "port": {"$": 1}},
            {"instanceId": "nohost", "status": "UP", "port": {"$": 1}},
            {"instanceId": 7, "hostName": "h"},
            "not an object", 42, null
        ]}}"#;
        let app = parse_application(body).unwrap();
        assert_eq!(app.instances.len(), 1);
        assert_eq!(app.instances[0].instance.id(), "ok");
        assert_eq!(app.rejected.len(), 7);
    }

    #[test]
    fn structural_errors() {
        assert!(parse_application(b"").unwrap_err().contains("truncated"));
        assert!(
            parse_application(b"{\"application\": {\"name\"")
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            parse_application(b"<html>502</html>")
                .unwrap_err()
                .contains("not Eureka JSON")
        );
        assert!(parse_application(b"{}").is_err());
        assert!(parse_application(b"{\"application\": 5}").is_err());
        assert!(parse_applications(b"{\"applications\": []}").is_err());
        let empty = parse_application(br#"{"application": {"name": "A"}}"#).unwrap();
        assert!(empty.instances.is_empty());
    }
}
