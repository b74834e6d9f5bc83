//! Spring's `${name}` and `${name:default}` property placeholders, resolved
//! in every value before the keys are read, as Spring's
//! `PropertySourcesPlaceholdersResolver` resolves them when a property is
//! bound: `defaultZone: ${EUREKA_URI:http://localhost:8761/eureka/}` is the
//! usual form in `application.yml`.
//!
//! A name is looked up, as Spring's environment does (environment first,
//! then the file):
//! 1. in the process environment, as written and in Spring's
//!    `SystemEnvironmentPropertySource` forms (`.` and `-` as `_`, and each
//!    upper-cased: `eureka.uri` is also `EUREKA_URI`);
//! 2. for `random.*` names, Spring Boot's random values (`random.value`,
//!    `random.int`, `random.int(10)`, `random.long[1,100]`, `random.uuid`),
//!    a new one at each placeholder;
//! 3. among the same file's keys, relaxed (case, `-` and `_` ignored:
//!    `${eureka.client.serviceUrl.defaultZone}` finds
//!    `eureka.client.service-url.defaultZone`);
//! 4. else the default after the first `:` (outside nested placeholders),
//!    itself resolved.
//!
//! `\${` is a literal `${` (Spring's escape character): `pa\${ss}` is the
//! text `pa${ss}`, not `ss` resolved.
//!
//! A value found is resolved in turn (Spring resolves nested references).
//! A placeholder that resolves to nothing, or that refers back to itself,
//! stays as written (Spring fails only when such a property is used; here
//! the key that reads it reports the value). Bounds: 8 levels of nesting,
//! 64 placeholders and 64 KiB of result (and of values looked up) per
//! value, 16 384 placeholders and 8 MiB of results per config (a value
//! left as written counts the bytes it looked up); past them values stay as written and the
//! config carries a warning.

use std::collections::HashMap;

/// Nesting bound (references of references, defaults in defaults).
const MAX_DEPTH: usize = 8;
/// Placeholders resolved per value, all levels counted.
const MAX_PLACEHOLDERS: usize = 64;
/// Bytes of one resolved value.
pub(crate) const MAX_RESOLVED_BYTES: usize = 64 * 1024;
/// Placeholders resolved in one config, all values counted.
const MAX_TOTAL_PLACEHOLDERS: usize = 16_384;
/// Bytes of all resolved values of one config (the bound on flattened
/// YAML).
const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

/// Relaxed form of a key: lower case, `-` and `_` dropped.
fn relaxed(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The names Spring's `SystemEnvironmentPropertySource` tries for `name`.
fn env_forms(name: &str) -> [String; 4] {
    let underscored: String = name
        .chars()
        .map(|c| if c == '.' || c == '-' { '_' } else { c })
        .collect();
    [
        name.to_owned(),
        underscored.clone(),
        name.to_uppercase(),
        underscored.to_uppercase(),
    ]
}

/// Spring Boot's `RandomValuePropertySource`: `random.int`, `random.long`,
/// `random.int(max)` or `random.int[min,max]` (`max` excluded; the same for
/// `long`), `random.uuid`, and any other `random.*` 32 hex digits; a new
/// value at each placeholder. `None` for other names and bad ranges.
fn random_value(name: &str) -> Option<String> {
    let kind = name.strip_prefix("random.")?;
    let bytes = rand::random::<u128>();
    match kind {
        "int" => return Some(rand::random::<i32>().to_string()),
        "long" => return Some(rand::random::<i64>().to_string()),
        "uuid" => {
            // Version 4, variant 10.
            let v4 = bytes & !(0xf000 << 64 | 0xc << 60) | (0x4000 << 64 | 0x8 << 60);
            let hex = format!("{v4:032x}");
            let parts = [&hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]];
            return Some(parts.join("-"));
        }
        _ => {}
    }
    for (prefix, max) in [("int", i64::from(i32::MAX)), ("long", i64::MAX)] {
        let Some(rest) = kind.strip_prefix(prefix) else {
            continue;
        };
        if rest.len() < 2 || !rest.starts_with(['(', '[']) || !rest.ends_with([')', ']']) {
            continue;
        }
        let bound = |t: &str| t.trim().parse::<i64>().ok().filter(|b| b.unsigned_abs() <= max.unsigned_abs());
        let inner = &rest[1..rest.len() - 1];
        let (low, high) = match inner.split_once(',') {
            Some((low, high)) => (bound(low)?, bound(high)?),
            None => (0, bound(inner)?),
        };
        let span = u128::try_from(i128::from(high) - i128::from(low)).ok().filter(|s| *s > 0)?;
        return Some((i128::from(low) + (bytes % span) as i128).to_string());
    }
    Some(format!("{bytes:032x}"))
}

