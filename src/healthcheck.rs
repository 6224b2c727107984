//! `vadvisor --healthcheck [URL]`: a tiny HTTP probe of `/healthz` for container
//! `HEALTHCHECK`s, so the image needs no curl. Exit 0 when the agent answers 200.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// Where a running agent records the address its HTTP server bound, so that a probe
/// started without arguments (a container HEALTHCHECK) finds it even when `--port` or
/// `--listen` were given to the agent only.
pub const ADDRESS_FILE: &str = "/run/vadvisor/http-address";

/// Records the bound address (best effort: the probe falls back to the config).
pub fn record_address(addr: std::net::SocketAddr) {
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let url = format!(
        "http://{}/healthz",
        std::net::SocketAddr::new(host, addr.port())
    );
    let path = Path::new(ADDRESS_FILE);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, url) {
        tracing::debug!(error = %e, file = ADDRESS_FILE, "cannot record the HTTP address for --healthcheck");
    }
}

/// Removes the record at shutdown (only if it is still ours).
pub fn forget_address(addr: std::net::SocketAddr) {
    if std::fs::read_to_string(ADDRESS_FILE)
        .is_ok_and(|u| u.ends_with(&format!(":{}/healthz", addr.port())))
    {
        let _ = std::fs::remove_file(ADDRESS_FILE);
    }
}

/// The URL a probe without arguments uses: the recorded one, else the config's port.
pub fn default_url(config_port: u16) -> String {
    std::fs::read_to_string(ADDRESS_FILE)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s.starts_with("http://"))
        .unwrap_or_else(|| format!("http://127.0.0.1:{config_port}/healthz"))
}

/// Probes `http://host:port/path`; returns a message on failure.
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/healthz"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {authority}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{url} answered `{}`",
            status_line.lines().next().unwrap_or("")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn accepts_200_and_rejects_others() {
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\n\r\n{}", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                // Read the whole request head before answering and closing: answering
                // after a partial read made the probe's own write fail (broken pipe).
                let mut head = Vec::new();
                let mut buf = [0u8; 256];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                s.write_all(answer.as_bytes()).unwrap();
            });
            let r = probe(
                &format!("http://127.0.0.1:{port}/healthz"),
                Duration::from_secs(2),
            );
            assert_eq!(r.is_ok(), ok, "{r:?}");
            server.join().unwrap();
        }
        assert!(probe("http://127.0.0.1:1/healthz", Duration::from_millis(200)).is_err());
        assert!(probe("https://x/", Duration::from_millis(200)).is_err());
    }
}
