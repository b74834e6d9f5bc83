//! Spring Boot's conditional YAML documents.
//!
//! A document of a multi-document `application.yml` that carries
//! `spring.config.activate.on-profile` (or the older `spring.profiles`)
//! applies only while one of the profiles it names is active; one that
//! carries `spring.config.activate.on-cloud-platform` only on that
//! platform. Before, every document was read: a `chaos` document retrying
//! POSTs on five more instances applied with no profile active (a POST
//! answered 503 reached 6 servers; helper 201).
//!
//! The active profiles, as Spring Boot's `Profiles` takes them: those the
//! environment variable `SPRING_PROFILES_ACTIVE` names (whitespace
//! removed; the environment beats the file, as the placeholders read it),
//! else those `spring.profiles.active` names in the documents without a
//! condition (the last one that sets it; placeholders resolved); with none,
//! the default profiles: `SPRING_PROFILES_DEFAULT`, else
//! `spring.profiles.default`, else `default` (so `on-profile: default`
//! applies and `!default` does not when nothing is active; helper 205).
//!
//! A profile condition is a comma-separated list of profile names, each
//! possibly negated (`!prod`), met when any of them is; an empty one is
//! always met; an expression with `&`, `|` or parentheses is not read (the
//! document is skipped, with a warning). A cloud platform is `kubernetes`
//! (`KUBERNETES_SERVICE_HOST` and `_PORT` set), `cloud_foundry`
//! (`VCAP_APPLICATION` or `VCAP_SERVICES`), `heroku` (`DYNO`), `sap`
//! (`HC_LANDSCAPE`) or `none` (none of these); others are skipped with a
//! warning. Skipped documents are named in
//! [`RibbonConfig::warnings`](super::RibbonConfig::warnings), at most
//! [`MAX_UNKNOWN_WARNINGS`] of them and a count of the rest.

use std::collections::{HashMap, HashSet};

use super::reader::MAX_UNKNOWN_WARNINGS;

/// `key` in Spring's relaxed form: lower case, no `-` or `_`.
fn relaxed(key: &str) -> String {
    (key.chars())
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
/// A profile condition's key, also as an indexed item
/// (`spring.config.activate.on-profile[0]`, a list as `.properties` files
/// write one; before, such a document was read as unconditional: a chaos
/// document sent a POST to 6 servers; helper 213).
fn is_profile_condition(key: &str) -> bool {
    is_list_key(key, "spring.config.activate.onprofile") || is_list_key(key, "spring.profiles")
}

#[cfg(test)]
fn is_platform_condition(key: &str) -> bool {
    relaxed(key) == "spring.config.activate.oncloudplatform"
}

/// The value of the list key `list` (relaxed) in one document, as Spring's
/// binder reads it: the last plain value, else the indexed items joined
/// with commas in index order; `None` when the document has neither.
fn doc_list(doc: &[(String, String)], list: &str) -> Option<String> {
    let mut plain = None;
    let mut items: Vec<(usize, &str)> = Vec::new();
    for (key, value) in doc {
        let key = relaxed(key);
        if key == list {
            plain = Some(value.clone());
        } else if let Some(index) = key
            .strip_prefix(list)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.strip_suffix(']'))
        {
            items.push((index.parse().unwrap_or(usize::MAX), value));
        }
    }
    join_list(plain.as_deref(), items)
}

/// A list's value from its last plain value, else its indexed items in
/// index order; `None` with neither.
fn join_list(plain: Option<&str>, mut items: Vec<(usize, &str)>) -> Option<String> {
    plain.map(str::to_owned).or_else(|| {
        (!items.is_empty()).then(|| {
            items.sort_by_key(|(i, _)| *i);
            let joined = items.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(",");
            // One blank item joins to nothing: keep it a blank item.
            if joined.trim().is_empty() { ",".to_owned() } else { joined }
        })
    })
}