/// `pairs` trimmed, with placeholders resolved from the process
/// environment and the pairs themselves (see [`resolve_pairs`]).
pub(crate) fn resolve_in<I, K, V>(pairs: I) -> (Vec<(String, String)>, Vec<String>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let pairs = pairs
        .into_iter()
        .map(|(k, v)| (k.as_ref().trim().to_owned(), v.as_ref().trim().to_owned()))
        .collect();
    resolve_pairs(pairs, &|name| std::env::var(name).ok())
}

/// Resolves placeholders in the values of `pairs`, looking names up in
/// `env` and among `pairs`. Returns the pairs and one warning per value
/// left as written because it passed a bound.
pub(crate) fn resolve_pairs(
    pairs: Vec<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<(String, String)>, Vec<String>) {
    if !pairs.iter().any(|(_, v)| v.contains("${")) {
        return (pairs, Vec::new());
    }
    let file: HashMap<String, &str> = pairs
        .iter()
        .map(|(k, v)| (relaxed(k), v.as_str()))
        .collect();
    let lookup = |name: &str| -> Option<String> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        // `std::env::var` may panic on a name with `=` or NUL: no lookup.
        let env_name = !name.contains(['=', '\0']);
        env_forms(name)
            .iter()
            .filter(|_| env_name)
            .find_map(|form| env(form))
            .or_else(|| random_value(name))
            .or_else(|| file.get(&relaxed(name)).map(|v| (*v).to_owned()))
    };
    let mut warnings = Vec::new();
    let (mut total_bytes, mut total_placeholders) = (0usize, 0usize);
    let resolved: Vec<(String, String)> = pairs
        .iter()
        .map(|(key, value)| {
            if !value.contains("${") {
                return (key.clone(), value.clone());
            }
            if total_bytes > MAX_TOTAL_BYTES || total_placeholders > MAX_TOTAL_PLACEHOLDERS {
                return (key.clone(), value.clone());
            }
            let mut budget = Budget::default();
            let result = resolve(value, &lookup, 0, &mut budget);
            total_placeholders += budget.placeholders;
            // A value left as written counts the bytes it looked up.
            total_bytes += result.as_ref().map_or(0, String::len).max(budget.read);
            if total_bytes > MAX_TOTAL_BYTES || total_placeholders > MAX_TOTAL_PLACEHOLDERS {
                warnings.push(format!(
                    "placeholders resolved up to `{}` only: the config's placeholders passed \
                     {MAX_TOTAL_PLACEHOLDERS} or their values {MAX_TOTAL_BYTES} bytes",
                    crate::error::quote(key)
                ));
                return (key.clone(), value.clone());
            }
            match result {
                Some(v) if !budget.exceeded => (key.clone(), v),
                _ => {
                    warnings.push(format!(
                        "`{}`: placeholders left unresolved (more than {MAX_DEPTH} levels, \
                         {MAX_PLACEHOLDERS} placeholders or {MAX_RESOLVED_BYTES} bytes)",
                        crate::error::quote(key)
                    ));
                    (key.clone(), value.clone())
                }
            }
        })
        .collect();
    (resolved, warnings)
}

