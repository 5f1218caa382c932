//! The local control socket: how a command line (`sersync2 --replay`) asks the running
//! instance of the same config to do something now.
//!
//! A unix stream socket next to the config's instance lock, named after it (`<lock
//! file>.sock`, see `daemon::lock_file`), so it lives in the same private lock directory
//! and a command line finds it from `-o FILE` alone. Only the agent's user and root can use it:
//! it is bound mode 0600 (a stale socket of ours is replaced, nothing else at the path
//! is touched, a link is never followed: `sys::local_socket`), and every connection's
//! peer credentials are checked before a byte is read. The client checks the socket's
//! owner and the server's credentials the same way.
//!
//! Protocol: one request line of text (`replay\n`), at most [`MAX_REQUEST`] bytes, read
//! within [`REQUEST_DEADLINE`] of the accept; one JSON document and a newline back, then
//! the server closes. An unknown command gets `{"ok":false,"error":...}`, so commands can
//! be added without breaking older clients.
//!
//! Bounded like the status endpoint: one thread accepts, checks and reads one connection
//! at a time (others wait in a backlog of [`BACKLOG`]). A command may take long (a replay
//! waits up to a minute for its pushes, `wait-synced` until its remotes are level), so
//! each runs and answers on a thread of its own, at most [`MAX_RUNNING`] at once (one
//! more is answered `busy`), and a waiting command never holds up the next client. The
//! socket is removed when the [`Control`] handle is dropped at shutdown.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sys::{self, fsafe, local_socket};

/// Largest request line, newline included.
pub const MAX_REQUEST: usize = 1024;
/// From accept to the end of the request line: a client that trickles is cut off.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// For writing the answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// How long a closing connection's unread input is drained (see [`answer`]).
const DRAIN_DEADLINE: Duration = Duration::from_millis(500);
/// Connections the kernel holds while one is served.
pub const BACKLOG: i32 = 8;
/// Largest answer a client reads.
const MAX_ANSWER: usize = 1 << 20;
/// Most commands running at once.
pub const MAX_RUNNING: usize = 8;

/// What a command does in the running instance: the request line (trimmed) to a JSON
/// answer.
pub type Handler = Arc<dyn Fn(&str) -> Value + Send + Sync>;

/// The control socket beside a lock file: `<lock file>.sock`.
pub fn socket_path(pid_file: &Path) -> PathBuf {
    let mut s = pid_file.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// The running control server; dropping it stops accepting and removes the socket.
pub struct Control {
    path: PathBuf,
    bound: local_socket::Bound,
    /// Written to at the drop: the server thread stops accepting.
    stop: UnixStream,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = (&self.stop).write_all(b"x");
        local_socket::remove_bound(&self.path, self.bound);
    }
}

/// Binds the socket at `path` and serves it on one thread until the [`Control`] is
/// dropped.
pub fn serve(path: &Path, handler: Handler) -> io::Result<Control> {
    let (listener, bound) = local_socket::bind_private(path, BACKLOG)?;
    let (stop, stop_rx) = UnixStream::pair()?;
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || run(listener, stop_rx, handler));
    if let Err(e) = spawned {
        local_socket::remove_bound(path, bound);
        return Err(e);
    }
    Ok(Control {
        path: path.to_path_buf(),
        bound,
        stop,
    })
}

fn run(listener: UnixListener, stop: UnixStream, handler: Handler) {
    let running = Arc::new(AtomicUsize::new(0));
    let mut backoff = Duration::from_millis(100);
    loop {
        match sys::wait_either(listener.as_raw_fd(), stop.as_raw_fd()) {
            sys::Ready::Stop | sys::Ready::Failed => return,
            sys::Ready::Work => {}
        }
        match listener.accept() {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(100);
                serve_one(stream, &handler, &running);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                // Out of descriptors or memory: pause instead of spinning on a readable
                // listener.
                log::warn!("control socket: accept failed ({e}); pausing");
                if sys::readable_within(stop.as_raw_fd(), backoff) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Writes the answer and ends the connection. Input the client sent and we did not read
/// is drained first (briefly, boundedly): closing over unread data resets the
/// connection, and the reset can destroy the answer before the client reads it.
fn answer(stream: &mut UnixStream, value: &Value) {
    let _ = stream.set_write_timeout(Some(ANSWER_DEADLINE));
    let mut text = value.to_string();
    text.push('\n');
    if stream.write_all(text.as_bytes()).is_err() {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let mut left = MAX_REQUEST;
    let mut chunk = [0u8; 256];
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn error(message: &str) -> Value {
    json!({ "ok": false, "error": message })
}

/// Counts one running command; uncounted when dropped, however the command ended.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_one(mut stream: UnixStream, handler: &Handler, running: &Arc<AtomicUsize>) {
    let uid = match local_socket::peer_uid(stream.as_raw_fd()) {
        Ok(uid) => uid,
        Err(e) => {
            log::warn!("control socket: cannot read the caller's credentials ({e}); closed");
            return;
        }
    };
    if !local_socket::is_allowed(uid) {
        log::warn!(
            "control socket: refused a connection from {}: only {} and root may use it",
            fsafe::describe_user(uid),
            fsafe::describe_user(fsafe::euid())
        );
        answer(
            &mut stream,
            &error("refused: only the agent's user and root may use this socket"),
        );
        return;
    }
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let line = match read_line(&mut stream, Instant::now() + REQUEST_DEADLINE) {
        Ok(line) => line,
        Err(message) => {
            answer(&mut stream, &error(&message));
            return;
        }
    };
    if running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
        running.fetch_sub(1, Ordering::SeqCst);
        answer(
            &mut stream,
            &error(&format!(
                "busy: {MAX_RUNNING} commands are running; try again when one has ended"
            )),
        );
        return;
    }
    let count = Running(Arc::clone(running));
    let handler = Arc::clone(handler);
    let spawned = std::thread::Builder::new()
        .name("control-cmd".into())
        .spawn(move || {
            let _count = count;
            answer(&mut stream, &handler(&line));
        });
    if let Err(e) = spawned {
        log::error!(
            "control socket: cannot start a thread for a command ({e}); the caller gets no              answer and may try again"
        );
    }
}

/// Reads one request line, within the deadline and [`MAX_REQUEST`] bytes.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete request line within {}s",
                REQUEST_DEADLINE.as_secs()
            ));
        }
        let _ = stream.set_read_timeout(Some(left));
        let room = (MAX_REQUEST + 1 - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    buf.truncate(end);
                    break;
                }
                if buf.len() > MAX_REQUEST {
                    return Err(format!("request line over {MAX_REQUEST} bytes"));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| "the request line is not UTF-8".to_owned())
}

