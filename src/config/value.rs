//! Parsers of values: numbers in a range and unit, booleans, lists, status
//! codes, paths, header names, server lists and Spring durations. Each
//! names the key and the value in its error.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::error::ConfigError;
use crate::discovery::parse_list_of_servers;

/// One day in milliseconds: the ceiling of every duration key.
pub(crate) const DAY_MS: u64 = 86_400_000;
/// One day in seconds.
pub(crate) const DAY_S: u64 = 86_400;
/// Ceiling of retry counts: more than 100 retries of one request is a typo.
pub(crate) const MAX_RETRIES: u64 = 100;

/// A key as written, its value, and for a map key the part after the name.
pub(crate) struct Kv<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
    pub(crate) arg: &'a str,
}

/// Spring's relaxed form of a name: lower case without `-` and `_`.
pub(crate) fn relaxed(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether the name element `written` is `element` under Spring Boot's
/// relaxed binding (`ConfigurationPropertyName`'s element equality for
/// property sources): letters compared in lower case, every character
/// other than `a-z` and `0-9` skipped, so `loadBalancer`, `load-balancer`,
/// `load_balancer` and `LOADBALANCER` are all `loadbalancer`.
pub(crate) fn element_is(written: &str, element: &str) -> bool {
    let canonical = |s: &str| {
        s.chars()
            .flat_map(char::to_lowercase)
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    };
    canonical(written) == canonical(element)
}

/// `key` after the dot-separated leading elements of `prefix` and the dot
/// that follows them, each element matched with [`element_is`]:
/// `strip_elements("spring.cloud.loadBalancer.retry.enabled",
/// "spring.cloud.loadbalancer")` is `Some("retry.enabled")`.
pub(crate) fn strip_elements<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let mut rest = key;
    for element in prefix.split('.') {
        let (written, after) = rest.split_once('.')?;
        if !element_is(written, element) {
            return None;
        }
        rest = after;
    }
    Some(rest)
}

/// Whether `name` is `pattern` element by element ([`element_is`]); a
/// pattern ending in `.` matches the names under it.
pub(crate) fn elements_match(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('.') {
        Some(prefix) => strip_elements(name, prefix).is_some(),
        None => {
            name.split('.').count() == pattern.split('.').count()
                && name.split('.').zip(pattern.split('.')).all(|(n, p)| element_is(n, p))
        }
    }
}

/// An unsigned number in `range` (unit `unit`).
pub(crate) fn number(
    kv: &Kv<'_>,
    range: RangeInclusive<u64>,
    unit: &'static str,
) -> Result<u64, ConfigError> {
    let v = kv.value;
    match v.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        Ok(_) => Err(ConfigError::out_of_range(kv.key, v, range, unit)),
        Err(_) => {
            let digits = v.strip_prefix('-').unwrap_or(v);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Err(ConfigError::out_of_range(kv.key, v, range, unit))
            } else if unit == "ms" {
                Err(ConfigError::invalid(
                    kv.key,
                    v,
                    "not a number (milliseconds)",
                ))
            } else {
                Err(ConfigError::invalid(kv.key, v, "not a number"))
            }
        }
    }
}

pub(crate) fn count(kv: &Kv<'_>, range: RangeInclusive<u64>) -> Result<u32, ConfigError> {
    let n = number(kv, range, "count")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Milliseconds, Ribbon's unit for timeouts and intervals.
pub(crate) fn millis(kv: &Kv<'_>, range: RangeInclusive<u64>) -> Result<Duration, ConfigError> {
    number(kv, range, "ms").map(Duration::from_millis)
}

/// Seconds.
pub(crate) fn secs(kv: &Kv<'_>, range: RangeInclusive<u64>) -> Result<Duration, ConfigError> {
    number(kv, range, "s").map(Duration::from_secs)
}

pub(crate) fn boolean(kv: &Kv<'_>) -> Result<bool, ConfigError> {
    if kv.value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if kv.value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "not a boolean (true or false)",
        ))
    }
}