#[derive(Default)]
struct Budget {
    placeholders: usize,
    /// Bytes of the values looked up, all levels counted.
    read: usize,
    exceeded: bool,
}

/// `text` with its placeholders resolved; `None` once a bound is passed.
fn resolve(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    budget: &mut Budget,
) -> Option<String> {
    if depth > MAX_DEPTH {
        budget.exceeded = true;
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('\\') {
            // `\${` is Spring's escape (6.2): a literal `${`.
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(len) = closing(&rest[start + 2..]) else {
            // No closing brace: the rest is text.
            break;
        };
        let whole = &rest[start..start + 2 + len + 1];
        let inner = &rest[start + 2..start + 2 + len];
        rest = &rest[start + 2 + len + 1..];
        budget.placeholders += 1;
        if budget.placeholders > MAX_PLACEHOLDERS {
            budget.exceeded = true;
            return None;
        }
        let (name, default) = split_default(inner);
        let name = resolve(name, lookup, depth + 1, budget)?;
        let value = lookup(&name);
        // Bytes looked up count even when not used (a value naming itself,
        // or one past a bound): 64 KiB per value.
        budget.read += value.as_ref().map_or(0, String::len);
        if budget.read > MAX_RESOLVED_BYTES {
            budget.exceeded = true;
            return None;
        }
        let found = match value {
            // A value naming itself stays as written.
            Some(v) if !v.contains(whole) => Some(resolve(&v, lookup, depth + 1, budget)?),
            _ => match default {
                Some(d) => Some(resolve(d, lookup, depth + 1, budget)?),
                None => None,
            },
        };
        out.push_str(found.as_deref().unwrap_or(whole));
        if out.len() > MAX_RESOLVED_BYTES {
            budget.exceeded = true;
            return None;
        }
    }
    out.push_str(rest);
    (out.len() <= MAX_RESOLVED_BYTES).then_some(out).or_else(|| {
        budget.exceeded = true;
        None
    })
}

/// A placeholder's inside split at its first `:` outside nested
/// placeholders: `${${P:eureka}.uri:x}` is name `${P:eureka}.uri`, default
/// `x`, as Spring's parser splits it.
fn split_default(inner: &str) -> (&str, Option<&str>) {
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => match closing(&inner[i + 2..]) {
                Some(len) => i += 2 + len + 1,
                None => break,
            },
            b':' => return (&inner[..i], Some(&inner[i + 1..])),
            _ => i += 1,
        }
    }
    (inner, None)
}

