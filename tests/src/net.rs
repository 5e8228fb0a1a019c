//! Loopback networking for tests: free ports and a small HTTP/1.1 client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code (0 when the exchange failed).
    pub status: u16,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Where a request goes: a loopback port or a Unix socket.
#[derive(Debug, Clone)]
pub enum Target {
    /// `127.0.0.1:port`.
    Port(u16),
    /// A Unix socket.
    Unix(PathBuf),
}

impl From<u16> for Target {
    fn from(port: u16) -> Self {
        Self::Port(port)
    }
}

impl From<&Path> for Target {
    fn from(path: &Path) -> Self {
        Self::Unix(path.to_owned())
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}

impl From<&PathBuf> for Target {
    fn from(path: &PathBuf) -> Self {
        Self::Unix(path.clone())
    }
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

impl Target {
    fn connect(&self) -> Option<Box<dyn Io>> {
        let timeout = Some(Duration::from_secs(10));
        match self {
            Self::Port(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port)).ok()?;
                let _ = s.set_read_timeout(timeout);
                Some(Box::new(s))
            }
            Self::Unix(path) => {
                let s = UnixStream::connect(path).ok()?;
                let _ = s.set_read_timeout(timeout);
                Some(Box::new(s))
            }
        }
    }

    fn default_host(&self) -> String {
        match self {
            Self::Port(port) => format!("127.0.0.1:{port}"),
            Self::Unix(_) => "localhost".into(),
        }
    }
}

/// `GET path` on a target with extra headers (Connection: close).
pub fn get(to: impl Into<Target>, path: &str, headers: &[(&str, &str)]) -> Response {
    request(to, "GET", path, headers)
}

/// `GET path` over HTTP/2 (cleartext, prior knowledge) with curl; status 0
/// when the exchange failed.
pub fn get_h2(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-s",
        "--http2-prior-knowledge",
        "-D",
        "-",
        "--max-time",
        "10",
    ]);
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command.arg(format!("http://127.0.0.1:{port}{path}"));
    let output = command
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (head, body) = output.split_once("\r\n\r\n").unwrap_or(("", ""));
    let (status, headers) = parse_head(head);
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The status and the (lower-cased) headers of a response head, as in
/// `HTTP/1.1 200 OK` or `HTTP/2 200`; status 0 when there is none.
fn parse_head(head: &str) -> (u16, BTreeMap<String, String>) {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// One request on a fresh connection; status 0 when the exchange failed.
pub fn request(
    to: impl Into<Target>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    send(to, method, path, headers, "")
}

/// One request with a body on a fresh connection.
pub fn send(
    to: impl Into<Target>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let failed = Response {
        status: 0,
        headers: BTreeMap::new(),
        body: String::new(),
    };
    let to = to.into();
    let Some(mut stream) = to.connect() else {
        return failed;
    };
    let mut text = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("host: {}\r\n", to.default_host()));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    if stream.write_all(text.as_bytes()).is_err() {
        return failed;
    }
    // Read the head, then exactly the body: servers may hold the connection
    // open after a response (Envoy's delayed close), so EOF is not awaited.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return failed,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let (status, headers) = parse_head(&String::from_utf8_lossy(&raw[..head_end]));
    let mut body_bytes = raw[head_end + 4..].to_vec();
    let length: Option<usize> = headers.get("content-length").and_then(|l| l.parse().ok());
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked");
    loop {
        let done = match length {
            Some(n) => body_bytes.len() >= n,
            None if chunked => body_bytes.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body_bytes.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&body_bytes).into_owned();
    let body = body.as_str();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `probe` every 20 ms until it returns true or `timeout` passes;
/// returns the time it took.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if probe() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A TCP proxy on loopback that keeps what clients sent through it, so a
/// test can count the HTTP requests that reached the upstream.
pub struct CountingProxy {
    /// Where it listens.
    pub port: u16,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl CountingProxy {
    /// Forwards every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        Self::start_delayed(target, Duration::ZERO)
    }

    /// As [`CountingProxy::start`], connecting upstream only `delay` after
    /// each client connects (a slow provider).
    pub fn start_delayed(target: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    type Kept = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;
                    let pipe = |mut from: TcpStream, mut to: TcpStream, keep: Option<Kept>| {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                // Recorded before it is forwarded: once the
                                // upstream has answered, the count includes it.
                                if let Some(Ok(mut kept)) = keep.as_ref().map(|k| k.lock()) {
                                    kept.extend_from_slice(&buf[..n]);
                                }
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        });
                    };
                    if let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) {
                        pipe(client, upstream, Some(record));
                        pipe(u2, c2, None);
                    }
                });
            }
        });
        Self { port, sent }
    }

    /// Everything clients sent through the proxy so far, as text.
    pub fn sent(&self) -> String {
        self.sent
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }

    /// HTTP/1.1 requests forwarded so far (request lines clients sent;
    /// several may share one kept-alive connection).
    pub fn requests(&self) -> usize {
        self.sent()
            .lines()
            .filter(|line| {
                line.ends_with(" HTTP/1.1")
                    && ["GET ", "POST ", "PUT ", "DELETE ", "LIST "]
                        .iter()
                        .any(|m| line.starts_with(m))
            })
            .count()
    }
}

/// A TCP relay on loopback in front of one server, whose link a test can
/// cut (every open connection reset, new ones refused), slow down, or
/// replace with a server answering 500, and restore.
pub struct Relay {
    /// Where it listens.
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<RelayState>>,
}

/// What the relay does to traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Link {
    #[default]
    Up,
    Cut,
    Slow(Duration),
    Failing,
}

#[derive(Default)]
struct RelayState {
    link: Link,
    open: Vec<TcpStream>,
}

const INJECTED_500: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 23\r\nconnection: close\r\n\r\n{\"errors\":[\"injected\"]}";

impl Relay {
    /// Relays every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let state = std::sync::Arc::new(std::sync::Mutex::new(RelayState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(mut state) = shared.lock() else { return };
                if state.link == Link::Cut {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for stream in [&client, &upstream] {
                    if let Ok(kept) = stream.try_clone() {
                        state.open.push(kept);
                    }
                }
                drop(state);
                let (Ok(c2), Ok(c3), Ok(u2)) =
                    (client.try_clone(), client.try_clone(), upstream.try_clone())
                else {
                    continue;
                };
                let link = shared.clone();
                // Client to server, chunk by chunk, as the link is now.
                std::thread::spawn(move || {
                    let (mut from, mut to, mut reply) = (client, upstream, c3);
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let now = link.lock().map(|s| s.link).unwrap_or(Link::Cut);
                        match now {
                            Link::Up => {}
                            Link::Slow(delay) => std::thread::sleep(delay),
                            Link::Failing => {
                                let _ = reply.write_all(INJECTED_500);
                                let _ = reply.shutdown(std::net::Shutdown::Both);
                                break;
                            }
                            Link::Cut => break,
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let (mut from, mut to) = (u2, c2);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { port, state }
    }

    fn set(&self, link: Link) {
        if let Ok(mut state) = self.state.lock() {
            state.link = link;
            if link == Link::Cut {
                for stream in state.open.drain(..) {
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Resets every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Link::Cut);
    }

    /// Holds every request `delay` before passing it on.
    pub fn slow(&self, delay: Duration) {
        self.set(Link::Slow(delay));
    }

    /// Answers every request 500 in the server's place.
    pub fn fail(&self) {
        self.set(Link::Failing);
    }

    /// Relays as normal again.
    pub fn restore(&self) {
        self.set(Link::Up);
    }
}
