//! A response's connection, by the addresses hyper-util's connector notes
//! in its extensions (`HttpInfo`), for counting lost streams once per
//! connection (`stats::lost`).

/// A 64-bit identity of the connection whose `HttpInfo` `extensions`
/// carry: the local port and address (unique among a host's open
/// connections to one remote address) with the remote one, packed (ports
/// in the high 32 bits, the addresses' low 32 bits folded below). Two
/// connections share it only if they share both ports and their
/// addresses fold alike. `None` without an `HttpInfo` (or with the
/// features that bring hyper-util off).
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
#[inline]
pub(super) fn id(extensions: &http::Extensions) -> Option<u64> {
    let info = extensions.get::<hyper_util::client::legacy::connect::HttpInfo>()?;
    Some(pack(info.local_addr(), info.remote_addr()))
}

/// The identity of the connection from `local` to `remote` (see [`id`]).
#[cfg_attr(
    not(any(feature = "hyper-util", feature = "reqwest")),
    allow(dead_code)
)]
fn pack(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> u64 {
    use std::net::IpAddr;
    fn fold(ip: IpAddr) -> u64 {
        match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                (bits as u64) ^ ((bits >> 64) as u64) ^ ((bits >> 32) as u64)
            }
        }
    }
    let ports = (u64::from(local.port()) << 48) | (u64::from(remote.port()) << 32);
    let addresses = (fold(local.ip()) ^ fold(remote.ip()).rotate_left(7)) & 0xffff_ffff;
    ports | addresses
}

/// Without hyper-util, no response carries its connection.
#[cfg(not(any(feature = "hyper-util", feature = "reqwest")))]
#[inline]
pub(super) fn id(_extensions: &http::Extensions) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    fn pack(local: &str, remote: &str) -> u64 {
        super::pack(local.parse().unwrap(), remote.parse().unwrap())
    }

    #[test]
    fn connections_differ_by_either_port_or_address() {
        let one = pack("127.0.0.1:40000", "127.0.0.1:8080");
        assert_eq!(one, pack("127.0.0.1:40000", "127.0.0.1:8080"));
        assert_eq!(one >> 32, (40_000 << 16) | 8_080);
        let others = [
            pack("127.0.0.1:40001", "127.0.0.1:8080"),
            pack("127.0.0.1:40000", "127.0.0.1:8081"),
            pack("127.0.0.2:40000", "127.0.0.1:8080"),
            pack("127.0.0.1:40000", "10.0.0.1:8080"),
            pack("[::1]:40000", "[::1]:8080"),
        ];
        assert!(others.iter().all(|&other| other != one), "{others:?}");
        assert_ne!(
            pack("[::1]:40000", "[::2]:8080"),
            pack("[::1]:40000", "[::3]:8080")
        );
    }

    #[test]
    fn none_without_http_info() {
        assert_eq!(super::id(&http::Extensions::new()), None);
    }
}
