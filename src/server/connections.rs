//! Who serves a TCP connection.
//!
//! hyper (through `axum::serve`) serves pages, server functions, files and
//! webhooks. A connection whose first request is a plain
//! `GET /api/events` (an `EventSource` opening or reconnecting) is served
//! by [`Connections`] itself: the request still goes through the whole
//! [`Router`] with its layers, and only the writing of the response is
//! Knock's own. The reason is memory: hyper keeps an 8 KiB read buffer and
//! an 8 KiB header buffer for every HTTP/1 connection for as long as it is
//! open (its `max_buf_size` cannot go below 8 KiB), which is most of what an
//! idle event stream costs. Here a stream keeps no buffer: its response
//! head is written and freed, and each event's frame is written as the
//! body yields it, with one write (`docs/benchmarks.md`, eighth round).
//!
//! The decision is made by looking at the request without taking it from
//! the socket (`MSG_PEEK`); anything unusual (another method or path,
//! a request body, `Upgrade`, `Expect`, an oversize or malformed head, a
//! first byte later than [`FIRST_BYTES_WAIT`] or the rest of the head
//! later than [`HEAD_WAIT`]) goes to hyper
//! untouched, which answers it as it would any request. A stream that is
//! not the first request of its connection (a browser reusing an idle
//! keep-alive connection) is served by hyper too, in the same way.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header},
};
use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};
use tower::ServiceExt;

/// How long a new connection may take to send the start of its first
/// request before it goes to hyper as it is (hyper then applies its own
/// limits; a browser's preconnected socket may stay silent for seconds).
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(5);

/// How long the rest of an event-stream request's head may take to arrive
/// once its first bytes have: longer goes to hyper, which reads it.
pub const HEAD_WAIT: Duration = Duration::from_secs(1);

/// The largest request head served here, bytes (Clerk's `__session` cookie
/// is 1–3 KB); a larger one goes to hyper (whose limit is higher).
pub const MAX_HEAD: usize = 16 * 1024;

/// Headers of a request served here; more go to hyper.
const MAX_HEADERS: usize = 64;

/// The start of the request line of the event stream.
const EVENTS_REQUEST: &[u8] = b"GET /api/events";

/// How much a client may send after its request before the stream is
/// closed (a browser sends nothing; this only bounds misuse), bytes.
const MAX_TRAILING_INPUT: usize = 64 * 1024;

/// An [`axum::serve::Listener`] that keeps event-stream connections for
/// itself and hands every other connection to `axum::serve`, with
/// `TCP_NODELAY` set on all of them (a page written in several chunks must
/// not wait for the client's delayed ACK).
pub struct Connections {
    tcp: TcpListener,
    router: Router,
    to_hyper: mpsc::Sender<(TcpStream, SocketAddr)>,
    for_hyper: mpsc::Receiver<(TcpStream, SocketAddr)>,
    open: mpsc::Sender<Infallible>,
}

/// Completes once every connection that [`Connections`] served itself has
/// closed and the listener is gone. A connection still being looked at
/// then is closed instead of served.
pub struct Drained(mpsc::Receiver<Infallible>);

impl Drained {
    /// Waits for the last event stream served outside hyper to end (they
    /// end when [`crate::realtime::server::Hub::close_streams`] is called).
    pub async fn wait(mut self) {
        while self.0.recv().await.is_some() {}
    }
}

impl Connections {
    /// Listens on `tcp`; event streams are answered by `router`.
    pub fn new(tcp: TcpListener, router: Router) -> (Self, Drained) {
        let (to_hyper, for_hyper) = mpsc::channel(256);
        let (open, drained) = mpsc::channel(1);
        let connections = Self {
            tcp,
            router,
            to_hyper,
            for_hyper,
            open,
        };
        (connections, Drained(drained))
    }
}