/// A boolean as Spring binds one from text (`StringToBooleanConverter`):
/// `true`, `on`, `yes`, `1` or `false`, `off`, `no`, `0`, any case. For
/// Spring's keys; Ribbon's read only `true`/`false` ([`boolean`]).
pub(crate) fn spring_boolean(kv: &Kv<'_>) -> Result<bool, ConfigError> {
    let is = |words: [&str; 4]| words.iter().any(|w| kv.value.eq_ignore_ascii_case(w));
    if is(["true", "on", "yes", "1"]) {
        Ok(true)
    } else if is(["false", "off", "no", "0"]) {
        Ok(false)
    } else {
        Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "not a boolean (true/false, on/off, yes/no or 1/0)",
        ))
    }
}

/// The value, `None` when empty.
pub(crate) fn text(kv: &Kv<'_>) -> Option<String> {
    (!kv.value.is_empty()).then(|| kv.value.to_owned())
}

/// The most elements of one comma-separated value ([`list`]): each is
/// stored apart (a `String` of a few tens of bytes for an element of two),
/// so 8 MiB of `a,` would otherwise make 4 million of them.
pub(crate) const MAX_LIST_ELEMENTS: usize = 1024;

/// A comma-separated list, blanks dropped, at most [`MAX_LIST_ELEMENTS`]
/// elements (a `TooLarge` error past them, before any is copied).
pub(crate) fn list(kv: &Kv<'_>) -> Result<Vec<String>, ConfigError> {
    check_list_len(kv)?;
    Ok(list_elements(kv.value).map(str::to_owned).collect())
}

fn list_elements(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A `TooLarge` error for a value of more than [`MAX_LIST_ELEMENTS`]
/// comma-separated elements (counted without copying).
pub(crate) fn check_list_len(kv: &Kv<'_>) -> Result<(), ConfigError> {
    if list_elements(kv.value).nth(MAX_LIST_ELEMENTS).is_none() {
        return Ok(());
    }
    let key = crate::error::quote(kv.key);
    Err(ConfigError::too_large(
        MAX_LIST_ELEMENTS as u64,
        format!("`{key}`: more than {MAX_LIST_ELEMENTS} elements"),
    ))
}

pub(crate) fn status_codes(kv: &Kv<'_>) -> Result<Vec<u16>, ConfigError> {
    list(kv)?
        .iter()
        .map(|c| match c.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(ConfigError::invalid(
                kv.key,
                kv.value,
                format!(
                    "`{}` is not an HTTP status code (100-599)",
                    crate::error::quote(c)
                ),
            )),
        })
        .collect()
}

/// A URL path (no blanks, query or fragment); `None` when empty.
pub(crate) fn url_path(kv: &Kv<'_>) -> Result<Option<String>, ConfigError> {
    if kv
        .value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "a path holds no blanks, query or fragment",
        ));
    }
    Ok(text(kv))
}

/// A header or cookie name: an HTTP token.
pub(crate) fn header_name(kv: &Kv<'_>) -> Result<String, ConfigError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if kv.value.is_empty() || !kv.value.chars().all(token) {
        return Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "not an HTTP header or cookie name",
        ));
    }
    Ok(kv.value.to_owned())
}

/// A finite decimal number `lo < x <= hi` (`lo` itself allowed when
/// `lo_inclusive`).
pub(crate) fn real(kv: &Kv<'_>, lo: f64, lo_inclusive: bool, hi: f64) -> Result<f64, ConfigError> {
    let open = if lo_inclusive { '[' } else { '(' };
    match kv.value.parse::<f64>() {
        Ok(x) if x.is_finite() && (x > lo || (lo_inclusive && x == lo)) && x <= hi => Ok(x),
        Ok(_) => Err(ConfigError::invalid(
            kv.key,
            kv.value,
            format!("must be within {open}{lo}, {hi}]"),
        )),
        Err(_) => Err(ConfigError::invalid(kv.key, kv.value, "not a number")),
    }
}

/// A fraction in `0.0..=1.0`.
pub(crate) fn fraction(kv: &Kv<'_>) -> Result<f64, ConfigError> {
    match kv.value.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Ok(_) => Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "must be within 0.0..=1.0",
        )),
        Err(_) => Err(ConfigError::invalid(
            kv.key,
            kv.value,
            "not a number (0.0..=1.0)",
        )),
    }
}