/// The group lists (`spring.profiles.group.<name>`) one document defines,
/// by the names as written, read as [`doc_list`] reads each, but with
/// every key relaxed once: a `doc_list` per group name re-read the whole
/// document, n² for n groups (2 000 groups in 67 KB took 15.7 s; helper
/// 239).
fn doc_groups(doc: &[(String, String)]) -> Vec<(&str, String)> {
    const PREFIX: &str = "spring.profiles.group.";
    type Found<'d> = (Option<&'d str>, Vec<(usize, &'d str)>);
    let mut found: HashMap<String, Found<'_>> = HashMap::new();
    for (key, value) in doc {
        let key = relaxed(key);
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        match rest.find('[') {
            Some(i) if rest.len() > i + 1 && rest.ends_with(']') => {
                let index = rest.get(i + 1..rest.len() - 1).unwrap_or_default();
                let name = rest.get(..i).unwrap_or_default().to_owned();
                let item = (index.parse().unwrap_or(usize::MAX), value.as_str());
                found.entry(name).or_default().1.push(item);
            }
            _ => found.entry(rest.to_owned()).or_default().0 = Some(value),
        }
    }
    let names: HashSet<&str> = doc.iter().filter_map(|(k, _)| group_name(k)).collect();
    (names.into_iter())
        .filter_map(|name| {
            let (plain, items) = found.get(&relaxed(name))?;
            Some((name, join_list(*plain, items.clone())?))
        })
        .collect()
}

/// A document's profile condition (`on-profile`, else the older
/// `spring.profiles`), as a comma list.
fn profile_condition(doc: &[(String, String)]) -> Option<String> {
    doc_list(doc, "spring.config.activate.onprofile").or_else(|| doc_list(doc, "spring.profiles"))
}

/// Whether `condition` is met with `active` profiles; `None` when it is an
/// expression this reader does not evaluate. Linear in the condition's
/// terms (a set lookup each: `active.contains` on a list made a 96 KB
/// file take 2.7 s; helper 208).
fn met(condition: &str, active: &HashSet<&str>) -> Option<bool> {
    if condition.contains(['&', '|', '(', ')']) {
        return None;
    }
    if condition.trim().is_empty() {
        return Some(true);
    }
    // A blank item (`dev,,prod`, a blank `on-profile[0]`): Spring Boot
    // refuses the file ("must contain text"); skipped here, with a warning
    // (before, a blank indexed condition read as none and applied; helper
    // 217).
    if condition.split(',').any(|t| t.trim().is_empty()) {
        return None;
    }
    let mut terms = condition.split(',').map(str::trim);
    Some(terms.any(|term| match term.strip_prefix('!') {
        Some(name) => !active.contains(name.trim()),
        None => active.contains(term),
    }))
}

/// The most profiles the active set takes, groups expanded: past it the
/// rest are left out (with a warning).
const MAX_PROFILES: usize = 1024;

/// The names of a comma-separated profile list.
fn names(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Whether `key` is `list` (relaxed) or one of its indexed items
/// (`spring.profiles.include[0]`).
fn is_list_key(key: &str, list: &str) -> bool {
    let key = relaxed(key);
    key == list
        || key
            .strip_prefix(list)
            .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']'))
}

/// `spring.profiles.group.<name>` (or an indexed item of it): the group's
/// name as written.
fn group_name(key: &str) -> Option<&str> {
    const PREFIX: &str = "spring.profiles.group.";
    let head = key.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let name = &key[PREFIX.len()..];
    let name = match name.find('[') {
        Some(i) if name.ends_with(']') => &name[..i],
        _ => name,
    };
    (!name.is_empty()).then_some(name)
}

