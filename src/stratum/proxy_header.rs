//! The PROXY protocol header that HAProxy and cloud load balancers put in front of a
//! connection to pass on the client's address (HAProxy's `proxy-protocol.txt`: v1 is one text
//! line, v2 a binary block), and the first-bytes sniff that tells a header, a TLS handshake and
//! a plain stratum line apart.
//!
//! Pure functions over the bytes peeked so far: they say "need more", "here is the header and
//! its length" or why the bytes are not acceptable, so the transport never consumes a byte that
//! belongs to the miner.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 header starts with.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (the protocol's own bound).
pub const V1_MAX: usize = 107;
/// Longest v2 header accepted: the 16 fixed bytes and up to 1024 bytes of addresses and TLVs
/// (load balancers send well under 300; a longer one is refused, not buffered).
pub const V2_MAX: usize = 16 + 1024;
/// The TLS record type of a handshake: the first byte a TLS client sends.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Too few bytes to tell (they are a prefix of a PROXY signature, or none at all).
    NeedMore,
    /// A PROXY v1 header.
    ProxyV1,
    /// A PROXY v2 header.
    ProxyV2,
    /// A TLS handshake.
    Tls,
    /// Anything else: a plain stratum line.
    Plain,
}

/// Classifies the first bytes of a connection.
pub fn sniff(first: &[u8]) -> Sniff {
    if first.is_empty() {
        return Sniff::NeedMore;
    }
    let n = first.len();
    if first[..n.min(V1_PREFIX.len())] == V1_PREFIX[..n.min(V1_PREFIX.len())] {
        return if n >= V1_PREFIX.len() { Sniff::ProxyV1 } else { Sniff::NeedMore };
    }
    if first[..n.min(V2_SIGNATURE.len())] == V2_SIGNATURE[..n.min(V2_SIGNATURE.len())] {
        return if n >= V2_SIGNATURE.len() { Sniff::ProxyV2 } else { Sniff::NeedMore };
    }
    if first[0] == TLS_HANDSHAKE {
        Sniff::Tls
    } else {
        Sniff::Plain
    }
}

/// The address a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address.
    Client(SocketAddr),
    /// No client address (v1 `UNKNOWN`, v2 `LOCAL` health checks, v2 unspecified or Unix
    /// families): the connection's own address stands.
    Connection,
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: what to consume before the miner's first byte.
    pub len: usize,
    /// The address it names.
    pub source: Source,
}

/// Why bytes that start like a header are not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes do not start with a PROXY signature.
    #[error("not a PROXY header")]
    NotProxy,
    /// A v1 line that breaks the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v2 block that breaks the grammar.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// Longer than [`V1_MAX`] / [`V2_MAX`].
    #[error("PROXY header too long")]
    TooLong,
}

