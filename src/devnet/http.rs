//! A small HTTP/1.1 server on raw tokio sockets.
//!
//! Hand-rolled instead of a framework because the simulator must misbehave on purpose in ways
//! frameworks hide: stop listening altogether (the daemon's "refuse" mode), process a request
//! and then drop the connection halfway through the answer (a wallet send whose reply is lost),
//! and write bodies byte for byte as the real programs do.
//!
//! One task per connection, keep-alive with a 5 s idle timeout (cpp-httplib's), request bodies
//! by `Content-Length` or chunked, `Expect: 100-continue` honoured, limits on header and body
//! size.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Idle time after which a kept-alive connection is closed (cpp-httplib's default).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Largest request head (request line + headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
const MAX_BODY: usize = 1024 * 1024;

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Headers as sent (names compared case-insensitively through [`Request::header`]).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: SocketAddr,
    /// HTTP/1.0: the connection closes after the answer unless the client asks to keep it.
    pub http10: bool,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Response {
    /// A complete answer. `json` adds `Content-Type: application/json`.
    Complete {
        /// HTTP status.
        status: u16,
        /// Whether the body is JSON.
        json: bool,
        /// The body.
        body: Vec<u8>,
    },
    /// Write these bytes (the start of an answer) and close the connection.
    Broken(Vec<u8>),
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::Complete { status, json: true, body: body.into() }
    }

    /// An answer with an empty body.
    pub fn empty(status: u16) -> Response {
        Response::Complete { status, json: false, body: Vec::new() }
    }
}

/// A request handler.
pub(crate) type Handler = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Binds a listener with `SO_REUSEADDR`, so a port given up in "refuse" mode can be taken again
/// at once.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections on `listener` until `stop` is cancelled; connections end with it too.
pub(crate) async fn serve(listener: TcpListener, handler: Handler, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(stream, peer, handler) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "devnet: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a request could not be read.
enum ReadError {
    /// The peer closed the connection or sent garbage we cannot answer.
    Closed,
    /// A malformed request: answer with this status and close.
    Bad(u16),
}

async fn connection(stream: TcpStream, peer: SocketAddr, handler: Handler) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let request = match tokio::time::timeout(KEEP_ALIVE, read_request(&mut read, &mut write, peer)).await {
            Ok(Ok(request)) => request,
            Ok(Err(ReadError::Bad(status))) => {
                let _ = write_response(&mut write, status, false, &[], true).await;
                return;
            }
            Ok(Err(ReadError::Closed)) | Err(_) => return,
        };
        let close = wants_close(&request);
        match handler(request).await {
            Response::Complete { status, json, body } => {
                if write_response(&mut write, status, json, &body, close).await.is_err() || close {
                    return;
                }
            }
            Response::Broken(bytes) => {
                let _ = write.write_all(&bytes).await;
                let _ = write.flush().await;
                let _ = write.shutdown().await;
                return;
            }
        }
    }
}

fn wants_close(request: &Request) -> bool {
    match request.header("connection") {
        Some(v) if v.eq_ignore_ascii_case("close") => true,
        Some(v) if v.eq_ignore_ascii_case("keep-alive") => false,
        _ => request.http10,
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(read: &mut R, head: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let limit = (MAX_HEAD.saturating_sub(*head) + 1) as u64;
    let n = (&mut *read).take(limit).read_until(b'\n', &mut line).await.map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    *head += n;
    if *head > MAX_HEAD || !line.ends_with(b"\n") {
        return Err(ReadError::Bad(431));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ReadError::Bad(400))
}

async fn read_request<R: AsyncBufRead + Unpin, W: AsyncWriteExt + Unpin>(
    read: &mut R,
    write: &mut W,
    peer: SocketAddr,
) -> Result<Request, ReadError> {
    let mut head = 0;
    let mut line = read_line(read, &mut head).await?;
    // Tolerate empty lines between pipelined requests.
    while line.is_empty() {
        line = read_line(read, &mut head).await?;
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Bad(400));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(ReadError::Bad(400));
    }
    let http10 = version == "HTTP/1.0";
    let path = target.split('?').next().unwrap_or_default().to_string();
    let method = method.to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(read, &mut head).await?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request { method, path, headers, body: Vec::new(), peer, http10 };
    let chunked = request.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match request.header("content-length") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| ReadError::Bad(400))?),
        None => None,
    };
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(ReadError::Bad(413));
    }
    let has_body = chunked || length.is_some_and(|n| n > 0);
    if has_body && request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| ReadError::Closed)?;
    }
    if chunked {
        request.body = read_chunked(read).await?;
    } else if let Some(n) = length {
        let mut body = vec![0u8; n];
        read.read_exact(&mut body).await.map_err(|_| ReadError::Closed)?;
        request.body = body;
    }
    Ok(request)
}

async fn read_chunked<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut head = 0;
        let line = read_line(read, &mut head).await?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ReadError::Bad(400))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                let mut head = 0;
                if read_line(read, &mut head).await?.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413));
        }
        let start = body.len();
        body.resize(start + size, 0);
        read.read_exact(&mut body[start..]).await.map_err(|_| ReadError::Closed)?;
        let mut head = 0;
        if !read_line(read, &mut head).await?.is_empty() {
            return Err(ReadError::Bad(400));
        }
    }
}

/// The reason phrase of the statuses the simulator uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// The status line and headers of an answer with a body of `len` bytes.
pub(crate) fn response_head(status: u16, json: bool, len: usize, close: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if json {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {len}\r\n"));
    if close {
        head.push_str("Connection: close\r\n");
    } else {
        head.push_str("Keep-Alive: timeout=5\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

async fn write_response<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    status: u16,
    json: bool,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut out = response_head(status, json, body.len(), close);
    out.extend_from_slice(body);
    write.write_all(&out).await?;
    write.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Request, u16> {
        let mut read = BufReader::new(raw);
        let mut sink = Vec::new();
        read_request(&mut read, &mut sink, "127.0.0.1:1".parse().unwrap()).await.map_err(|e| match e {
            ReadError::Closed => 0,
            ReadError::Bad(s) => s,
        })
    }

    #[tokio::test]
    async fn parses_length_and_chunked_bodies() {
        let r = parse(b"POST /json_rpc?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd").await.unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), &r.body[..]), ("POST", "/json_rpc", &b"abcd"[..]));
        assert_eq!(r.header("HOST"), Some("a"));
        let r = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.body, b"abcde");
        assert_eq!(parse(b"garbage\r\n\r\n").await.unwrap_err(), 400);
        assert_eq!(parse(b"").await.unwrap_err(), 0);
        let huge = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(parse(huge.as_bytes()).await.unwrap_err(), 413);
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long_header.as_bytes()).await.unwrap_err(), 431);
    }
}