/// `start` and, depth first, the members of each one's group
/// (`spring.profiles.group.<name>`), each once, as Spring Boot's
/// `Profiles.expandProfiles`; at most [`MAX_PROFILES`] (`true` when cut).
fn expand<'a>(start: Vec<&'a str>, groups: &'a HashMap<&'a str, Vec<&'a str>>) -> (Vec<&'a str>, bool) {
    let mut stack: Vec<&str> = start.into_iter().rev().collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while let Some(current) = stack.pop() {
        if !seen.insert(current) {
            continue;
        }
        if out.len() == MAX_PROFILES {
            return (out, true);
        }
        out.push(current);
        if let Some(members) = groups.get(current) {
            stack.extend(members.iter().rev());
        }
    }
    (out, false)
}

/// The cloud platform this process runs on, as Spring Boot's
/// `CloudPlatform` detects the ones read here.
fn platform() -> &'static str {
    let set = |name: &str| std::env::var_os(name).is_some();
    if set("KUBERNETES_SERVICE_HOST") && set("KUBERNETES_SERVICE_PORT") {
        "kubernetes"
    } else if set("VCAP_APPLICATION") || set("VCAP_SERVICES") {
        "cloud_foundry"
    } else if set("DYNO") {
        "heroku"
    } else if set("HC_LANDSCAPE") {
        "sap"
    } else {
        "none"
    }
}

/// Whether the platform condition is met; `None` for a platform not read.
fn on_platform(condition: &str) -> Option<bool> {
    let wanted = relaxed(condition.trim());
    let known = ["kubernetes", "cloudfoundry", "heroku", "sap", "none"];
    known
        .contains(&wanted.as_str())
        .then(|| wanted == relaxed(platform()))
}

/// The active profiles given by `docs` (each with whether it is read
/// before profiles are known: no profile condition, a cloud platform one
/// met), placeholders resolved over them, and whether [`MAX_PROFILES`] cut
/// them. As Spring Boot 3.5 reads them (helpers 213 and 217 ran the same
/// files through it): `spring.profiles.active`, `spring.profiles.default`
/// and a group's members are the last document's list (plain or indexed),
/// **any** document's, one whose condition is not met included; included
/// profiles (`spring.profiles.include`, the environment's and the early
/// documents') join the active ones; groups expand both; with none of
/// either, the default profiles apply (their groups expanded too).
fn active_profiles(docs: &[(&[(String, String)], bool)]) -> (Vec<String>, bool) {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.chars().filter(|c| !c.is_whitespace()).collect::<String>())
    };
    let flat = docs.iter().flat_map(|(doc, _)| doc.iter()).map(|(k, v)| (k, v));
    let (resolved, _) = super::placeholders::resolve_in(flat);
    let mut at = 0;
    let resolved: Vec<(&[(String, String)], bool)> = (docs.iter())
        .map(|(doc, early)| {
            let part = resolved.get(at..at + doc.len()).unwrap_or_default();
            at += doc.len();
            (part, *early)
        })
        .collect();
    let last = |list: &str| resolved.iter().rev().find_map(|(doc, _)| doc_list(doc, list));
    let mut named: Vec<String> = env("SPRING_PROFILES_INCLUDE").into_iter().collect();
    named.extend(
        (resolved.iter())
            .filter(|(_, early)| *early)
            .filter_map(|(doc, _)| doc_list(doc, "spring.profiles.include")),
    );
    let explicit = env("SPRING_PROFILES_ACTIVE")
        .or_else(|| last("spring.profiles.active"))
        .filter(|v| !v.trim().is_empty());
    named.extend(explicit);
    let mut lists: HashMap<String, String> = HashMap::new();
    for (doc, _) in &resolved {
        for (name, members) in doc_groups(doc) {
            lists.insert(name.to_owned(), members);
        }
    }
    let groups: HashMap<&str, Vec<&str>> =
        lists.iter().map(|(name, members)| (name.as_str(), names(members).collect())).collect();
    let defaults = env("SPRING_PROFILES_DEFAULT")
        .or_else(|| last("spring.profiles.default"))
        .unwrap_or_else(|| "default".to_owned());
    let start: Vec<&str> = named.iter().flat_map(|v| names(v)).collect();
    let start = if start.is_empty() { names(&defaults).collect() } else { start };
    let (active, cut) = expand(start, &groups);
    (active.into_iter().map(str::to_owned).collect(), cut)
}

