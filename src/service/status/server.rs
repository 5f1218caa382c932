//! The status endpoint: a tiny HTTP/1.0 server on std's TcpListener, bounded so that it
//! can never stop sync or eat the host's memory: one thread polls the listener and every
//! connection; at most [`MAX_CONNECTIONS`] are open (more are closed as soon as they are
//! accepted), a request head over [`MAX_HEAD`] bytes gets a 431, and each connection has
//! one deadline from accept to answer ([`REQUEST_DEADLINE`]), not one per read. `accept`
//! failing for lack of descriptors or memory pauses accepting (100 ms doubling to 1 s)
//! instead of spinning. It never touches the sync path beyond reading counters. It is
//! unauthenticated: a `hostip` other than loopback is warned about at start.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::metrics;
use super::model::Status;
use crate::config::host_port;

/// Where the server gets a fresh status document for each request.
pub type Source = Arc<dyn Fn() -> Status + Send + Sync>;

/// Most connections open at once; any more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers); a longer one gets a 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// One deadline per connection, from accept to the last byte of the answer (not per
/// read): a client that trickles its request is cut off when it passes.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Input read and thrown away after the answer, so that a client still sending gets a
/// clean close rather than a reset that can destroy the answer; more and we just close.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Pause after `accept` fails for lack of resources (EMFILE and the like): doubles up
/// to [`BACKOFF_MAX`] while it keeps failing, instead of spinning on a readable listener.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Connections accepted per wake-up, so a flood cannot starve the open ones.
const ACCEPTS_PER_WAKE: usize = 256;

/// Serves /status and /metrics until the process exits, on one thread with a bounded
/// set of descriptors: the listener plus at most [`MAX_CONNECTIONS`]. If that thread
/// cannot be started, the agent runs on without the endpoint (logged).
///
/// With `stop`, it serves until that is raised (a config reload); the handle joins the
/// thread, after which the listener is closed.
pub fn serve(
    listener: TcpListener,
    source: Source,
    stop: Option<Arc<crate::sys::Stop>>,
) -> Option<std::thread::JoinHandle<()>> {
    if !ready(&listener) {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || Server::new(listener, source, stop).run());
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::error!("status endpoint off: cannot start its thread ({e}); syncing goes on");
            None
        }
    }
}

/// First pause before binding again after the status address could not be bound; it
/// doubles up to [`BIND_RETRY_MAX`].
pub const BIND_RETRY_FIRST: Duration = Duration::from_secs(5);
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(60);

/// Serves on `listener`, or, without one, on `host:port` once it can be bound. A bind
/// that fails (another process holds the port, the address is gone) never stops sync:
/// it is logged with the address and the reason, and the status thread binds again,
/// [`BIND_RETRY_FIRST`] doubling to [`BIND_RETRY_MAX`], until it succeeds or `stop`
/// is raised.
pub fn listen(
    host: &str,
    port: u16,
    listener: Option<TcpListener>,
    source: Source,
    stop: Arc<crate::sys::Stop>,
) -> Option<std::thread::JoinHandle<()>> {
    let at = host_port(host, port);
    let first = match listener {
        Some(l) => Ok(l),
        None => TcpListener::bind((host, port)),
    };
    let error = match first {
        Ok(l) => {
            log::info!("status on http://{at}/status and /metrics");
            return serve(l, source, Some(stop));
        }
        Err(e) => e,
    };
    log::error!(
        "cannot listen for status on {at} ({error}); syncing goes on without the \
         endpoint; binding again in {}s, then up to every {}s (free the port or change \
         <host port>)",
        BIND_RETRY_FIRST.as_secs(),
        BIND_RETRY_MAX.as_secs()
    );
    let host = host.to_owned();
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let mut pause = BIND_RETRY_FIRST;
            let mut last = error.to_string();
            loop {
                if stop.wait_timeout(pause) {
                    return;
                }
                match TcpListener::bind((host.as_str(), port)) {
                    Ok(l) => {
                        if ready(&l) {
                            log::info!("status on http://{at}/status and /metrics (bound now)");
                            Server::new(l, source, Some(stop)).run();
                        }
                        return;
                    }
                    Err(e) if e.to_string() != last => {
                        log::error!("cannot listen for status on {at} ({e}); retrying");
                        last = e.to_string();
                    }
                    Err(e) => log::debug!("status on {at}: still cannot bind ({e})"),
                }
                pause = (pause * 2).min(BIND_RETRY_MAX);
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            log::error!(
                "status endpoint off: cannot start its thread ({e}); syncing goes on; \
                 send SIGHUP to try again"
            );
            None
        }
    }
}