/// Why asking the running instance failed.
#[derive(Debug)]
pub enum AskError {
    /// No control socket, or nobody listening on it (an instance without one).
    Missing(io::Error),
    /// The socket or the process behind it failed the ownership checks.
    Refused(io::Error),
    /// The instance closed the connection before it answered (it is stopping, or
    /// reloading its config: a reload closes the socket for a moment).
    Closed(String),
    /// Anything else: no answer in time, an answer that is not JSON, another I/O error.
    Failed(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Missing(e) | AskError::Refused(e) => write!(f, "{e}"),
            AskError::Closed(m) | AskError::Failed(m) => f.write_str(m),
        }
    }
}

/// Sends one command to the instance behind `path` and waits up to `wait` for its answer.
pub fn ask(path: &Path, command: &str, wait: Duration) -> Result<Value, AskError> {
    let mut stream = local_socket::connect_checked(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => AskError::Missing(e),
        ErrorKind::PermissionDenied => AskError::Refused(e),
        _ => AskError::Failed(format!("cannot connect to {}: {e}", path.display())),
    })?;
    let failed = |what: &str, e: io::Error| AskError::Failed(format!("{what}: {e}"));
    stream
        .set_write_timeout(Some(REQUEST_DEADLINE))
        .map_err(|e| failed("control socket", e))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => {
                AskError::Closed(format!("sending the request: {e}"))
            }
            _ => failed("sending the request", e),
        })?;
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AskError::Failed(format!(
                "no answer within {}s",
                wait.as_secs()
            )));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_ANSWER {
                    return Err(AskError::Failed(format!("answer over {MAX_ANSWER} bytes")));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset && buf.is_empty() => {
                return Err(AskError::Closed(format!("reading the answer: {e}")))
            }
            Err(e) => return Err(failed("reading the answer", e)),
        }
    }
    if buf.is_empty() {
        return Err(AskError::Closed(
            "the instance closed the connection without an answer (it may be stopping)".to_owned(),
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| AskError::Failed(format!("bad answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Handler {
        Arc::new(|line: &str| json!({ "ok": true, "got": line }))
    }

    #[test]
    fn a_command_gets_its_answer_and_the_socket_goes_at_the_drop() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = socket_path(&d.path().join("x.pid"));
        assert!(path.to_string_lossy().ends_with("x.pid.sock"));
        let control = serve(&path, echo()).expect("serve");
        let v = ask(&path, "replay", Duration::from_secs(10)).expect("answer");
        assert_eq!(v["got"], "replay");
        drop(control);
        assert!(!path.exists(), "socket removed at the drop");
        assert!(matches!(
            ask(&path, "replay", Duration::from_secs(10)),
            Err(AskError::Missing(_))
        ));
    }

    /// Found by an outside attack run: `--wait-synced` asked while a reload closed the
    /// socket failed at once ("sending the request: Broken pipe") instead of asking again.
    #[test]
    fn a_connection_closed_without_an_answer_is_told_apart() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                // Accepted and closed unread: the client's write or read fails.
                drop(listener.accept().expect("accept"));
            }
        });
        for _ in 0..2 {
            let got = ask(&path, "replay", Duration::from_secs(10));
            assert!(matches!(got, Err(AskError::Closed(_))), "{got:?}");
        }
        server.join().expect("server");
    }

    #[test]
    fn an_overlong_request_is_refused_and_the_server_goes_on() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.sock");
        let _control = serve(&path, echo()).expect("serve");
        let mut s = local_socket::connect_checked(&path).expect("connect");
        let long = vec![b'a'; 4 * MAX_REQUEST];
        // The server may close before reading it all: a failed write is fine.
        let _ = s.write_all(&long);
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.contains("over"), "{text}");
        let v = ask(&path, "again", Duration::from_secs(10)).expect("still serving");
        assert_eq!(v["got"], "again");
    }

    #[test]
    fn a_silent_client_is_cut_off_and_the_next_one_is_served() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.sock");
        let _control = serve(&path, echo()).expect("serve");
        let _silent = local_socket::connect_checked(&path).expect("connect");
        let v = ask(&path, "next", REQUEST_DEADLINE * 4).expect("served after the deadline");
        assert_eq!(v["got"], "next");
    }
}
