//! The `--status` query over HTTP: fetch `GET /status` from the running instance's
//! endpoint, whatever answers there treated as untrusted.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::model::Status;
use crate::config::host_port;

/// Largest answer `--status` reads; a longer one is not a sersync2 status.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// One deadline for `--status`, from connect to the last byte of the answer.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(5);

/// `sersync2 --status`: fetch /status from the running instance. Whatever answers on the
/// port is untrusted: one deadline for the whole exchange, at most [`MAX_ANSWER`] bytes.
/// The caller only reports why there is no status, so it is an [`anyhow::Error`].
pub fn query(host: &str, port: u16) -> anyhow::Result<Status> {
    query_within(host, port, QUERY_DEADLINE).map_err(anyhow::Error::msg)
}

fn query_within(host: &str, port: u16, deadline: Duration) -> Result<Status, String> {
    let at = host_port(host, port);
    let started = Instant::now();
    let no_answer = || {
        format!(
            "no answer from {at} within {} s; is the sersync2 instance of this \
             config listening there?",
            deadline.as_secs()
        )
    };
    let left = || {
        deadline
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {at}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, left().ok_or_else(no_answer)?).map_err(|e| {
            match e.kind() {
                ErrorKind::TimedOut | ErrorKind::WouldBlock => no_answer(),
                _ => format!(
                    "no sersync2 status endpoint at {at} ({e}); is the agent running \
                 with <host start=\"true\">?"
                ),
            }
        })?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock);
    conn.set_write_timeout(Some(left().ok_or_else(no_answer)?))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET /status HTTP/1.0\r\nHost: {at}\r\n\r\n").as_bytes())
        .map_err(|e| {
            if timed_out(&e) {
                no_answer()
            } else {
                format!("cannot ask {at}: {e}")
            }
        })?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        conn.set_read_timeout(Some(left().ok_or_else(no_answer)?))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_ANSWER {
                    return Err(format!(
                        "answer from {at} too large (over {} KiB): not a sersync2 \
                         status endpoint",
                        MAX_ANSWER / 1024
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(no_answer()),
            Err(e) => return Err(format!("cannot read the answer from {at}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("unexpected answer from {at}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_client_gives_up_on_a_listener_that_never_answers() {
        // A listener that never answered gave "Resource temporarily unavailable" after 10 s.
        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let started = Instant::now();
        let e = query_within("127.0.0.1", port, Duration::from_secs(1)).expect_err("no answer");
        assert!(
            e.contains(&format!("no answer from 127.0.0.1:{port} within 1 s")),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "one deadline for it all"
        );
    }

    #[test]
    fn status_client_refuses_an_answer_over_the_cap() {
        // A 200 MB answer was read whole (200 MB RSS).
        let big = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = big.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = big.accept() {
                let chunk = vec![b' '; 64 * 1024];
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\n{");
                // Until the client hangs up (then the write fails).
                while c.write_all(&chunk).is_ok() {}
            }
        });
        let e = query("127.0.0.1", port).expect_err("too large").to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