impl axum::serve::Listener for Connections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let Self {
            tcp,
            router,
            to_hyper,
            for_hyper,
            open,
        } = self;
        loop {
            tokio::select! {
                Some(connection) = for_hyper.recv() => return connection,
                (stream, addr) = axum::serve::Listener::accept(tcp) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY");
                    }
                    let router = router.clone();
                    let to_hyper = to_hyper.clone();
                    // Weak while the request is awaited: a silent
                    // connection does not hold up shutdown.
                    let open = open.downgrade();
                    tokio::spawn(async move {
                        let mut stream = stream;
                        match take_event_stream_request(&mut stream).await {
                            Some(request) => {
                                // None once shutting down: the connection
                                // is closed.
                                if let Some(_open) = open.upgrade() {
                                    serve(stream, request, router).await;
                                }
                            }
                            // Only fails while shutting down: the
                            // connection is closed.
                            None => drop(to_hyper.send((stream, addr)).await),
                        }
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What the bytes received so far say about a request.
#[derive(Debug)]
enum Head {
    /// Not complete yet.
    Partial,
    /// Anything but a plain event-stream request: hyper's.
    Other,
    /// A plain `GET /api/events` whose head is the first `usize` bytes.
    EventStream(usize, Box<Request<Body>>),
}

/// Takes the first request of `stream` off the socket if it is a plain
/// event-stream request; otherwise leaves every byte where it is.
async fn take_event_stream_request(stream: &mut TcpStream) -> Option<Request<Body>> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(1);
    let mut line = [0u8; EVENTS_REQUEST.len() + 1];
    loop {
        let n = tokio::time::timeout_at(start + FIRST_BYTES_WAIT, stream.peek(&mut line))
            .await
            .ok()?
            .ok()?;
        let seen = &line[..n];
        if n == 0 || !EVENTS_REQUEST.starts_with(&seen[..n.min(EVENTS_REQUEST.len())]) {
            return None;
        }
        if n == line.len() {
            break;
        }
        wait_for_more(start + FIRST_BYTES_WAIT, &mut wait).await?;
    }
    if !matches!(line[EVENTS_REQUEST.len()], b' ' | b'?') {
        return None;
    }
    let deadline = Instant::now() + HEAD_WAIT;
    let mut head = vec![0u8; 2048];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        match parse(&head[..n]) {
            Head::Other => return None,
            Head::EventStream(length, request) => {
                stream.read_exact(&mut head[..length]).await.ok()?;
                return Some(*request);
            }
            Head::Partial if n == head.len() && head.len() < MAX_HEAD => {
                head.resize(head.len() * 2, 0);
            }
            Head::Partial if n == head.len() => return None,
            Head::Partial => wait_for_more(deadline, &mut wait).await?,
        }
    }
}

/// The longest wait between two looks at a request head that is still
/// arriving.
const PEEK_WAIT_MAX: Duration = Duration::from_millis(64);

/// Waits before the next look at a request head that is still arriving:
/// `wait` (1 ms at first), doubled after each wait up to [`PEEK_WAIT_MAX`],
/// never past `deadline`; `None` once `deadline` has passed.
///
/// A peek returns what is there without waiting for more, and the socket
/// stays readable while those bytes are unread, so the wait is a timer.
/// Doubling it means a connection that stalls half way through its request
/// wakes the server about twenty times in [`HEAD_WAIT`] (some eighty in
/// [`FIRST_BYTES_WAIT`]), not once a millisecond.
async fn wait_for_more(deadline: Instant, wait: &mut Duration) -> Option<()> {
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    tokio::time::sleep_until((now + *wait).min(deadline)).await;
    *wait = (*wait * 2).min(PEEK_WAIT_MAX);
    Some(())
}

/// Parses a request head ([RFC 9112 §2–3](https://www.rfc-editor.org/rfc/rfc9112)).
fn parse(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    // HTTP/1.0 too: nginx speaks it to upstreams unless told otherwise.
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Head::Other,
    };
    let (Some("GET"), Some(path)) = (parsed.method, parsed.path) else {
        return Head::Other;
    };
    let Some(rest) = path.strip_prefix("/api/events") else {
        return Head::Other;
    };
    if !(rest.is_empty() || rest.starts_with('?')) {
        return Head::Other;
    }
    let Ok(uri) = path.parse::<Uri>() else {
        return Head::Other;
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Head::Other;
        };
        let has_body =
            (name == header::CONTENT_LENGTH && value != "0") || name == header::TRANSFER_ENCODING;
        if has_body || name == header::UPGRADE || name == header::EXPECT {
            return Head::Other;
        }
        map.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Head::EventStream(length, Box::new(request))
}