/// Parses the header at the start of `buf`: `Ok(None)` while more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    match sniff(buf) {
        Sniff::NeedMore => Ok(None),
        Sniff::ProxyV1 => parse_v1(buf),
        Sniff::ProxyV2 => parse_v2(buf),
        Sniff::Tls | Sniff::Plain => Err(HeaderError::NotProxy),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= V1_MAX {
            return Err(HeaderError::TooLong);
        }
        // A lone LF or a control byte can never become a valid line: refuse early.
        if window.iter().any(|&b| !(b == b'\r' || (0x20..0x7f).contains(&b))) {
            return Err(HeaderError::V1("not printable ASCII"));
        }
        return Ok(None);
    };
    if window[..end].iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err(HeaderError::V1("not printable ASCII"));
    }
    let line = std::str::from_utf8(&window[..end]).map_err(|_| HeaderError::V1("not ASCII"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let source = match fields.next() {
        // The rest of an UNKNOWN line is to be ignored.
        Some("UNKNOWN") => return Ok(Some(Header { len, source: Source::Connection })),
        Some("TCP4") => {
            let (src, _dst) = (v1_field::<Ipv4Addr>(fields.next())?, v1_field::<Ipv4Addr>(fields.next())?);
            IpAddr::V4(src)
        }
        Some("TCP6") => {
            let (src, _dst) = (v1_field::<Ipv6Addr>(fields.next())?, v1_field::<Ipv6Addr>(fields.next())?);
            IpAddr::V6(src)
        }
        _ => return Err(HeaderError::V1("protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    let sport = v1_port(fields.next())?;
    let _dport = v1_port(fields.next())?;
    if fields.next().is_some() {
        return Err(HeaderError::V1("extra fields"));
    }
    Ok(Some(Header { len, source: Source::Client(SocketAddr::new(source, sport)) }))
}

fn v1_field<T: std::str::FromStr>(field: Option<&str>) -> Result<T, HeaderError> {
    field.and_then(|f| f.parse().ok()).ok_or(HeaderError::V1("bad address"))
}

fn v1_port(field: Option<&str>) -> Result<u16, HeaderError> {
    match field {
        // The grammar has no signs and no leading zeros.
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && (f == "0" || !f.starts_with('0')) => {
            f.parse().map_err(|_| HeaderError::V1("port out of range"))
        }
        _ => Err(HeaderError::V1("bad port")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(HeaderError::V2("version must be 2"));
    }
    if command > 1 {
        return Err(HeaderError::V2("command must be LOCAL or PROXY"));
    }
    let family = buf[13] >> 4;
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > V2_MAX {
        return Err(HeaderError::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[16..len];
    if command == 0 {
        return Ok(Some(Header { len, source: Source::Connection }));
    }
    let source = match family {
        // AF_INET: source, destination addresses, then source and destination ports.
        1 => {
            let a = body.get(..12).ok_or(HeaderError::V2("address block too short for IPv4"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Source::Client(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]])))
        }
        // AF_INET6.
        2 => {
            let a = body.get(..36).ok_or(HeaderError::V2("address block too short for IPv6"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Source::Client(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([a[32], a[33]])))
        }
        // AF_UNSPEC and AF_UNIX carry no usable client IP.
        0 | 3 => Source::Connection,
        _ => return Err(HeaderError::V2("unknown address family")),
    };
    Ok(Some(Header { len, source }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v1(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!("PROXY {family} {} {} {} {}\r\n", source.ip(), dest.ip(), source.port(), dest.port()).into_bytes()
    }

    fn v2_addresses(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
        let mut body = Vec::new();
        let family = match (source.ip(), dest.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
                0x11
            }
            (s, d) => {
                let v6 = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                body.extend_from_slice(&v6(s).octets());
                body.extend_from_slice(&v6(d).octets());
                0x21
            }
        };
        body.extend_from_slice(&source.port().to_be_bytes());
        body.extend_from_slice(&dest.port().to_be_bytes());
        v2(1, family, &body)
    }

    fn same_family() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| (
                SocketAddr::new(IpAddr::from(s), sp),
                SocketAddr::new(IpAddr::from(d), dp)
            )),
            (any::<[u8; 16]>(), any::<u16>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| (
                SocketAddr::new(IpAddr::from(s), sp),
                SocketAddr::new(IpAddr::from(d), dp)
            )),
        ]
    }

    proptest! {
        /// Any v1 or v2 header names its source and is exactly its own length, whatever the
        /// miner sends after it; every strict prefix is incomplete.
        #[test]
        fn headers_round_trip((source, dest) in same_family(), tail in proptest::collection::vec(any::<u8>(), 0..64), v2_form: bool) {
            let header = if v2_form { v2_addresses(source, dest) } else { v1(source, dest) };
            let mut input = header.clone();
            input.extend_from_slice(&tail);
            let parsed = parse(&input).unwrap().unwrap();
            prop_assert_eq!(parsed.len, header.len());
            let expected = if v2_form && source.is_ipv4() != dest.is_ipv4() {
                match source.ip() { IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), source.port()), _ => source }
            } else {
                source
            };
            prop_assert_eq!(parsed.source, Source::Client(expected));
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&header[..cut]), Ok(None));
            }
        }

        /// Arbitrary bytes never panic; an accepted header never claims more than was read.
        #[test]
        fn arbitrary_bytes_are_refused_or_bounded(input in proptest::collection::vec(any::<u8>(), 0..256), signature: bool) {
            let mut bytes = if signature { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
            bytes.extend_from_slice(&input);
            for candidate in [&input[..], &bytes[..]] {
                if let Ok(Some(header)) = parse(candidate) {
                    prop_assert!(header.len <= candidate.len());
                }
            }
        }
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn sniff_tells_header_tls_and_plain_apart() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"PRO"), Sniff::NeedMore);
        assert_eq!(sniff(b"PROXY TCP4"), Sniff::ProxyV1);
        assert_eq!(sniff(&V2_SIGNATURE[..5]), Sniff::NeedMore);
        assert_eq!(sniff(&V2_SIGNATURE), Sniff::ProxyV2);
        assert_eq!(sniff(&[0x16, 0x03, 0x01]), Sniff::Tls);
        assert_eq!(sniff(b"{\"id\":1"), Sniff::Plain);
        assert_eq!(sniff(b"PROXX"), Sniff::Plain);
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 3333\r\n{\"id\":1}").unwrap().unwrap();
        assert_eq!(h.len, 44);
        assert_eq!(h.source, Source::Client("203.0.113.7:51234".parse().unwrap()));
        let h = parse(b"PROXY TCP6 2001:db8::1 ::1 4000 3333\r\n").unwrap().unwrap();
        assert_eq!(h.source, Source::Client("[2001:db8::1]:4000".parse().unwrap()));
        let h = parse(b"PROXY UNKNOWN whatever\r\n").unwrap().unwrap();
        assert_eq!((h.len, h.source), (24, Source::Connection));
    }

    #[test]
    fn v1_incomplete_then_invalid() {
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"), Ok(None));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n"), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4\n"), Err(HeaderError::V1(_))));
        let mut long = b"PROXY ".to_vec();
        long.resize(V1_MAX, b'a');
        assert_eq!(parse(&long), Err(HeaderError::TooLong));
    }

    /// Found by `cargo run --example fuzz -- proxy_header` (seed 1): an UNKNOWN line with a lone
    /// LF before its CRLF was accepted whole, while its prefix was refused.
    #[test]
    fn regression_v1_line_with_a_lone_line_feed_is_refused() {
        let input =
            hex::decode("50524f585920554e4b4e4f574e20554e4b460a0d0a000d0a515549540a2111000cc63364090a002000019c400d05")
                .unwrap();
        assert!(matches!(parse(&input), Err(HeaderError::V1(_))));
        assert!(matches!(parse(b"PROXY UNKNOWN a\tb\r\n"), Err(HeaderError::V1(_))));
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&3333u16.to_be_bytes());
        let bytes = v2(1, 0x11, &body);
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.len, 28);
        assert_eq!(h.source, Source::Client("198.51.100.9:40000".parse().unwrap()));
        // TLVs after the addresses are skipped with the header.
        let mut with_tlv = body.clone();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert_eq!(parse(&v2(1, 0x11, &with_tlv)).unwrap().unwrap().len, 32);
        let mut body6 = vec![0u8; 36];
        body6[0] = 0x20;
        body6[1] = 0x01;
        body6[15] = 5;
        body6[32..34].copy_from_slice(&5555u16.to_be_bytes());
        let h = parse(&v2(1, 0x21, &body6)).unwrap().unwrap();
        assert_eq!(h.source, Source::Client("[2001::5]:5555".parse().unwrap()));
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().source, Source::Connection);
        assert_eq!(parse(&v2(1, 0x00, &[])).unwrap().unwrap().source, Source::Connection);
    }

    #[test]
    fn v2_incomplete_and_invalid() {
        let bytes = v2(1, 0x11, &[0; 12]);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(&v2(1, 0x11, &[0; 11])), Err(HeaderError::V2(_))));
        assert!(matches!(parse(&v2(2, 0x11, &[0; 12])), Err(HeaderError::V2(_))));
        assert!(matches!(parse(&v2(1, 0x41, &[0; 12])), Err(HeaderError::V2(_))));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Err(HeaderError::V2(_))));
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&huge), Err(HeaderError::TooLong));
    }
}
