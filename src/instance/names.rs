//! An instance's id, host and health check URL, kept in one allocation.

/// `id`, `host` and the health check URL (if any) one after the other in
/// one string: a registry decode makes thousands of instances, and one
/// allocation for the three is a third of the allocator's work for them.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Names {
    text: Box<str>,
    /// End of the id in `text`.
    id_end: usize,
    /// End of the host in `text`; the URL, if any, is the rest.
    host_end: usize,
    health: bool,
}

impl Names {
    pub(super) fn new(id: &str, host: &str, health: Option<&str>) -> Self {
        let url = health.unwrap_or_default();
        let mut text = String::with_capacity(id.len() + host.len() + url.len());
        text.push_str(id);
        text.push_str(host);
        text.push_str(url);
        Self {
            text: text.into_boxed_str(),
            id_end: id.len(),
            host_end: id.len() + host.len(),
            health: health.is_some(),
        }
    }

    // The ends are where whole strings were joined, so always char
    // boundaries; `get` keeps these free of panics all the same.

    pub(super) fn id(&self) -> &str {
        self.text.get(..self.id_end).unwrap_or_default()
    }

    pub(super) fn host(&self) -> &str {
        self.text
            .get(self.id_end..self.host_end)
            .unwrap_or_default()
    }

    pub(super) fn health_check_url(&self) -> Option<&str> {
        self.health
            .then(|| self.text.get(self.host_end..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn three_strings_in_one() {
        let n = Names::new("i-1", "host.svc", Some("http://h/health"));
        assert_eq!((n.id(), n.host()), ("i-1", "host.svc"));
        assert_eq!(n.health_check_url(), Some("http://h/health"));
        let n = Names::new("", "ü", None);
        assert_eq!((n.id(), n.host(), n.health_check_url()), ("", "ü", None));
        assert_eq!(Names::new("a", "b", Some("")).health_check_url(), Some(""));
    }
}