/// Answers `request` through `router` and writes the response to `stream`
/// with `connection: close`: a body of known length as it is, any other
/// body (the event stream) chunked for HTTP/1.1 and as it is until the
/// close for HTTP/1.0, one write per event. Ends
/// when the body ends (the terminating chunk is sent), when a write fails,
/// or when the client closes its side.
async fn serve(mut stream: TcpStream, request: Request<Body>, router: Router) {
    tracing::debug!("event stream on a connection of its own");
    let version = request.version();
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (head, body) = response.into_parts();
    let length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| axum::body::HttpBody::size_hint(&body).exact());
    let framing = match length {
        Some(length) => Framing::Length(length),
        None if version == Version::HTTP_11 => Framing::Chunked,
        None => Framing::Close,
    };
    let (mut read, mut write) = stream.split();
    if write
        .write_all(&response_head(&Response::from_parts(head, ()), framing))
        .await
        .is_err()
    {
        return;
    }
    let chunked = framing == Framing::Chunked;
    let mut data = body.into_data_stream();
    let mut probe = [0u8; 64];
    let mut trailing = 0;
    loop {
        tokio::select! {
            frame = data.next() => match frame {
                Some(Ok(bytes)) if bytes.is_empty() => {}
                Some(Ok(bytes)) => {
                    let written = if chunked {
                        let size = Bytes::from(format!("{:x}\r\n", bytes.len()));
                        let mut frame = size.chain(bytes).chain(&b"\r\n"[..]);
                        write.write_all_buf(&mut frame).await
                    } else {
                        write.write_all(&bytes).await
                    };
                    if written.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    // No terminating chunk: the client sees the response
                    // end early, as it would from hyper.
                    tracing::debug!(%error, "event stream body failed");
                    return;
                }
                None => {
                    if chunked {
                        let _ = write.write_all(b"0\r\n\r\n").await;
                    }
                    break;
                }
            },
            input = read.read(&mut probe) => match input {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    trailing += n;
                    if trailing > MAX_TRAILING_INPUT {
                        return;
                    }
                }
            },
        }
    }
    let _ = write.shutdown().await;
}

/// How a response body is delimited ([RFC 9112 §6](https://www.rfc-editor.org/rfc/rfc9112#section-6)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `content-length`, bytes.
    Length(u64),
    /// `transfer-encoding: chunked` (HTTP/1.1 only).
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0).
    Close,
}

/// The status line and headers of `response`
/// ([RFC 9112 §4, §6](https://www.rfc-editor.org/rfc/rfc9112)), with `date`
/// ([RFC 9110 §6.6.1](https://www.rfc-editor.org/rfc/rfc9110#section-6.6.1)),
/// `connection: close`, and the `framing`'s header.
fn response_head(response: &Response<()>, framing: Framing) -> Vec<u8> {
    let status = response.status();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let headers = response.headers();
    for (name, value) in headers {
        if [
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::CONTENT_LENGTH,
        ]
        .contains(name)
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(length) => {
            head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes())
        }
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Close => {}
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_stream(bytes: &[u8]) -> Option<Request<Body>> {
        match parse(bytes) {
            Head::EventStream(length, request) => {
                assert_eq!(length, bytes.len());
                Some(*request)
            }
            _ => None,
        }
    }

    #[test]
    fn a_plain_event_stream_request_is_taken_with_its_headers() {
        let request = event_stream(
            b"GET /api/events?last_event_id=1-2 HTTP/1.1\r\nHost: a\r\nCookie: __session=x\r\nLast-Event-ID: 5-6\r\n\r\n",
        )
        .expect("taken");
        assert_eq!(request.uri(), "/api/events?last_event_id=1-2");
        assert_eq!(request.headers()["cookie"], "__session=x");
        assert_eq!(request.headers()["last-event-id"], "5-6");
        assert_eq!(request.version(), Version::HTTP_11);
        let request = event_stream(b"GET /api/events HTTP/1.0\r\nHost: a\r\n\r\n").expect("taken");
        assert_eq!(request.version(), Version::HTTP_10);
    }

    #[test]
    fn anything_else_is_left_for_hyper() {
        for head in [
            &b"GET /api/eventsx HTTP/1.1\r\n\r\n"[..],
            b"POST /api/events HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
            b"GET /api/events HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(head), Head::Other),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert!(matches!(
            parse(b"GET /api/events HTTP/1.1\r\nHost: a\r\n"),
            Head::Partial
        ));
    }

    #[test]
    fn the_response_head_is_chunked_or_has_its_length_and_closes() {
        let response = Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .header("content-length", "9")
            .body(())
            .unwrap();
        let head = String::from_utf8(response_head(&response, Framing::Length(9))).unwrap();
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert_eq!(head.matches("content-length").count(), 1);
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("\r\ncontent-length: 9\r\nconnection: close\r\n\r\n"));
        let stream = Response::builder().status(200).body(()).unwrap();
        let head = String::from_utf8(response_head(&stream, Framing::Chunked)).unwrap();
        assert!(head.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        let head = String::from_utf8(response_head(&stream, Framing::Close)).unwrap();
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.ends_with("\r\nconnection: close\r\n\r\n"));
    }
}