/// Length of a placeholder's inside up to its closing `}` (nested `${…}`
/// counted), or `None` when it is not closed.
fn closing(after_open: &str) -> Option<usize> {
    let bytes = after_open.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)], env: &[(&str, &str)]) -> (Vec<(String, String)>, Vec<String>) {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let pairs = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve_pairs(pairs, &|name| env.get(name).cloned())
    }

    fn value(pairs: &[(&str, &str)], env: &[(&str, &str)], key: &str) -> String {
        let (out, _) = run(pairs, env);
        out.into_iter().find(|(k, _)| k == key).unwrap().1
    }

    const ZONE: &str = "eureka.client.service-url.defaultZone";

    #[test]
    fn the_usual_default_zone_forms() {
        let spring = [(ZONE, "${EUREKA_URI:http://localhost:8761/eureka/}")];
        assert_eq!(value(&spring, &[], ZONE), "http://localhost:8761/eureka/");
        assert_eq!(
            value(&spring, &[("EUREKA_URI", "http://reg:8761/eureka/")], ZONE),
            "http://reg:8761/eureka/"
        );
        // Spring's environment forms of a dotted name.
        let dotted = [(ZONE, "${eureka.uri:http://d/eureka/}")];
        assert_eq!(value(&dotted, &[("EUREKA_URI", "http://e/")], ZONE), "http://e/");
        // Another key of the file, relaxed, and nested defaults.
        let file = [
            ("eureka.host", "reg.internal"),
            (ZONE, "http://${eureka.Host}:${EUREKA_PORT:${eureka.port:8761}}/eureka/"),
        ];
        assert_eq!(value(&file, &[], ZONE), "http://reg.internal:8761/eureka/");
        // The environment wins over the file, as in Spring.
        assert_eq!(
            value(&file, &[("EUREKA_HOST", "env-host")], ZONE),
            "http://env-host:8761/eureka/"
        );
    }

    #[test]
    fn unresolvable_and_circular_placeholders_stay_as_written() {
        assert_eq!(value(&[("a", "x${missing}y")], &[], "a"), "x${missing}y");
        assert_eq!(value(&[("a", "${a}")], &[], "a"), "${a}");
        // A cycle through two keys passes the nesting bound: both stay as
        // written, with a warning each.
        let cycle = [("a", "${b}"), ("b", "${a}")];
        assert_eq!(value(&cycle, &[], "a"), "${b}");
        assert_eq!(run(&cycle, &[]).1.len(), 2);
        assert_eq!(value(&[("a", "${unclosed")], &[], "a"), "${unclosed");
        assert_eq!(value(&[("a", "${:d}")], &[], "a"), "d");
        // Names the environment cannot hold are not looked up there.
        let odd = [("a", "${x=y:d1}${n\0ul:d2}")];
        let (out, _) = resolve_pairs(
            vec![("a".to_owned(), odd[0].1.to_owned())],
            &|name| std::env::var(name).ok(),
        );
        assert_eq!(out[0].1, "d1d2");
        let (_, warnings) = run(&[("a", "${a}")], &[]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_escaped_prefix_is_a_literal() {
        // Spring 6.2's escape: `\${` is `${`. It gave `p\Bq`, and a
        // password could not hold a literal `${USER}`.
        assert_eq!(value(&[("a", "p\\${b}q"), ("b", "B")], &[], "a"), "p${b}q");
        assert_eq!(value(&[("a", "\\${missing}")], &[], "a"), "${missing}");
        assert_eq!(value(&[("a", "${X:\\${lit}}")], &[], "a"), "${lit}");
        let zone = [(ZONE, "http://u:pa\\${USER}@h/eureka/")];
        assert_eq!(
            value(&zone, &[("USER", "bob")], ZONE),
            "http://u:pa${USER}@h/eureka/"
        );
    }

    #[test]
    fn random_values_as_spring_boot_gives_them() {
        // Spring Cloud's `${spring.application.name}:${random.value}` id
        // stayed as written: every replica had the same id (and subset).
        let app = ("spring.application.name", "app");
        let id = value(&[("a", "${spring.application.name}:${random.value}"), app], &[], "a");
        let (name, hex) = id.split_once(':').unwrap();
        assert_eq!((name, hex.len()), ("app", 32), "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let two = value(&[("a", "${random.value} ${random.value}")], &[], "a");
        let (x, y) = two.split_once(' ').unwrap();
        assert_ne!(x, y);
        for _ in 0..100 {
            let int = value(&[("a", "${random.int[5,8]}")], &[], "a");
            assert!((5..8).contains(&int.parse::<i32>().unwrap()), "{int}");
            let long = value(&[("a", "${random.long(3)}")], &[], "a");
            assert!((0..3).contains(&long.parse::<i64>().unwrap()), "{long}");
        }
        value(&[("a", "${random.int}")], &[], "a").parse::<i32>().unwrap();
        value(&[("a", "${random.long}")], &[], "a").parse::<i64>().unwrap();
        let uuid = value(&[("a", "${random.uuid}")], &[], "a");
        let dashes: Vec<usize> = uuid.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!((uuid.len(), dashes), (36, vec![8, 13, 18, 23]), "{uuid}");
        assert_eq!(uuid.as_bytes()[14], b'4', "{uuid}");
        assert!(b"89ab".contains(&uuid.as_bytes()[19]), "{uuid}");
        // Bounds Spring refuses stay as written; the environment wins.
        for bad in [
            "${random.int[8,5]}",
            "${random.int(0)}",
            "${random.int(3000000000)}",
            // `i64::MIN.abs()` overflowed (a panic in a debug build).
            "${random.long[-9223372036854775808,0]}",
        ] {
            assert_eq!(value(&[("a", bad)], &[], "a"), bad);
        }
        let env = [("RANDOM_VALUE", "e")];
        assert_eq!(value(&[("a", "${random.value}")], &env, "a"), "e");
    }

    #[test]
    fn a_nested_name_splits_at_its_own_colon() {
        // Name `${P:eureka}.uri`, default `x`: it was split at the nested
        // placeholder's colon, giving `eureka}.uri:x`.
        let nested = ("a", "${${P:eureka}.uri:x}");
        assert_eq!(value(&[nested], &[], "a"), "x");
        assert_eq!(value(&[nested, ("eureka.uri", "E")], &[], "a"), "E");
        assert_eq!(value(&[nested], &[("P", "o"), ("O_URI", "env")], "a"), "env");
        assert_eq!(value(&[("a", "${${P}:${Q:d}}")], &[], "a"), "d");
    }

    #[test]
    fn values_left_as_written_count_the_bytes_they_looked_up() {
        // 200 values naming a 900 000-byte value, each past 64 KiB: they
        // counted no bytes, so all 200 copied and scanned it (800 lookups,
        // 200 warnings, 180 MB); now the tenth passes 8 MiB.
        let mut pairs = vec![("b".to_owned(), "x".repeat(900_000))];
        pairs.extend((0..200).map(|i| (format!("k{i}"), "${b}".to_owned())));
        let lookups = std::cell::Cell::new(0);
        let (out, warnings) = resolve_pairs(pairs, &|_| {
            lookups.set(lookups.get() + 1);
            None
        });
        assert_eq!(lookups.get(), 10 * 4);
        assert_eq!(warnings.len(), 10, "{warnings:?}");
        assert!(out[1..].iter().all(|(_, v)| v == "${b}"));
        // A value naming itself past 64 KiB is looked up once per value.
        let own = format!("${{b}}{}", "x".repeat(100_000));
        let (out, warnings) = run(&[("b", &own), ("a", "${b}${b}${b}")], &[]);
        assert_eq!((out[1].1.as_str(), warnings.len()), ("${b}${b}${b}", 2));
    }

    #[test]
    fn a_placeholder_bomb_is_bounded() {
        // Each level doubles: 2^20 copies unbounded.
        let mut pairs = vec![("k0".to_owned(), "x".repeat(1000))];
        for i in 1..=20 {
            pairs.push((format!("k{i}"), format!("${{k{}}}${{k{}}}", i - 1, i - 1)));
        }
        let started = std::time::Instant::now();
        let (out, warnings) = resolve_pairs(pairs, &|_| None);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(out.iter().all(|(_, v)| v.len() <= MAX_RESOLVED_BYTES));
        // k1..k5 fit (at most 32 000 bytes and 62 placeholders); k6 on pass a bound.
        assert_eq!(warnings.len(), 15, "{warnings:?}");
        assert_eq!(out[5].1.len(), 32_000);
        assert_eq!(out[6].1, "${k5}${k5}");
    }

    #[test]
    fn many_values_of_a_bomb_are_bounded_together() {
        // 100 000 values of 60 placeholders (30 KB each), 3 GB unbounded.
        let mut pairs = vec![("k0".to_owned(), "x".repeat(500))];
        let sixty = "${k0}".repeat(60);
        pairs.extend((1..=100_000).map(|i| (format!("v{i}"), sixty.clone())));
        let started = std::time::Instant::now();
        let (out, warnings) = resolve_pairs(pairs, &|_| None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let resolved: usize = out.iter().map(|(_, v)| v.len()).sum();
        // 273 values resolved (16 380 placeholders), the rest as written.
        assert_eq!(out.iter().filter(|(_, v)| v.len() == 30_000).count(), 273);
        assert!(resolved < 8 * 1024 * 1024 + 100_000 * 300, "{resolved}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
