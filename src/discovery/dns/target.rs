//! What a service id resolves to: a host (A/AAAA) or an SRV name.



use super::error::DnsError;
use super::records::shorten;

/// What a service id resolves to.
///
/// ```
/// use tower_ribbon::discovery::dns::DnsTarget;
///
/// assert_eq!(DnsTarget::parse("users:8080").unwrap(), DnsTarget::host("users", 8080));
/// assert_eq!(
///     DnsTarget::parse("_http._tcp.users").unwrap(),
///     DnsTarget::srv("_http._tcp.users")
/// );
/// assert!(DnsTarget::parse("users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub(super) kind: TargetKind,
    pub(super) secure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TargetKind {
    Host { name: String, port: u16 },
    Srv { name: String },
}

impl DnsTarget {
    /// A/AAAA records of `name`, every address at `port` (a Kubernetes
    /// headless service). Port 0 is refused by
    /// [`DnsSource::set_service`](super::DnsSource::set_service) with
    /// [`DnsError::PortZero`], and an IPv4 or IPv6 address for `name` with
    /// [`DnsError::InvalidName`] (list addresses with
    /// [`StaticSource`](crate::discovery::StaticSource)).
    pub fn host(name: impl Into<String>, port: u16) -> Self {
        Self {
            kind: TargetKind::Host {
                name: name.into(),
                port,
            },
            secure: false,
        }
    }

    /// SRV records of `name` (`_http._tcp.users`), with their ports,
    /// priorities and weights.
    pub fn srv(name: impl Into<String>) -> Self {
        Self {
            kind: TargetKind::Srv { name: name.into() },
            secure: false,
        }
    }

    /// `name:port` is a host target, a name starting with `_` an SRV
    /// target.
    ///
    /// # Errors
    /// [`DnsError::PortZero`] for port 0; [`DnsError::InvalidName`] for
    /// anything else (no port, not a number).
    pub fn parse(text: &str) -> Result<Self, DnsError> {
        let text = text.trim();
        if text.starts_with('_') {
            return Ok(Self::srv(text));
        }
        let invalid = |reason: &'static str| DnsError::InvalidName {
            name: shorten(text),
            reason,
        };
        let (name, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected `name:port` or `_service._proto.name`"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("port is not in 1..=65535"))?;
        let target = Self::host(name, port);
        target.check_port()?;
        Ok(target)
    }

    /// [`DnsError::PortZero`] for a host target at port 0.
    pub(super) fn check_port(&self) -> Result<(), DnsError> {
        match &self.kind {
            TargetKind::Host { name, port: 0 } => Err(DnsError::PortZero {
                name: shorten(name),
            }),
            _ => Ok(()),
        }
    }

    /// Requests go over `https`. Default `false`.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The name looked up.
    pub fn name(&self) -> &str {
        match &self.kind {
            TargetKind::Host { name, .. } | TargetKind::Srv { name } => name,
        }
    }

    /// Whether this is an SRV target.
    pub fn is_srv(&self) -> bool {
        matches!(self.kind, TargetKind::Srv { .. })
    }
}
