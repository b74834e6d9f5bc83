//! Spring Boot's profile-specific YAML documents.
//!
//! A document of a multi-document `application.yml` that carries
//! `spring.config.activate.on-profile` (or the older `spring.profiles`)
//! applies only while one of the profiles it names is active. The active
//! profiles are those the environment variable `SPRING_PROFILES_ACTIVE`
//! names (as the placeholders read the environment; Spring's environment
//! beats the file), else those `spring.profiles.active` names in the
//! documents without such a condition (the last one that sets it). Before,
//! every document was read:
//! a `chaos` document retrying POSTs on five more instances applied with no
//! profile active (a POST answered 503 reached 6 servers; helper 201).
//!
//! A condition is a comma-separated list of profile names, each possibly
//! negated (`!prod`), met when any of them is; an expression with `&`, `|`
//! or parentheses is not read (the document is skipped, with a warning).
//! Each skipped document is named in [`RibbonConfig::warnings`](super::RibbonConfig::warnings).

/// A document's profile condition key, in Spring's relaxed forms.
fn is_condition(key: &str) -> bool {
    let key: String = (key.chars())
        .filter(|c| !matches!(c, '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    key == "spring.config.activate.onprofile" || key == "spring.profiles"
}

fn is_active_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("spring.profiles.active")
}

/// Whether `condition` is met with `active` profiles; `None` when it is an
/// expression this reader does not evaluate.
fn met(condition: &str, active: &[&str]) -> Option<bool> {
    if condition.contains(['&', '|', '(', ')']) {
        return None;
    }
    let terms = condition.split(',').map(str::trim).filter(|t| !t.is_empty());
    let mut any = false;
    for term in terms {
        any |= match term.strip_prefix('!') {
            Some(name) => !active.contains(&name.trim()),
            None => active.contains(&term),
        };
    }
    Some(any)
}

/// The pairs of the documents that apply, in order, and a warning for
/// each one skipped.
pub(crate) fn select(documents: Vec<Vec<(String, String)>>) -> (Vec<(String, String)>, Vec<String>) {
    let condition_of = |doc: &[(String, String)]| {
        doc.iter()
            .rev()
            .find(|(k, _)| is_condition(k))
            .map(|(_, v)| v.clone())
    };
    let from_file = || {
        documents
            .iter()
            .filter(|doc| condition_of(doc).is_none())
            .flat_map(|doc| doc.iter().filter(|(k, _)| is_active_key(k)))
            .next_back()
            .map(|(_, v)| v.clone())
    };
    let active_value = std::env::var("SPRING_PROFILES_ACTIVE")
        .ok()
        .or_else(from_file)
        .unwrap_or_default();
    let active: Vec<&str> = (active_value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let (mut pairs, mut warnings) = (Vec::new(), Vec::new());
    for (n, doc) in documents.iter().enumerate() {
        let Some(condition) = condition_of(doc) else {
            pairs.extend(doc.iter().cloned());
            continue;
        };
        let quoted = crate::error::quote(&condition);
        match met(&condition, &active) {
            Some(true) => pairs.extend(doc.iter().cloned()),
            Some(false) => warnings.push(format!(
                "YAML document {} (profile `{quoted}`) skipped: no active profile matches \
                 (`spring.profiles.active`: `{}`)",
                n + 1,
                crate::error::quote(&active_value)
            )),
            None => warnings.push(format!(
                "YAML document {} (profile `{quoted}`) skipped: profile expressions are not read",
                n + 1
            )),
        }
    }
    (pairs, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn documents_apply_by_the_active_profiles() {
        let docs = || {
            vec![
                doc(&[("a", "1"), ("spring.profiles.active", "dev, eu")]),
                doc(&[("spring.config.activate.on-profile", "dev"), ("a", "2")]),
                doc(&[("spring.config.activate.on-profile", "prod"), ("a", "3")]),
                doc(&[("spring.profiles", "!prod"), ("b", "4")]),
                doc(&[("Spring.Config.Activate.OnProfile", "x,eu"), ("c", "5")]),
                doc(&[("spring.config.activate.on-profile", "dev & eu"), ("d", "6")]),
            ]
        };
        let (pairs, warnings) = select(docs());
        let keys: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| !is_condition(k) && !is_active_key(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(keys, [("a", "1"), ("a", "2"), ("b", "4"), ("c", "5")]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("YAML document 3 (profile `prod`) skipped"));
        assert!(warnings[1].contains("expressions are not read"));
        // No active profile: only the unconditioned documents and `!prod`.
        let mut none = docs();
        none[0].pop();
        let (pairs, _) = select(none);
        assert!(pairs.iter().all(|(k, v)| k != "a" || v == "1"));
        assert!(pairs.iter().any(|(k, _)| k == "b"));
    }
}