pub(crate) fn servers(kv: &Kv<'_>) -> Result<String, ConfigError> {
    parse_list_of_servers("validate", kv.value).map_err(|e| {
        if e.kind() == crate::error::InstanceErrorKind::TooManyEntries {
            let key = crate::error::quote(kv.key);
            let max = crate::discovery::MAX_LIST_ENTRIES;
            ConfigError::too_large(max as u64, format!("`{key}`: more than {max} entries"))
        } else {
            ConfigError::invalid(kv.key, kv.value, e.to_string())
        }
    })?;
    Ok(kv.value.to_owned())
}

/// A Spring `Duration`: a bare number of milliseconds, a number with a unit
/// (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`), or ISO-8601 (`PT35S`, `P1DT2H`),
/// in `range` milliseconds.
pub(crate) fn duration(kv: &Kv<'_>, range: RangeInclusive<u64>) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::invalid(
            kv.key,
            kv.value,
            "not a duration (`35000`, `35s`, `500ms`, `2m`, `PT35S`)",
        )
    };
    let d = parse_spring_duration(kv.value).ok_or_else(bad)?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if !range.contains(&ms) || (d.is_zero() && *range.start() > 0) {
        let n = Some(i128::from(ms));
        return Err(ConfigError::out_of_range_as(
            kv.key, kv.value, n, range, "ms",
        ));
    }
    Ok(d)
}

pub(crate) fn parse_spring_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.len() > 40 {
        return None;
    }
    if let Some(iso) = v.strip_prefix(['P', 'p']) {
        return parse_iso_duration(iso);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let per_unit = |nanos: u64| Some(Duration::from_nanos(n.checked_mul(nanos)?));
    match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => Some(Duration::from_millis(n)),
        "ns" => Some(Duration::from_nanos(n)),
        "us" => per_unit(1_000),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3_600)?)),
        "d" => Some(Duration::from_secs(n.checked_mul(86_400)?)),
        _ => None,
    }
}

/// ISO-8601 after the `P`: `[nD][T[nH][nM][n[.f]S]]`.
pub(crate) fn parse_iso_duration(iso: &str) -> Option<Duration> {
    if iso.is_empty() {
        return None;
    }
    let (date, time) = match iso.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (iso, None),
    };
    let mut total = Duration::ZERO;
    if !date.is_empty() {
        let days: u64 = date.strip_suffix(['D', 'd'])?.parse().ok()?;
        total = total.checked_add(Duration::from_secs(days.checked_mul(86_400)?))?;
    }
    let mut rest = time.unwrap_or("");
    if time.is_some_and(str::is_empty) {
        return None;
    }
    while !rest.is_empty() {
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, tail) = rest.split_at(end);
        let secs_per = match tail.as_bytes().first()?.to_ascii_uppercase() {
            b'H' => 3_600.0,
            b'M' => 60.0,
            b'S' => 1.0,
            _ => return None,
        };
        let n: f64 = number
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
        total = total.checked_add(Duration::try_from_secs_f64(n * secs_per).ok()?)?;
        rest = &tail[1..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_elements_match_as_spring_binds_them() {
        let key = "spring.cloud.load_Balancer.retry.enabled";
        assert_eq!(strip_elements(key, "spring.cloud.loadbalancer"), Some("retry.enabled"));
        assert_eq!(strip_elements("spring.cloud.load.balancer.x", "spring.cloud.loadbalancer"), None);
        assert_eq!(strip_elements("spring.cloud.loadbalancer", "spring.cloud.loadbalancer"), None);
        assert!(element_is("Health-Indicator", "healthindicator"));
        assert!(elements_match("client.Health_Indicator.enabled", "client.health-indicator."));
        assert!(elements_match("Blocking.ENABLED", "blocking.enabled"));
        assert!(!elements_match("blocking.enabled.x", "blocking.enabled"));
    }

    #[test]
    fn spring_durations() {
        let d = |s| parse_spring_duration(s);
        assert_eq!(d("35000"), Some(Duration::from_secs(35)));
        assert_eq!(d("35s"), Some(Duration::from_secs(35)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("2m"), Some(Duration::from_secs(120)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(d("PT35S"), Some(Duration::from_secs(35)));
        assert_eq!(d("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(d("P1DT1H1M"), Some(Duration::from_secs(86_400 + 3_660)));
        for bad in [
            "",
            "s",
            "1x",
            "PT",
            "P",
            "-1s",
            "1.5s",
            "PTS",
            "99999999999999999999d",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }
}
