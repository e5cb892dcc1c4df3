//! Connecting at scale: bind-before-connect from one of many loopback source addresses (each
//! has its own ephemeral port range), `TCP_NODELAY` like xmrig, and failure reasons named by
//! errno so a report says *why* connections failed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Opens a connection to `pool`, from `source` if given.
pub async fn connect(pool: SocketAddr, source: Option<Ipv4Addr>, timeout: Duration) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| io_reason(&e))?;
    if let Some(ip) = source {
        // Choose the source port at connect time, per destination: without this each bind takes
        // a port for good and one address runs out after ~28k connections.
        let one: libc::c_int = 1;
        // SAFETY: valid socket fd, option value is a c_int of the given size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).map_err(|e| io_reason(&e))?;
    }
    let stream = match tokio::time::timeout(timeout, socket.connect(pool)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(io_reason(&e)),
        Err(_) => return Err("timeout".into()),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A short, stable name for an I/O error: the errno for the ones that matter at scale.
pub fn io_reason(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE (process open-file limit)",
        Some(libc::ENFILE) => "ENFILE (system open-file limit)",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL (no free source port)",
        Some(libc::EADDRINUSE) => "EADDRINUSE",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENOMEM) => "ENOMEM",
        _ => return format!("{:?}", e.kind()),
    };
    name.to_string()
}

/// Parses `127.0.0.2-127.0.0.65`, `127.0.0.5` or a comma list of those into addresses.
pub fn parse_sources(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--source-ips: {part:?} is not an IPv4 address or FIRST-LAST range");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
                let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a > 65_535 {
                    return Err(format!("--source-ips: range {part:?} is empty or larger than 65536 addresses"));
                }
                out.extend((a..=b).map(Ipv4Addr::from));
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_ranges() {
        let v = parse_sources("127.0.0.2-127.0.0.4, 127.0.1.1").unwrap();
        assert_eq!(v, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.1.1"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(parse_sources("127.0.0.255-127.0.1.0").unwrap().len(), 2);
        assert!(parse_sources("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_sources("localhost").is_err());
        assert!(parse_sources("").unwrap().is_empty());
    }

    #[test]
    fn names_errors_by_errno() {
        assert_eq!(io_reason(&std::io::Error::from_raw_os_error(libc::EMFILE)), "EMFILE (process open-file limit)");
        assert_eq!(io_reason(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED)), "ECONNREFUSED");
        assert_eq!(io_reason(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)), "UnexpectedEof");
    }

    #[tokio::test]
    async fn connects_from_a_chosen_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().1 });
        let _stream = connect(addr, Some("127.0.0.7".parse().unwrap()), Duration::from_secs(5)).await.unwrap();
        assert_eq!(accept.await.unwrap().ip(), "127.0.0.7".parse::<IpAddr>().unwrap());
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert_eq!(connect(closed, None, Duration::from_secs(5)).await.unwrap_err(), "ECONNREFUSED");
    }
}