/// Warns about a listener others can reach and makes it non-blocking; false if it
/// cannot be used (logged).
fn ready(listener: &TcpListener) -> bool {
    if let Ok(addr) = listener.local_addr() {
        if !is_loopback(addr.ip()) {
            log::warn!(
                "status endpoint on {addr} is unauthenticated: anyone who can reach it can read \
                 the status and metrics; bind <host hostip> to 127.0.0.1 unless that is intended"
            );
        }
    }
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("status endpoint off: cannot make its listener non-blocking ({e})");
        return false;
    }
    true
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the answer.
    Writing,
    /// Answer sent and our side shut: discarding input until the client closes.
    Draining,
}

struct Conn {
    stream: TcpStream,
    deadline: Instant,
    phase: Phase,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    drained: usize,
}

/// Whether a connection stays open after handling its readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Keep,
    Close,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            deadline: now + REQUEST_DEADLINE,
            phase: Phase::Reading,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            drained: 0,
        }
    }

    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Reading | Phase::Draining => libc::POLLIN,
            Phase::Writing => libc::POLLOUT,
        }
    }

    /// The descriptor is ready (or in error): move on as far as it goes without blocking.
    fn ready(&mut self, source: &Source) -> Step {
        match self.phase {
            Phase::Reading => self.read_head(source),
            Phase::Writing => self.flush(),
            Phase::Draining => self.drain(),
        }
    }

    fn read_head(&mut self, source: &Source) -> Step {
        let mut buf = [0u8; 4096];
        loop {
            // Never hold more than one byte past the cap: that byte says "too long".
            let room = (MAX_HEAD + 1 - self.head.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    // The client shut its side: answer a complete request line anyway.
                    if !self.head.contains(&b'\n') {
                        return Step::Close;
                    }
                    self.out = respond(&self.head, source);
                    self.phase = Phase::Writing;
                    return self.flush();
                }
                Ok(n) => {
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(&buf[..n]);
                    let end = head_end(&self.head, from).filter(|&end| end <= MAX_HEAD);
                    if let Some(end) = end {
                        self.head.truncate(end);
                        self.out = respond(&self.head, source);
                    } else if self.head.len() > MAX_HEAD {
                        self.out = plain(
                            "431 Request Header Fields Too Large",
                            &format!("request head over {MAX_HEAD} bytes\n"),
                        );
                    } else {
                        continue;
                    }
                    self.head = Vec::new();
                    self.phase = Phase::Writing;
                    return self.flush();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
    }

    fn flush(&mut self) -> Step {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Step::Close,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
        self.out = Vec::new();
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return Step::Close;
        }
        self.phase = Phase::Draining;
        self.drain()
    }

    fn drain(&mut self) -> Step {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.drained += n;
                    if self.drained > DRAIN_LIMIT {
                        return Step::Close;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
    }

    /// The deadline passed: one best-effort 408 to a client still sending, then close.
    fn expire(&mut self) {
        if self.phase == Phase::Reading {
            let _ = self.stream.write(&plain(
                "408 Request Timeout",
                "request not complete in time\n",
            ));
        }
    }
}

/// Where the head ends (after its blank line), searching from `from`.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    (from..head.len()).find_map(|i| {
        if head[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if head[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The listener and its open connections: one thread, one `poll` over all of them.
struct Server {
    listener: TcpListener,
    source: Source,
    conns: Vec<Conn>,
    /// While accepting is paused after a resource error: until when, and the next pause.
    paused_until: Option<Instant>,
    backoff: Duration,
    /// Raised: close everything and end the thread.
    stop: Option<Arc<crate::sys::Stop>>,
}

impl Server {
    fn new(listener: TcpListener, source: Source, stop: Option<Arc<crate::sys::Stop>>) -> Server {
        Server {
            listener,
            source,
            stop,
            conns: Vec::with_capacity(MAX_CONNECTIONS),
            paused_until: None,
            backoff: BACKOFF_FIRST,
        }
    }

    fn run(mut self) {
        let mut fds: Vec<(RawFd, libc::c_short)> = Vec::with_capacity(MAX_CONNECTIONS + 2);
        loop {
            let now = Instant::now();
            self.conns.retain_mut(|c| {
                if now >= c.deadline {
                    c.expire();
                    false
                } else {
                    true
                }
            });
            if self.paused_until.is_some_and(|t| now >= t) {
                self.paused_until = None;
            }
            let listening = self.paused_until.is_none();
            fds.clear();
            // A negative descriptor is skipped by poll: that is the pause.
            let listener = if listening {
                self.listener.as_raw_fd()
            } else {
                -1
            };
            fds.push((listener, libc::POLLIN));
            for c in &self.conns {
                fds.push((c.stream.as_raw_fd(), c.events()));
            }
            // Last, after the connections' entries (their order is the conns' order).
            if let Some(stop) = &self.stop {
                fds.push((stop.fd(), libc::POLLIN));
            }
            let wake = self
                .conns
                .iter()
                .map(|c| c.deadline)
                .chain(self.paused_until)
                .min();
            // No deadline: as long as poll can wait (about 24 days), then round again.
            let timeout = wake.map_or(Duration::MAX, |t| {
                // Round up so we never wake just before a deadline and spin.
                let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            });
            // A signal that interrupts the wait reads as nothing ready: the loop goes round.
            let revents = match crate::sys::poll_many(&fds, timeout) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("status endpoint: poll failed ({e}); retrying in {BACKOFF_MAX:?}");
                    std::thread::sleep(BACKOFF_MAX); // back-off after a failed poll, not a sync
                    continue;
                }
            };
            if self.stop.is_some() && revents.last().is_some_and(|&r| r != 0) {
                return;
            }
            let mut ready = revents[1..].iter().copied();
            let source = &self.source;
            self.conns.retain_mut(|c| match ready.next() {
                Some(0) | None => true,
                Some(_) => c.ready(source) == Step::Keep,
            });
            if listening && revents[0] != 0 {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.backoff = BACKOFF_FIRST;
                    // Over the cap the connection is dropped (closed) at once.
                    if self.conns.len() < MAX_CONNECTIONS && stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Conn::new(stream, Instant::now()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: the listener stays readable, so
                    // stop polling it for a while instead of spinning.
                    if self.backoff == BACKOFF_FIRST {
                        log::warn!(
                            "status endpoint: cannot accept ({e}); pausing it, up to {BACKOFF_MAX:?} at a time"
                        );
                    }
                    self.paused_until = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return;
                }
            }
        }
    }
}

fn plain(code: &str, body: &str) -> Vec<u8> {
    reply(code, "text/plain", body)
}

fn reply(code: &str, kind: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The whole answer to a request head.
fn respond(head: &[u8], source: &Source) -> Vec<u8> {
    let head = String::from_utf8_lossy(head);
    let request = head.lines().next().unwrap_or("");
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/status") => {
            let s = source();
            let body = serde_json::to_string_pretty(&s)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            ("200 OK", "application/json", body)
        }
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics(&source())),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /status or /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    reply(code, kind, &body)
}

