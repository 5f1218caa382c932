//! Attacks on the agent, made as an attacker would make them, against the real binary
//! and real rsync daemons: here, on the status endpoint (`<host start="true">`), which
//! must never stop sync or eat the host's memory whatever its clients do, nor stop the
//! agent or fool `--status` when a local user squats its port.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

/// The agent's soft and hard descriptor limit in the flood test: the flood is larger.
const AGENT_NOFILE: u64 = 256;

/// Idle connections the flood opens.
const FLOOD: usize = 2000;

/// Most threads the agent may run during the flood (it runs about a dozen).
const MAX_THREADS: u64 = 32;

/// Generous bound for the server's per-request deadline (5 s) to cut a client off.
const CUT_OFF: Duration = Duration::from_secs(30);

/// A field of /proc/PID/status, as its first number (kB for memory, a count for threads).
fn proc_status(pid: libc::pid_t, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{text}"))
}

/// GET `path` once; `None` if the endpoint did not answer (refused, closed, timed out).
fn try_get(port: u16, path: &str) -> Option<(String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// Polls until GET /status answers 200; returns the JSON.
fn status_answers(port: u16, what: &str) -> serde_json::Value {
    let mut doc = None;
    wait_until(what, DEADLINE, || match try_get(port, "/status") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => {
            doc = serde_json::from_str(&body).ok();
            doc.is_some()
        }
        _ => false,
    });
    doc.unwrap_or_default()
}

/// Starts the agent with the status endpoint on a free loopback port.
fn agent_with_status(s: &Setup) -> (Agent, u16) {
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let agent = Agent::start(&s.dir, &conf, &[]);
    status_answers(port, "the status endpoint answers at start");
    (agent, port)
}

/// Raises this process's soft descriptor limit towards `want`; returns the soft limit.
fn raise_own_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct on this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Sets the agent's descriptor limit (soft and hard) to `n`.
fn limit_agent_nofile(pid: libc::pid_t, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on our own child with a valid rlimit struct; no old limit wanted.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Once, thousands of idle connections to the endpoint took a thread and a descriptor
/// each: at the fd limit every rsync failed with "Too many open files" (sync stopped).
#[test]
fn status_flood_of_idle_connections_does_not_stop_sync() {
    let s = setup!();
    let (mut agent, port) = agent_with_status(&s);
    s.write("before.txt", "before\n");
    s.wait(&mut agent, "the first file arrives");
    let pid = agent.pid();
    limit_agent_nofile(pid, AGENT_NOFILE);
    let own = raise_own_nofile(FLOOD as u64 + 256);
    let want = FLOOD.min(own.saturating_sub(128) as usize);
    assert!(
        want as u64 > AGENT_NOFILE,
        "this process can open only {own} descriptors: too few to flood"
    );

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut flood = Vec::with_capacity(want);
    let mut most_threads = 0;
    let start = Instant::now();
    while flood.len() < want && start.elapsed() < DEADLINE {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            flood.push(c);
        }
        if flood.len() % 100 == 0 {
            most_threads = most_threads.max(proc_status(pid, "Threads:"));
        }
    }
    assert!(
        flood.len() as u64 > AGENT_NOFILE,
        "only {} of {want} connections opened",
        flood.len()
    );

    s.write("during/flood.txt", "written during the flood\n");
    s.wait(&mut agent, "a change made during the flood arrives");
    most_threads = most_threads.max(proc_status(pid, "Threads:"));
    assert!(
        most_threads < MAX_THREADS,
        "{most_threads} threads during a flood of {} connections",
        flood.len()
    );

    drop(flood);
    let doc = status_answers(port, "/status answers after the flood");
    for r in doc["remotes"].as_array().cloned().unwrap_or_default() {
        assert_eq!(r["failed"], 0, "no push failed during the flood: {doc}");
    }
    let log = agent.log();
    assert!(!log.contains("Too many open files"), "{log}");
    agent.stop();
}

/// Once, the read timeout restarted with every byte: a client sending one byte a
/// second held its connection (and thread) for ever.
#[test]
fn status_slowloris_is_cut_off_by_one_deadline() {
    let s = setup!();
    let (mut agent, port) = agent_with_status(&s);
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    c.write_all(b"GET /status HTTP/1.0\r\nX-Slow: ")
        .expect("request start");
    let start = Instant::now();
    let mut answer = Vec::new();
    let closed = loop {
        if start.elapsed() > CUT_OFF {
            break false;
        }
        if c.write_all(b"a").is_err() {
            break true;
        }
        let mut buf = [0u8; 1024];
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    assert!(
        closed,
        "a client trickling a byte every 200 ms was still connected after {CUT_OFF:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.0 408"),
        "a trickled request is never answered as if complete: {answer}"
    );
    status_answers(port, "/status answers after the slow client");
    agent.assert_running();
    agent.stop();
}

