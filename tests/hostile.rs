//! A user who can write in the watched tree (an upload folder, a shared web root) against
//! the agent running as root (SPEC 12): the programs it runs, the records its socket
//! plugin sends, its own files, and the `--wait-synced` barrier. Each test plays that
//! user: an unprivileged user created for the test plants the names and files. Tests
//! that need root and `useradd` skip with a message elsewhere.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::agent::*;
use crate::support::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A two-daemon setup whose watched tree `src` belongs to `user` (and whose test
/// directory others can traverse).
fn setup_for(hint: &str, user: &User) -> Setup {
    let s = Setup::new(hint);
    chmod(s.dir.path(), 0o755);
    std::os::unix::fs::chown(&s.src, Some(user.uid), Some(user.gid)).expect("chown src");
    s
}

/// Creates `path` with some content, as `user`.
fn plant(user: &User, path: &Path) {
    user.run(
        "sh",
        &[
            "-c".as_ref(),
            "printf planted > \"$1\"".as_ref(),
            "sh".as_ref(),
            path.as_os_str(),
        ],
    );
}

/// The config `conf` renders, with `head` added to `<head>` and `sersync` to
/// `<sersync>`, written to `<dir>/sersync.xml`; its path.
fn write_config(s: &Setup, conf: &Conf, head: &str, sersync: &str) -> PathBuf {
    let xml = conf
        .render()
        .replace("  </sersync>\n", &format!("{sersync}  </sersync>\n"))
        .replace("</head>\n", &format!("{head}</head>\n"));
    let path = s.dir.join("sersync.xml");
    fs::write(&path, xml).expect("write sersync.xml");
    path
}

/// Starts the agent on `<dir>/sersync.xml` as written, and waits until it runs.
fn start(s: &Setup) -> Agent {
    let mut cmd = command(&s.dir);
    cmd.args(["-n", "4", "-o", "sersync.xml"]);
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    agent
}

// ---------------------------------------------------------------------------
// The socket plugin's records
// ---------------------------------------------------------------------------

/// A TCP receiver that keeps what each connection carried.
fn receiver() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut bytes = Vec::new();
            let _ = conn.read_to_end(&mut bytes);
            keep.lock().expect("lock").push(bytes);
        }
    });
    (port, got)
}

// A file named `x\nINJECTED-RECORD` made the socket plugin's receiver read two records:
// the path up to the newline, then a record the uploader chose.
#[test]
fn a_name_cannot_add_a_record_to_the_socket_plugin() {
    let Some(attacker) = User::create("j") else {
        return;
    };
    let s = setup_for("socket-inject", &attacker);
    let (port, got) = receiver();
    let head = format!(
        "  <plugin name=\"socket\"><localpath watch=\"{}\"><deshost ip=\"127.0.0.1\" \
         port=\"{port}\"/></localpath></plugin>\n",
        esc(&s.src.display().to_string())
    );
    write_config(
        &s,
        &s.conf(),
        &head,
        "    <plugin start=\"true\" name=\"socket\"/>\n",
    );
    let mut agent = start(&s);
    plant(&attacker, &s.src.join("x\nINJECTED-RECORD"));
    plant(&attacker, &s.src.join("plain.txt"));
    wait_until("both files reach the receiver", DEADLINE, || {
        agent.assert_running();
        let got = got.lock().expect("lock");
        let seen = |needle: &[u8]| {
            got.iter()
                .any(|c| c.windows(needle.len()).any(|w| w == needle))
        };
        seen(b"INJECTED-RECORD") && seen(b"plain.txt")
    });
    let got = got.lock().expect("lock").clone();
    for conn in &got {
        let records: Vec<&[u8]> = conn.split(|&b| b == b'\n').collect();
        assert!(
            records.len() == 2 && records[1].is_empty(),
            "one connection carries exactly one record: {:?}",
            String::from_utf8_lossy(conn)
        );
        assert!(
            !records[0].starts_with(b"INJECTED"),
            "a record the uploader chose: {:?}",
            String::from_utf8_lossy(conn)
        );
    }
    let mut want = s.src.as_os_str().as_bytes().to_vec();
    want.extend_from_slice(b"/x\\nINJECTED-RECORD\n");
    assert!(
        got.contains(&want),
        "the name goes escaped: {:?}",
        got.iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect::<Vec<_>>()
    );
    let mut plain = s.src.as_os_str().as_bytes().to_vec();
    plain.extend_from_slice(b"/plain.txt\n");
    assert!(got.contains(&plain), "an ordinary name goes as it is");
    agent.stop();
}

// ---------------------------------------------------------------------------
// --wait-synced's cookies
// ---------------------------------------------------------------------------

// A user who pre-created the barrier's cookie names (`.sersync2-cookie-<pid>-<n>`) made
// every --wait-synced time out ("File exists") while the remotes were level.
#[test]
fn planted_cookie_names_do_not_block_wait_synced() {
    let Some(attacker) = User::create("k") else {
        return;
    };
    let s = setup_for("cookie-squat", &attacker);
    let mut agent = Agent::start(&s.dir, &s.conf(), &[]);
    s.write("before.txt", "made before the barrier\n");
    let pid = agent.pid();
    // Every name the agent would have used, and more.
    attacker.run(
        "sh",
        &[
            "-c".as_ref(),
            "i=0; while [ $i -lt 300 ]; do : > \"$1/.sersync2-cookie-$2-$i\"; i=$((i+1)); done"
                .as_ref(),
            "sh".as_ref(),
            s.src.as_os_str(),
            OsStr::new(&pid.to_string()),
        ],
    );
    for round in 0..3 {
        let out = wait_synced(&s.dir, 20);
        assert!(
            out.status.success(),
            "round {round}: --wait-synced answers despite the planted names: {}",
            text(&out)
        );
    }
    for remote in s.remotes() {
        assert_eq!(
            fs::read(remote.join("before.txt")).ok().as_deref(),
            Some(&b"made before the barrier\n"[..]),
            "synced means the change is there"
        );
        let planted = fs::read_dir(&remote)
            .expect("list the remote")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_bytes().starts_with(b".sersync2-cookie-"))
            .count();
        assert_eq!(planted, 0, "cookie names are never pushed");
    }
    agent.stop();
}
