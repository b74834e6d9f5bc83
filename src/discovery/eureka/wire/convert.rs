//! From a raw record to an [`EurekaInstance`]: host, scheme and port,
//! zone, weight, metadata and health URL.

use std::collections::BTreeMap;

use super::raw::{Port, RawInstance, Scalar};
use super::{ActionType, EurekaInstance, ParseOptions, PortPreference, RecordError};
use crate::instance::{Instance, InstanceStatus};

/// A string field: `Ok(None)` if absent, null or blank; `WrongType` if it is
/// not a string.
fn field<'r>(value: &'r Option<Scalar<'_>>) -> Result<Option<&'r str>, RecordError> {
    match value {
        None => Ok(None),
        Some(s) => s.string().map_err(|()| RecordError::WrongType),
    }
}

/// The id, upper-cased status and action of a record, as far as they can be
/// read: what a skipped record still contributes (the status-count hash
/// counts it; a delta may delete it).
pub(super) fn identity(raw: &RawInstance<'_>) -> (Option<String>, Option<String>, ActionType) {
    fn text<'r>(v: &'r Option<Scalar<'_>>) -> Option<&'r str> {
        field(v).ok().flatten()
    }
    let id = text(&raw.instance_id)
        .or_else(|| text(&raw.host_name))
        .map(str::to_owned);
    let status = text(&raw.status).map(str::to_ascii_uppercase);
    (id, status, ActionType::parse(text(&raw.action_type)))
}

/// Reads `{"$": 8080, "@enabled": "true"}` (or a bare number or string).
/// Returns `(port, enabled)`; `enabled` is `default_enabled` when absent.
pub(super) fn read_port(
    port: &Port<'_>,
    default_enabled: bool,
) -> Result<(u16, bool), RecordError> {
    let enabled = match &port.enabled {
        None | Some(Scalar::Null) => default_enabled,
        Some(Scalar::Bool(b)) => *b,
        Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("true") => true,
        Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(RecordError::BadEnabled),
    };
    let text = port
        .number
        .as_ref()
        .and_then(Scalar::text)
        .ok_or(RecordError::BadPort)?;
    let number: u16 = text.trim().parse().map_err(|_| RecordError::BadPort)?;
    if number == 0 && enabled {
        return Err(RecordError::PortZero);
    }
    Ok((number, enabled))
}

/// Chooses scheme and port together: https only with an enabled secure
/// port. With both enabled, `preference` decides.
fn choose_port(
    raw: &RawInstance<'_>,
    preference: PortPreference,
) -> Result<(u16, bool), RecordError> {
    let plain = raw.port.as_ref().map(|p| read_port(p, true)).transpose()?;
    let secure = raw
        .secure_port
        .as_ref()
        .map(|p| read_port(p, false))
        .transpose()?;
    match (plain, secure) {
        (Some((port, true)), Some((_, true))) if preference == PortPreference::Plain => {
            Ok((port, false))
        }
        (_, Some((port, true))) => Ok((port, true)),
        (Some((port, true)), _) => Ok((port, false)),
        _ => Err(RecordError::NoEnabledPort),
    }
}

/// Metadata without the XML converter's `@class` tag, values as text.
fn metadata(raw: &RawInstance<'_>) -> Result<BTreeMap<String, String>, RecordError> {
    let Some(meta) = &raw.metadata else {
        return Ok(BTreeMap::new());
    };
    if meta.wrong_type {
        return Err(RecordError::WrongType);
    }
    if meta.overflow {
        return Err(RecordError::TooManyMetadata);
    }
    Ok(meta
        .entries
        .iter()
        .filter(|(key, _)| !key.0.starts_with('@'))
        .filter_map(|(key, value)| Some((key.0.clone().into_owned(), value.text()?.into_owned())))
        .collect())
}

/// `metadata.zone`, else `dataCenterInfo.metadata["availability-zone"]`.
fn zone(raw: &RawInstance<'_>, metadata: &BTreeMap<String, String>) -> Option<String> {
    metadata
        .get("zone")
        .cloned()
        .or_else(|| {
            let dc = raw.data_center_info.as_ref()?.0.as_ref()?;
            dc.text().map(|z| z.into_owned())
        })
        .filter(|z| !z.trim().is_empty())
}

/// Converts one record of application `app_name`.
pub(super) fn convert(
    raw: &RawInstance<'_>,
    app_name: &str,
    options: &ParseOptions,
) -> Result<EurekaInstance, RecordError> {
    let host_name = field(&raw.host_name)?;
    let ip_addr = field(&raw.ip_addr)?;
    let host = if options.prefer_ip_address {
        ip_addr.or(host_name)
    } else {
        host_name.or(ip_addr)
    }
    .ok_or(RecordError::NoHost)?;
    let raw_status = field(&raw.status)?;
    let service_id = field(&raw.app)?.unwrap_or(app_name);
    let id = field(&raw.instance_id)?.or(host_name).unwrap_or(host);
    let (port, is_secure) = choose_port(raw, options.port_preference)?;
    let metadata = metadata(raw)?;
    let zone = zone(raw, &metadata);
    let weight = metadata
        .get("weight")
        .and_then(|w| w.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let plain_health = field(&raw.health_check_url)?;
    let secure_health = field(&raw.secure_health_check_url)?;
    let health = if is_secure {
        secure_health.or(plain_health)
    } else {
        plain_health
    };
    let mut instance = Instance::new(service_id, host, port)
        .map_err(|_| RecordError::BadHost)?
        .with_id(id)
        .with_secure(is_secure)
        .with_status(raw_status.map_or(InstanceStatus::Unknown, InstanceStatus::parse))
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
        action: ActionType::parse(field(&raw.action_type)?),
        vip_address: field(&raw.vip_address)?.map(str::to_owned),
        secure_vip_address: field(&raw.secure_vip_address)?.map(str::to_owned),
        raw_status: raw_status.map_or_else(|| "UNKNOWN".to_owned(), str::to_ascii_uppercase),
    })
}
