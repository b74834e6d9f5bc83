//! A loopback port that refuses connections and stays reserved.
//!
//! A port bound and then released ("nothing listens there now") is free for
//! the next `bind(port 0)` of any test running in parallel in the same
//! process: a test server started a moment later can get it, and a request
//! meant to be refused is answered. A [`ClosedPort`] keeps the port bound but
//! never listens on it: the kernel answers each connect with a reset
//! (connection refused), and no port-0 bind or outgoing connect is given the
//! port while the value lives.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A TCP socket bound to a loopback port (127.0.0.1 unless [`ClosedPort::at`]
/// names another 127.0.0.0/8 address) that never listens. Drop it to release
/// the port.
pub struct ClosedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves a free port of 127.0.0.1.
    pub fn new() -> io::Result<ClosedPort> {
        Self::at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Reserves `addr`, for example the port of a server that just closed
    /// its listener (`SO_REUSEADDR` is set, so connections of that server
    /// still in `TIME_WAIT` do not stop it). Fails if a socket listens there.
    pub fn at(addr: SocketAddr) -> io::Result<ClosedPort> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let addr = socket.local_addr()?;
        Ok(ClosedPort {
            _socket: socket,
            addr,
        })
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}
