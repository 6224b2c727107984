//! Sending datagrams to the StatsD server without blocking the runtime: the host is
//! resolved before every send (`tokio::net::lookup_host`, with a deadline) so DNS changes
//! are followed, and a tokio UDP socket *connected* to the address is kept while the
//! address stays the same — a connected socket is what reports ICMP "port unreachable"
//! (as `ConnectionRefused` on a later send). A failing server is logged once when it
//! starts failing and once when it recovers; every send is tried regardless.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// A change of the server's state worth one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Failing(String),
    Recovered,
}

/// The connection to one StatsD server.
pub struct Transport {
    sink: Arc<str>,
    host: String,
    port: u16,
    every: Duration,
    socket: Option<(SocketAddr, UdpSocket)>,
    failing: bool,
}

impl Transport {
    pub fn new(sink: Arc<str>, host: &str, port: u16, every: Duration) -> Self {
        Self {
            sink,
            host: host.to_string(),
            port,
            every,
            socket: None,
            failing: false,
        }
    }

    /// `host:port` as configured.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends `datagrams`, logs a change of state, and returns that change.
    pub async fn send_and_log(
        &mut self,
        datagrams: &[String],
        resolve_timeout: Duration,
    ) -> Option<Transition> {
        let result = self.send(datagrams, resolve_timeout).await;
        let transition = self.observe(result);
        match &transition {
            Some(Transition::Failing(error)) => tracing::warn!(
                sink = %self.sink,
                target = %self.target(),
                %error,
                "cannot send to the StatsD server; retrying every {} (logged once until it recovers)",
                humantime_serde::re::humantime::format_duration(self.every),
            ),
            Some(Transition::Recovered) => {
                tracing::info!(sink = %self.sink, target = %self.target(), "sending to the StatsD server again")
            }
            None => {}
        }
        transition
    }

    fn observe(&mut self, result: Result<usize, String>) -> Option<Transition> {
        match result {
            Err(e) => {
                tracing::debug!(sink = %self.sink, error = %e, "StatsD send failed");
                (!std::mem::replace(&mut self.failing, true)).then_some(Transition::Failing(e))
            }
            Ok(_) => std::mem::replace(&mut self.failing, false).then_some(Transition::Recovered),
        }
    }

    /// Resolves, (re)connects when the address changed, sends every datagram. Returns how
    /// many were sent, or the last error when any send failed.
    pub async fn send(
        &mut self,
        datagrams: &[String],
        resolve_timeout: Duration,
    ) -> Result<usize, String> {
        let addr = self.resolve(resolve_timeout).await?;
        let socket = self
            .socket_for(addr)
            .await
            .map_err(|e| format!("{addr}: cannot open a UDP socket: {e}"))?;
        let mut sent = 0;
        let mut error: Option<io::Error> = None;
        for d in datagrams {
            match socket.send(d.as_bytes()).await {
                Ok(_) => sent += 1,
                Err(e) => {
                    // A refused send reports the ICMP error of an earlier datagram; this
                    // one was not sent: try it once more.
                    if e.kind() == io::ErrorKind::ConnectionRefused
                        && socket.send(d.as_bytes()).await.is_ok()
                    {
                        sent += 1;
                    }
                    error = Some(e);
                }
            }
        }
        match error {
            None => Ok(sent),
            Some(e) => {
                if e.kind() != io::ErrorKind::ConnectionRefused {
                    // Start afresh next time (e.g. the route or the interface changed).
                    self.socket = None;
                }
                Err(format!("{addr}: {e}"))
            }
        }
    }

    async fn resolve(&self, timeout: Duration) -> Result<SocketAddr, String> {
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(timeout, lookup).await {
            Err(_) => {
                return Err(format!(
                    "resolving `{}` took longer than {timeout:?}",
                    self.host
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot resolve `{}`: {e}", self.host)),
            Ok(Ok(addrs)) => addrs.collect(),
        };
        // Keep the current address while DNS still lists it (round-robin records).
        if let Some((current, _)) = &self.socket {
            if addrs.contains(current) {
                return Ok(*current);
            }
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| format!("`{}` resolves to no address", self.host))
    }

    async fn socket_for(&mut self, addr: SocketAddr) -> io::Result<&UdpSocket> {
        let reuse = matches!(&self.socket, Some((a, _)) if *a == addr);
        if !reuse {
            self.socket = None;
            let local: SocketAddr = if addr.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(addr).await?;
            self.socket = Some((addr, socket));
        }
        match &self.socket {
            Some((_, s)) => Ok(s),
            None => Err(io::Error::other("no socket")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    async fn recv_all(rx: &UdpSocket) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv(&mut buf)).await
        {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[tokio::test]
    async fn sends_real_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let mut t = Transport::new("statsd".into(), "localhost", port, T);
        // `localhost` may resolve to ::1 first; use the literal to be sure of the family.
        t.host = "127.0.0.1".into();
        let d = vec!["a:1|g".to_string(), "b:2|g\nc:3|c".to_string()];
        assert_eq!(t.send(&d, T).await, Ok(2));
        assert_eq!(recv_all(&rx).await, d);
    }

    #[tokio::test]
    async fn a_closed_port_is_logged_once_then_its_recovery_once() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut t = Transport::new("statsd".into(), "127.0.0.1", port, T);
        let d = vec!["a:1|g".to_string()];
        let mut transitions = Vec::new();
        for _ in 0..4 {
            transitions.extend(t.send_and_log(&d, T).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(transitions.len(), 1, "{transitions:?}");
        assert!(
            matches!(&transitions[0], Transition::Failing(e) if e.contains("refused")),
            "{transitions:?}"
        );
        // The server comes up on that port.
        let Ok(rx) = UdpSocket::bind(("127.0.0.1", port)).await else {
            return;
        };
        let mut after = Vec::new();
        for _ in 0..3 {
            after.extend(t.send_and_log(&d, T).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(after, vec![Transition::Recovered]);
        assert!(!recv_all(&rx).await.is_empty());
    }

    #[tokio::test]
    async fn an_unresolvable_host_fails_without_panicking() {
        let mut t = Transport::new("statsd".into(), "no-such-host.invalid", 8125, T);
        let d = vec!["a:1|g".to_string()];
        let first = t.send_and_log(&d, T).await;
        assert!(
            matches!(&first, Some(Transition::Failing(e)) if e.contains("no-such-host.invalid")),
            "{first:?}"
        );
        assert_eq!(t.send_and_log(&d, T).await, None, "logged once");
    }

    #[test]
    fn targets_print_like_addresses() {
        assert_eq!(
            Transport::new("s".into(), "::1", 8125, T).target(),
            "[::1]:8125"
        );
        assert_eq!(
            Transport::new("s".into(), "stats", 8125, T).target(),
            "stats:8125"
        );
    }
}