/// Once, the request line was read with no size limit: four 256 MB lines took the
/// agent from 5 MB to 1.09 GB of memory.
#[test]
fn status_huge_request_line_is_refused_and_memory_stays_flat() {
    const TOTAL: usize = 256 << 20;
    const MAX_GROWTH_KB: u64 = 32 << 10;
    let s = setup!();
    let (mut agent, port) = agent_with_status(&s);
    let pid = agent.pid();
    let rss_before = proc_status(pid, "VmRSS:");
    let hwm_before = proc_status(pid, "VmHWM:");

    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    let mut most_rss = rss_before;
    let refused = c.write_all(b"GET /").is_err() || {
        loop {
            if sent >= TOTAL {
                break false;
            }
            match c.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
            if sent % (4 << 20) < chunk.len() {
                most_rss = most_rss.max(proc_status(pid, "VmRSS:"));
            }
        }
    };
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        refused || answer.starts_with("HTTP/1.0 431"),
        "all {sent} bytes were taken and the answer was: {answer:.200}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.0 431"),
        "answer to a {sent}-byte request line: {answer:.200}"
    );
    most_rss = most_rss.max(proc_status(pid, "VmRSS:"));
    let hwm_after = proc_status(pid, "VmHWM:");
    assert!(
        most_rss.saturating_sub(rss_before) < MAX_GROWTH_KB
            && hwm_after.saturating_sub(hwm_before) < MAX_GROWTH_KB,
        "agent memory grew: VmRSS {rss_before} -> {most_rss} kB, VmHWM {hwm_before} -> {hwm_after} kB"
    );
    status_answers(port, "/status answers after the huge request");
    agent.stop();
}

/// Once, nothing told an operator that a `hostip` off loopback shows the status to
/// anyone who can reach the port.
#[test]
fn status_on_a_public_address_warns_it_is_unauthenticated() {
    let s = setup!();
    let port = free_port("127.0.0.1");
    let mut conf = s.conf();
    conf.status_port = Some(port);
    let xml = conf
        .render()
        .replace("hostip=\"127.0.0.1\"", "hostip=\"0.0.0.0\"");
    let conf_path = s.dir.join("sersync.xml");
    fs::write(&conf_path, xml).expect("write sersync.xml");
    let mut cmd = command(&s.dir);
    cmd.arg("-o").arg(&conf_path);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    let log = agent.log();
    assert!(log.contains("unauthenticated"), "{log}");
    agent.stop();
}

// A local user who bound `<host port>` first made the agent exit 1 at start (a restart
// loop under systemd), and `--status` then printed whatever that user answered.
#[test]
fn squatted_status_port_neither_stops_sync_nor_fools_the_status_client() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind squatter");
    let port = squatter.local_addr().expect("addr").port();
    let setup = setup!();
    let mut conf = setup.conf();
    conf.status_port = Some(port);
    let mut agent = setup.agent_with(&conf, &[]);
    let log = agent.log();
    assert!(
        log.contains(&format!("cannot listen for status on 127.0.0.1:{port}"))
            && log.contains("in use"),
        "{log}"
    );
    setup.write("a.txt", "synced without the endpoint");
    setup.wait(&mut agent, "a change while the status port is squatted");

    // `--status` asks the instance over its control socket, so the squatter (who would
    // answer with its own JSON: another pid, terminal escapes) is never asked.
    let conf_path = setup.dir.join("sersync.xml");
    let (code, out, err) = run_on(&setup.dir, &conf_path, &["--status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("(pid {})", agent.pid())), "{out}");
    squatter
        .set_nonblocking(true)
        .expect("non-blocking squatter");
    assert!(
        squatter.accept().is_err(),
        "--status connected to the squatted port"
    );
    drop(squatter);

    // The agent binds the freed port by itself; /status then answers from it.
    wait_until(
        "the agent's endpoint answers on the freed port",
        Duration::from_secs(30),
        || {
            let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.write_all(b"GET /status HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = c.read_to_string(&mut body);
            body.contains(&format!("\"pid\": {}", agent.pid()))
        },
    );
    assert!(agent.log().contains("(bound now)"), "{}", agent.log());
    agent.stop();
}