/// The pairs of the documents that apply, in order, and a warning for
/// each one skipped.
pub(crate) fn select(
    documents: Vec<Vec<(String, String)>>,
    kind: &str,
) -> (Vec<(String, String)>, Vec<String>) {
    // A single value in Spring (an enum): an indexed `[0]` is not bound, so
    // only the plain key is a condition (helper 217).
    let cloud_of = |doc: &[(String, String)]| {
        (doc.iter().rev())
            .find(|(k, _)| relaxed(k) == "spring.config.activate.oncloudplatform")
            .map(|(_, v)| v.clone())
    };
    // Read before profiles are known: documents without a profile
    // condition whose platform condition, if any, is met (a platform-only
    // document's `spring.profiles.active` counts; helper 213).
    // Decided once per document: matching each against a list of the
    // early ones was n² (40 000 `.properties` documents took 13 s; helper
    // 239).
    let early = |doc: &[(String, String)]| {
        profile_condition(doc).is_none()
            && cloud_of(doc).is_none_or(|c| on_platform(&c) == Some(true))
    };
    let all: Vec<(&[(String, String)], bool)> =
        (documents.iter()).map(|doc| (doc.as_slice(), early(doc))).collect();
    let (active, cut) = active_profiles(&all);
    let active_value = active.join(",");
    let active: HashSet<&str> = active.iter().map(String::as_str).collect();
    let (mut pairs, mut warnings, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    for (n, doc) in documents.iter().enumerate() {
        let profile = profile_condition(doc);
        let cloud = cloud_of(doc);
        let profile_met = profile.as_deref().map_or(Some(true), |c| met(c, &active));
        let cloud_met = cloud.as_deref().map_or(Some(true), on_platform);
        if profile_met == Some(true) && cloud_met == Some(true) {
            pairs.extend(doc.iter().cloned());
            continue;
        }
        skipped += 1;
        if skipped > MAX_UNKNOWN_WARNINGS {
            continue;
        }
        let why = match (profile_met, cloud_met) {
            (None, _) => "its profile expression is not read".to_owned(),
            (_, None) => "its cloud platform is not one this reader detects".to_owned(),
            (Some(false), _) => format!(
                "no active profile matches (active: `{}`)",
                crate::error::quote(&active_value)
            ),
            _ => format!("this is not that cloud platform (detected: `{}`)", platform()),
        };
        let what = (profile.iter().map(|p| format!("profile `{}`", crate::error::quote(p))))
            .chain(cloud.iter().map(|c| format!("cloud platform `{}`", crate::error::quote(c))))
            .collect::<Vec<_>>()
            .join(", ");
        warnings.push(format!("{kind} document {} ({what}) skipped: {why}", n + 1));
    }
    if skipped > MAX_UNKNOWN_WARNINGS {
        let more = skipped - MAX_UNKNOWN_WARNINGS;
        warnings.push(format!("{more} more conditional {kind} documents skipped"));
    }
    if cut {
        warnings.push(format!(
            "more than {MAX_PROFILES} active profiles (groups expanded); the rest are left out"
        ));
    }
    let included_in_conditional = (documents.iter())
        .filter(|doc| profile_condition(doc).is_some())
        .any(|doc| doc.iter().any(|(k, _)| is_list_key(k, "spring.profiles.include")));
    if included_in_conditional {
        warnings.push(
            "`spring.profiles.include` in a profile-specific document is ignored \
             (Spring Boot refuses it there)"
                .to_owned(),
        );
    }
    (pairs, warnings)
}

#[cfg(test)]
#[path = "profiles_tests.rs"]
mod tests;
