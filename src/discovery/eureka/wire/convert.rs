//! From a raw record to an [`EurekaInstance`]: host, scheme and port,
//! zone, weight, metadata and health URL.

use std::borrow::Cow;
use std::sync::Arc;

use super::raw::{Port, RawInstance, Scalar, trim};
use super::{ActionType, EurekaInstance, ParseOptions, PortPreference, RecordError};
use crate::instance::{Instance, InstanceStatus, Metadata};

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
        Some(Scalar::Str(s)) if trim(s).eq_ignore_ascii_case("true") => true,
        Some(Scalar::Str(s)) if trim(s).eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(RecordError::BadEnabled),
    };
    let text = port
        .number
        .as_ref()
        .and_then(Scalar::text)
        .ok_or(RecordError::BadPort)?;
    let number: u16 = trim(&text).parse().map_err(|_| RecordError::BadPort)?;
    if number == 0 && enabled {
        return Err(RecordError::PortZero);
    }
    Ok((number, enabled))
}

/// Chooses scheme and port together: https only with an enabled secure
/// port. With both enabled, `preference` decides.
///
/// Each port is read on its own: one that cannot be used (an enabled port
/// 0, a number out of range, a bad `@enabled`) leaves the record usable on
/// the other one, whatever the preference (a registrant with
/// `securePort {"$": 0, "@enabled": "true"}` and a good `port` is reached
/// over http). A record usable on neither is refused with the first
/// port's error (plain, then secure), else [`RecordError::NoEnabledPort`].
fn choose_port(
    raw: &RawInstance<'_>,
    preference: PortPreference,
) -> Result<(u16, bool), RecordError> {
    let plain = raw.port.as_ref().map(|p| read_port(p, true));
    let secure = raw.secure_port.as_ref().map(|p| read_port(p, false));
    let usable = |port: &Option<Result<(u16, bool), RecordError>>| match port {
        Some(Ok((number, true))) => Some(*number),
        _ => None,
    };
    match (usable(&plain), usable(&secure)) {
        (Some(port), Some(_)) if preference == PortPreference::Plain => Ok((port, false)),
        (_, Some(port)) => Ok((port, true)),
        (Some(port), None) => Ok((port, false)),
        (None, None) => match (plain, secure) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
            _ => Err(RecordError::NoEnabledPort),
        },
    }
}

/// The record's metadata (already without the XML converter's `@class`
/// tag, values as text), moved out of the record; checked for
/// `wrong_type` and `overflow` by the caller.
fn take_metadata(raw: &mut RawInstance<'_>) -> Metadata {
    raw.metadata
        .as_mut()
        .map(|meta| Metadata::from_unsorted(std::mem::take(&mut meta.entries)))
        .unwrap_or_default()
}

/// `metadata.zone`, else `dataCenterInfo.metadata["availability-zone"]`,
/// shared through `strings`.
fn zone(raw: &RawInstance<'_>, metadata: &Metadata, strings: &mut Interner) -> Option<Arc<str>> {
    let zone = match metadata.get("zone") {
        Some(zone) => Cow::Borrowed(zone.as_str()),
        None => raw.data_center_info.as_ref()?.0.as_ref()?.text()?,
    };
    (!zone.trim().is_empty()).then(|| strings.get(&zone))
}

/// Short strings that repeat across a payload's instances, shared instead
/// of copied: zones, statuses and service names that differ from the application's
/// (the first [`Interner::MAX`] distinct ones; later ones are copied), and
/// the VIP addresses, which repeat within an application (the last one
/// seen is kept).
#[derive(Debug, Default)]
pub(super) struct Interner {
    seen: Vec<Arc<str>>,
    vip: Option<Arc<str>>,
    secure_vip: Option<Arc<str>>,
}

impl Interner {
    /// Distinct strings kept; a payload has a handful of zones.
    const MAX: usize = 32;