#[cfg(test)]
mod tests {
    use super::super::tests::source;
    use super::*;

    fn server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        serve(listener, source(), None);
        port
    }

    /// Sends `parts` one write each and returns what came back before the close.
    fn exchange(port: u16, parts: &[&[u8]]) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        for p in parts {
            c.write_all(p).expect("send");
        }
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn head_of(len: usize) -> Vec<u8> {
        let start = b"GET /status HTTP/1.0\r\nX-Pad: ";
        let mut h = start.to_vec();
        h.resize(len - 4, b'p');
        h.extend_from_slice(b"\r\n\r\n");
        h
    }

    #[test]
    fn head_end_finds_either_blank_line_from_where_it_is_told() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\n", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nA: b\r\n", 0), None);
        assert_eq!(head_end(b"ab\r\n\r\n", 2), Some(6));
    }

    #[test]
    fn a_head_of_exactly_the_cap_is_answered_one_byte_more_is_431() {
        let port = server();
        let at_cap = exchange(port, &[&head_of(MAX_HEAD)]);
        assert!(at_cap.starts_with("HTTP/1.0 200"), "{at_cap:.200}");
        let over = exchange(port, &[&head_of(MAX_HEAD + 1)]);
        assert!(over.starts_with("HTTP/1.0 431"), "{over:.200}");
    }

    #[test]
    fn a_request_in_many_pieces_is_answered_once_complete() {
        let port = server();
        let got = exchange(
            port,
            &[
                b"GE",
                b"T /metr",
                b"ics HTTP/1.0\r",
                b"\nHost: x\r\n",
                b"\r\n",
            ],
        );
        assert!(got.starts_with("HTTP/1.0 200"), "{got:.200}");
        assert!(got.contains("sersync2_uptime_seconds 0"), "{got}");
        let got = exchange(port, &[b"POST /status HTTP/1.0\r\n\r\n"]);
        assert!(got.starts_with("HTTP/1.0 405"), "{got:.200}");
    }
}