    pub(super) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.seen.iter().find(|a| ***a == *s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        if self.seen.len() < Self::MAX {
            self.seen.push(Arc::clone(&shared));
        }
        shared
    }

    /// `s`, shared with the previous call's result if equal.
    fn last(slot: &mut Option<Arc<str>>, s: &str) -> Arc<str> {
        match slot {
            Some(last) if **last == *s => Arc::clone(last),
            _ => Arc::clone(slot.insert(Arc::from(s))),
        }
    }
}

/// Converts one record of application `app_name`. Every check runs before
/// anything is moved out of `raw`, so a refused record still has its
/// identity for [`identity`].
pub(super) fn convert(
    raw: &mut RawInstance<'_>,
    app_name: &Arc<str>,
    options: &ParseOptions,
    strings: &mut Interner,
) -> Result<EurekaInstance, RecordError> {
    let host_name = field(&raw.host_name)?;
    let ip_addr = field(&raw.ip_addr)?;
    let (preferred, other) = if options.prefer_ip_address {
        (ip_addr, host_name)
    } else {
        (host_name, ip_addr)
    };
    let host = preferred.or(other).ok_or(RecordError::NoHost)?;
    let raw_status = field(&raw.status)?;
    let service_id = match field(&raw.app)? {
        Some(app) if app != &**app_name => strings.get(app),
        _ => Arc::clone(app_name),
    };
    let id = field(&raw.instance_id)?.or(host_name).unwrap_or(host);
    if id.len() > super::MAX_INSTANCE_ID_BYTES {
        return Err(RecordError::LongId);
    }
    let (port, is_secure) = choose_port(raw, options.port_preference)?;
    if raw.metadata.as_ref().is_some_and(|m| m.wrong_type) {
        return Err(RecordError::WrongType);
    }
    if raw.metadata.as_ref().is_some_and(|m| m.overflow) {
        return Err(RecordError::TooManyMetadata);
    }
    let plain_health = field(&raw.health_check_url)?;
    let secure_health = field(&raw.secure_health_check_url)?;
    let health = if is_secure {
        secure_health.or(plain_health)
    } else {
        plain_health
    };
    // The other field when the preferred one is an address of no one
    // host (an `ipAddr` of `0.0.0.0` from a container that misread its
    // address, beside a good `hostName`; helper 194): the record's other
    // way to reach the same instance. A malformed field still refuses the
    // record, as before.
    let fallback = other.filter(|o| *o != host && crate::instance::authority::names_no_one_host(host));
    let built = match fallback {
        Some(other) => Instance::with_identity(service_id, Some(id), other, port, health),
        None => Instance::with_identity(service_id, Some(id), host, port, health),
    };
    let mut instance = built
            .map_err(|_| RecordError::BadHost)?
            .with_secure(is_secure)
            .with_status(raw_status.map_or(InstanceStatus::Unknown, InstanceStatus::parse));
    let action = ActionType::parse(field(&raw.action_type)?);
    let vip_address = field(&raw.vip_address)?.map(|v| Interner::last(&mut strings.vip, v));
    let secure_vip_address =
        field(&raw.secure_vip_address)?.map(|v| Interner::last(&mut strings.secure_vip, v));
    let raw_status = match raw_status {
        None => strings.get("UNKNOWN"),
        Some(s) if !s.bytes().any(|b| b.is_ascii_lowercase()) => strings.get(s),
        Some(s) => strings.get(&s.to_ascii_uppercase()),
    };
    let metadata = take_metadata(raw);
    let weight = metadata
        .get("weight")
        .and_then(|w| w.trim().parse::<u32>().ok())
        .unwrap_or(1);
    if let Some(zone) = zone(raw, &metadata, strings) {
        instance = instance.with_shared_zone(zone);
    }
    Ok(EurekaInstance {
        instance: instance.with_weight(weight).with_metadata_map(metadata),
        action,
        vip_address,
        secure_vip_address,
        raw_status,
    })
}
