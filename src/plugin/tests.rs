//! Plugin tests: the config rules, and each plugin against a listener or script the test
//! starts itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::command::Outcome;
use super::*;
use crate::config::plugins::{Command, Cx, Plugin, RefreshCdn};
use crate::config::raw::{
    CdnInfo, Filter, HostPort, PluginDef, PluginLocalPath, PluginParam, RegexUrl, SendUrl,
};
use crate::config::Config;
use crate::config::ConfigError;
use crate::modes::module::Module;
use crate::sync::{AfterPush, Landed};
use crate::sys::Stop;

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn command_def(prefix: &str, suffix: &str) -> PluginDef {
    PluginDef {
        name: s("command"),
        param: Some(PluginParam {
            prefix: s(prefix),
            suffix: s(suffix),
            ignore_error: s("false"),
            line: Some(3),
        }),
        ..Default::default()
    }
}

fn command(def: &PluginDef) -> Command {
    match Plugin::from_raw(&Cx::new("test.xml", false), def).expect("valid command block") {
        Plugin::Command(c) => c,
        other => panic!("not a command plugin: {other:?}"),
    }
}

use crate::config::tests::{conf_with as conf, dir};

fn load(text: &str) -> Result<Config, ConfigError> {
    crate::config::parse(Path::new("test.xml"), text.as_bytes())
}

fn refused(text: &str) -> ConfigError {
    match load(text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(e) => e,
    }
}

/// Waits for `path` to hold the line `want` (a background writer); returns the text.
fn wait_for_line(path: &Path, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.lines().any(|l| l == want) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts one connection and returns everything sent on it.
fn receive_one(listener: TcpListener) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = Vec::new();
            let _ = conn.read_to_end(&mut buf);
            let _ = tx.send(buf);
        }
    });
    rx
}

/// A one-request HTTP server: returns the request line, answers with `status`.
fn http_once(listener: TcpListener, status: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let mut reader = BufReader::new(conn);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut conn = reader.into_inner();
            let _ = write!(conn, "HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(first.trim_end().to_owned());
        }
    });
    rx
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

// ---- command ----

#[test]
fn command_gets_the_path_as_one_argument_and_runs_nothing_in_it() {
    let d = dir();
    let out = d.path().join("out");
    let name = "a b'c\"$(touch PWNED)`touch PWNED2`;x.txt";
    let abs = d.path().join(name);
    let c = command(&command_def(
        r#"/bin/sh -c 'printf %s "$1" > "$2"' sh"#,
        &out.display().to_string(),
    ));
    assert_eq!(c.run(&abs), Outcome::Ok);
    assert_eq!(
        std::fs::read_to_string(&out).expect("out"),
        abs.display().to_string()
    );
    assert!(!Path::new("PWNED").exists() && !d.path().join("PWNED").exists());
    assert!(!Path::new("PWNED2").exists() && !d.path().join("PWNED2").exists());
}

#[test]
fn command_argv_is_prefix_path_suffix() {
    let c = command(&command_def("/bin/echo -n 'two words'", "--end \"x y\""));
    let argv: Vec<String> = c
        .argv(Path::new("/w/a file"))
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        argv,
        ["/bin/echo", "-n", "two words", "/w/a file", "--end", "x y"]
    );
}

#[test]
fn command_include_filter_is_honoured_on_the_absolute_path() {
    let d = dir();
    let out = d.path().join("out");
    let mut def = command_def(
        r#"/bin/sh -c 'printf "%s\n" "$1" >> "$2"' sh"#,
        &out.display().to_string(),
    );
    def.filter = Some(Filter {
        start: s("true"),
        include: vec![crate::config::raw::Expression {
            expression: s(r"(.*)\.php"),
            line: Some(5),
        }],
        ..Default::default()
    });
    let plugin = Plugin::from_raw(&Cx::new("test.xml", false), &def).expect("valid");
    assert!(plugin.wants(Path::new("/w/x/index.php")));
    assert!(!plugin.wants(Path::new("/w/x/index.php.txt")));
    assert!(!plugin.wants(Path::new("/w/x/readme.txt")));
    let _ = plugin.run(&d.path().join("readme.txt"));
    assert!(
        !out.exists(),
        "a path outside the include filter ran the command"
    );
    let _ = plugin.run(&d.path().join("index.php"));
    assert_eq!(
        std::fs::read_to_string(&out).expect("out"),
        format!("{}\n", d.path().join("index.php").display())
    );
}

// The command filter's `(.*)\.key` let names with a newline or bytes that are not
// UTF-8 through.
#[test]
fn command_exclude_filter_matches_names_with_a_newline_or_invalid_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let mut def = command_def("/bin/true", "");
    def.filter = Some(Filter {
        start: s("true"),
        exclude: vec![crate::config::raw::Expression {
            expression: s(r"(.*)\.key"),
            line: Some(5),
        }],
        ..Default::default()
    });
    let c = command(&def);
    for name in [&b"/w/live\xff.key"[..], b"/w/nl\nx.key"] {
        let p = Path::new(std::ffi::OsStr::from_bytes(name));
        assert!(!c.wants(p), "{}", String::from_utf8_lossy(name));
    }
    assert!(c.wants(Path::new("/w/live.txt")));
}

#[test]
fn command_filter_off_runs_for_every_path() {
    let mut def = command_def("/bin/true", "");
    def.filter = Some(Filter {
        start: s("false"),
        include: vec![crate::config::raw::Expression {
            expression: s(r"(.*)\.php"),
            line: Some(5),
        }],
        ..Default::default()
    });
    assert!(command(&def).wants(Path::new("/w/readme.txt")));
}

#[test]
fn command_failure_is_reported_and_ignore_error_is_read() {
    let mut def = command_def("/bin/sh -c 'echo broken >&2; exit 3' sh", "");
    let c = command(&def);
    assert!(!c.ignore_error);
    assert_eq!(
        c.run(Path::new("/w/a")),
        Outcome::Failed(3, "broken".to_owned())
    );
    if let Some(p) = def.param.as_mut() {
        p.ignore_error = s("TRUE");
    }
    let c = command(&def);
    assert!(c.ignore_error);
    // ignoreError only changes how the failure is logged.
    assert_eq!(
        c.run(Path::new("/w/a")),
        Outcome::Failed(3, "broken".to_owned())
    );
    if let Some(p) = def.param.as_mut() {
        p.ignore_error = s("yes");
    }
    let e = Plugin::from_raw(&Cx::new("test.xml", false), &def).expect_err("yes is not a flag");
    assert!(e.message.contains("ignoreError"), "{e}");
}

#[test]
fn command_that_hangs_is_killed_at_the_timeout() {
    let mut c = command(&command_def("/bin/sh -c 'sleep 30' sh", ""));
    c.timeout = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(c.run(Path::new("/w/a")), Outcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn command_needs_a_runnable_prefix() {
    let e = Plugin::from_raw(&Cx::new("test.xml", false), &command_def("", ""))
        .expect_err("empty prefix");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("prefix"), "{e}");
    let e = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &command_def("/nonexistent/hook.sh", ""),
    )
    .expect_err("missing program");
    assert!(e.message.contains("not found"), "{e}");
    let e = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &command_def("/bin/sh -c 'unterminated", ""),
    )
    .expect_err("bad quoting");
    assert!(e.message.contains("quote"), "{e}");
    assert!(
        Plugin::from_raw(&Cx::new("test.xml", false), &command_def("sh", "")).is_ok(),
        "found on $PATH"
    );
}

// A program another user could change ran as root: the program, and the script an
// interpreter prefix names, must be trusted like the fail log.
#[test]
fn command_program_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let hooks = d.path().join("hooks");
    std::fs::create_dir(&hooks).expect("mkdir");
    let hook = hooks.join("purge.sh");
    std::fs::write(&hook, b"#!/bin/sh\n").expect("write");
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    chmod(&hook, 0o755);
    let cx = Cx::new("test.xml", false);
    let direct = hook.display().to_string();
    let through_sh = format!("/bin/sh {}", hook.display());
    for prefix in [&direct, &through_sh] {
        assert!(
            Plugin::from_raw(&cx, &command_def(prefix, "")).is_ok(),
            "{prefix}"
        );
    }
    chmod(&hook, 0o777);
    for prefix in [&direct, &through_sh] {
        let e = Plugin::from_raw(&cx, &command_def(prefix, "")).expect_err("writable");
        assert_eq!(e.line, Some(3));
        assert!(
            e.message.contains("refusing to run") && e.message.contains("0777"),
            "{e}"
        );
    }
    chmod(&hook, 0o755);
    chmod(&hooks, 0o775);
    let e = Plugin::from_raw(&cx, &command_def(&direct, "")).expect_err("open directory");
    assert!(
        e.message.contains(&hooks.display().to_string()) && e.message.contains("0775"),
        "{e}"
    );
}

// ---- socket ----

fn socket_def(watch: &Path, ip: &str, port: &str) -> PluginDef {
    PluginDef {
        name: s("socket"),
        localpath: vec![PluginLocalPath {
            watch: s(&watch.display().to_string()),
            line: Some(4),
            deshost: vec![HostPort {
                ip: s(ip),
                port: s(port),
                line: Some(5),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn socket_listener_receives_the_path_line() {
    let d = dir();
    let (l, port) = listener();
    let got = receive_one(l);
    let Plugin::Socket(sock) = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &socket_def(d.path(), "127.0.0.1", &port.to_string()),
    )
    .expect("valid") else {
        panic!("not socket");
    };
    let abs = d.path().join("dir/new file.txt");
    let results = sock.send(&abs);
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok(), "{:?}", results[0]);
    let line = got.recv_timeout(Duration::from_secs(5)).expect("received");
    assert_eq!(line, format!("{}\n", abs.display()).into_bytes());
    assert!(
        sock.send(Path::new("/elsewhere/x")).is_empty(),
        "outside the watch"
    );
}

#[test]
fn socket_to_a_closed_port_is_an_error_not_a_panic() {
    let d = dir();
    let (l, port) = listener();
    drop(l);
    let Plugin::Socket(sock) = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &socket_def(d.path(), "127.0.0.1", &port.to_string()),
    )
    .expect("valid") else {
        panic!("not socket");
    };
    let results = sock.send(&d.path().join("a"));
    assert!(results[0].1.is_err());
}

#[test]
fn socket_ports_are_checked() {
    let d = dir();
    for bad in ["0", "65536", "80a", ""] {
        let e = Plugin::from_raw(
            &Cx::new("test.xml", false),
            &socket_def(d.path(), "10.0.0.1", bad),
        )
        .expect_err("bad port");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("port"), "{e}");
    }
    let e = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &socket_def(d.path(), " ", "8009"),
    )
    .expect_err("no ip");
    assert!(e.message.contains("ip"), "{e}");
}

// ---- refreshCDN ----

fn cdn_def(watch: &str, port: &str, regex: Option<&str>) -> PluginDef {
    PluginDef {
        name: s("refreshCDN"),
        localpath: vec![PluginLocalPath {
            watch: s(watch),
            line: Some(4),
            cdninfo: Some(CdnInfo {
                domain_name: s("127.0.0.1"),
                port: s(port),
                username: s("us er"),
                passwd: s("p&w"),
                line: Some(5),
            }),
            sendurl: Some(SendUrl {
                base: s("http://pic.xoyo.com/cms/"),
                line: Some(6),
            }),
            regexurl: Some(RegexUrl {
                regex: s(if regex.is_some() { "true" } else { "false" }),
                pattern: s(regex.unwrap_or("cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images")),
                line: Some(7),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cdn(def: &PluginDef) -> RefreshCdn {
    match Plugin::from_raw(&Cx::new("test.xml", false), def).expect("valid refreshCDN block") {
        Plugin::RefreshCdn(r) => r,
        other => panic!("not refreshCDN: {other:?}"),
    }
}

#[test]
fn cdn_url_is_base_plus_the_relative_path() {
    let r = cdn(&cdn_def("/data0/htdocs/cms.xoyo.com/site/", "80", None));
    assert_eq!(
        r.urls(Path::new(
            "/data0/htdocs/cms.xoyo.com/site/jx3.xoyo.com/images/a b.jpg"
        )),
        ["http://pic.xoyo.com/cms/jx3.xoyo.com/images/a%20b.jpg"]
    );
    assert!(r.urls(Path::new("/data0/htdocs/other/a.jpg")).is_empty());
}

#[test]
fn cdn_regexurl_replaces_the_match_with_its_group() {
    let r = cdn(&cdn_def(
        "/data0/htdocs/cms.xoyo.com/site",
        "80",
        Some("cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images"),
    ));
    assert_eq!(
        r.urls(Path::new(
            "/data0/htdocs/cms.xoyo.com/site/jx3.xoyo.com/images/2010/08/a.jpg"
        )),
        ["http://pic.xoyo.com/cms/jx3/2010/08/a.jpg"]
    );
    // Not matched: the plain rule.
    assert_eq!(
        r.urls(Path::new("/data0/htdocs/cms.xoyo.com/site/misc/a.jpg")),
        ["http://pic.xoyo.com/cms/misc/a.jpg"]
    );
}

#[test]
fn cdn_listener_receives_a_get_with_the_purge_url() {
    let d = dir();
    let (l, port) = listener();
    let got = http_once(l, "200 OK");
    let r = cdn(&cdn_def(
        &d.path().display().to_string(),
        &port.to_string(),
        None,
    ));
    let results = r.refresh(&d.path().join("img/a.jpg"));
    let results: Vec<_> = results
        .into_iter()
        .map(|(url, r)| (url, r.map_err(|e| e.to_string())))
        .collect();
    assert_eq!(
        results,
        [(
            "http://pic.xoyo.com/cms/img/a.jpg".to_owned(),
            Ok::<u16, String>(200)
        )]
    );
    let line = got.recv_timeout(Duration::from_secs(5)).expect("request");
    assert_eq!(
        line,
        "GET /index.jsp?user=us%20er&pswd=p%26w&ok=ok&urls=http%3A%2F%2Fpic.xoyo.com%2Fcms%2Fimg%2Fa.jpg HTTP/1.0"
    );
}

#[test]
fn cdn_error_status_is_returned() {
    let d = dir();
    let (l, port) = listener();
    let _got = http_once(l, "403 Forbidden");
    let r = cdn(&cdn_def(
        &d.path().display().to_string(),
        &port.to_string(),
        None,
    ));
    let results = r.refresh(&d.path().join("a.jpg"));
    assert_eq!(results[0].1.as_ref().ok(), Some(&403));
}

#[test]
fn cdn_block_is_checked() {
    let e = Plugin::from_raw(&Cx::new("test.xml", false), &cdn_def("/w", "http", None))
        .expect_err("bad port");
    assert_eq!(e.line, Some(5));
    let e = Plugin::from_raw(
        &Cx::new("test.xml", false),
        &cdn_def("/w", "80", Some("([a-z")),
    )
    .expect_err("bad re");
    assert_eq!(e.line, Some(7));
    let mut def = cdn_def("/w", "80", None);
    def.localpath[0].sendurl = Some(SendUrl {
        base: s("pic.xoyo.com/cms"),
        line: Some(6),
    });
    let e = Plugin::from_raw(&Cx::new("test.xml", false), &def).expect_err("base without scheme");
    assert!(e.message.contains("http://"), "{e}");
}

// ---- config ----

const COMMAND_BLOCK: &str = r#"<plugin name="command">
    <param prefix="/bin/sh" suffix="" ignoreError="true"/>
  </plugin>"#;

#[test]
fn switch_on_needs_a_defined_known_plugin() {
    let d = dir();
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="ftp"/>"#,
        COMMAND_BLOCK,
    ));
    assert!(e.message.contains("unknown plugin"), "{e}");
    assert_eq!(e.line, Some(7), "{e}");
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="socket"/>"#,
        COMMAND_BLOCK,
    ));
    assert!(e.message.contains("not defined"), "{e}");
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="maybe" name="command"/>"#,
        "",
    ));
    assert!(e.message.contains("true"), "{e}");
    let twice = format!("{COMMAND_BLOCK}{COMMAND_BLOCK}");
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="command"/>"#,
        &twice,
    ));
    assert!(e.message.contains("twice"), "{e}");
}

#[test]
fn switch_on_command_needs_a_prefix() {
    let d = dir();
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="Command"/>"#,
        r#"<plugin name="command"><param suffix="x" ignoreError="true"/></plugin>"#,
    ));
    assert!(e.message.contains("missing prefix"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn switch_on_socket_with_a_bad_port_is_refused() {
    let d = dir();
    let block = format!(
        r#"<plugin name="socket"><localpath watch="{}"><deshost ip="127.0.0.1" port="99999"/></localpath></plugin>"#,
        d.path().display()
    );
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="socket"/>"#,
        &block,
    ));
    assert!(e.message.contains("not a port"), "{e}");
}

#[test]
fn switch_on_plugin_watch_must_meet_a_sync_root() {
    let d = dir();
    let block = r#"<plugin name="socket"><localpath watch="/somewhere/else"><deshost ip="127.0.0.1" port="8009"/></localpath></plugin>"#;
    let e = refused(&conf(
        d.path(),
        r#"<plugin start="true" name="socket"/>"#,
        block,
    ));
    assert!(e.message.contains("not inside"), "{e}");
}

#[test]
fn unused_blocks_are_not_checked_until_asked_for() {
    let d = dir();
    let c = load(&conf(
        d.path(),
        r#"<plugin start="false" name="command"/>"#,
        r#"<plugin name="command"><param prefix=""/></plugin><plugin name="http"/>"#,
    ))
    .expect("an unused bad block does not stop a start");
    assert!(c.plugins.active().is_none());
    assert!(Runner::for_live(&c.plugins).is_none());
    let e = c
        .plugins
        .get("COMMAND")
        .expect_err("checked on demand")
        .to_string();
    assert!(e.contains("prefix"), "{e}");
    let e = c
        .plugins
        .get("socket")
        .expect_err("not defined")
        .to_string();
    assert!(e.contains("not defined"), "{e}");
    let e = c.plugins.get("http").expect_err("not a module").to_string();
    assert!(e.contains("unknown module"), "{e}");
}

fn shipped(path: &Path, d: &Path, switch_on: Option<&str>) -> Option<Config> {
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("skipped: {} not present", path.display());
        return None;
    };
    let mut text = String::from_utf8_lossy(&bytes).replace("/opt/tongbu", &d.display().to_string());
    if let Some(name) = switch_on {
        text = text.replace(
            r#"<plugin start="false" name="command"/>"#,
            &format!(r#"<plugin start="true" name="{name}"/>"#),
        );
    }
    Some(load(&text).expect("the shipped plugin blocks load"))
}

#[test]
fn shipped_and_original_plugin_blocks_load() {
    let d = dir();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        here.join("confxml.xml"),
        here.join("../shared/compat/confxml-2.5.4.xml"),
    ] {
        let Some(c) = shipped(&file, d.path(), None) else {
            continue;
        };
        assert!(c.plugins.active().is_none(), "{}", file.display());
        for name in ["command", "socket", "refreshcdn"] {
            let p = c
                .plugins
                .get(name)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
            assert_eq!(p.name().to_ascii_lowercase(), name);
        }
        for name in ["command", "socket"] {
            let c = shipped(&file, d.path(), Some(name)).expect("present");
            assert_eq!(c.plugins.active().map(|p| p.name()), Some(name));
            assert!(Runner::for_live(&c.plugins).is_some());
        }
    }
}

// ---- running ----

#[test]
fn after_push_runs_the_active_plugin_on_its_own_thread() {
    let d = dir();
    let (l, port) = listener();
    let got = receive_one(l);
    let block = format!(
        r#"<plugin name="socket"><localpath watch="{}"><deshost ip="127.0.0.1" port="{port}"/></localpath></plugin>"#,
        d.path().display()
    );
    let c = load(&conf(
        d.path(),
        r#"<plugin start="true" name="socket"/>"#,
        &block,
    ))
    .expect("loads");
    let plugins = Runner::for_live(&c.plugins).expect("active");
    let started = Instant::now();
    plugins.pushed(&Landed {
        root: d.path(),
        remote: "127.0.0.1::m",
        first: true,
        entries: &[Entry::plain("sub/file.txt")],
    });
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "after_push must not wait"
    );
    let line = got.recv_timeout(Duration::from_secs(10)).expect("received");
    assert_eq!(
        line,
        format!("{}\n", d.path().join("sub/file.txt").display()).into_bytes()
    );
}

#[test]
fn module_names_are_checked() {
    let d = dir();
    let block = r#"<plugin name="socket"><localpath watch="/nonexistent/dir"><deshost ip="127.0.0.1" port="8009"/></localpath></plugin>"#;
    let c = load(&conf(d.path(), "", &format!("{COMMAND_BLOCK}{block}"))).expect("loads");
    let e = Module::new(&c, "ftp").err().expect("unknown").to_string();
    assert!(e.contains("unknown module"), "{e}");
    let e = Module::new(&c, "refreshCDN")
        .err()
        .expect("undefined")
        .to_string();
    assert!(e.contains("not defined"), "{e}");
    let e = Module::new(&c, "socket")
        .err()
        .expect("missing dir")
        .to_string();
    assert!(e.contains("/nonexistent/dir"), "{e}");
    assert_eq!(
        Module::new(&c, "command").map(|m| m.name()).ok(),
        Some("command")
    );
}

#[test]
fn module_runs_the_plugin_for_changes_without_rsync() {
    let d = dir();
    let watch = d.path().join("w");
    std::fs::create_dir(&watch).expect("mkdir");
    let out = d.path().join("out");
    let block = format!(
        r#"<plugin name="command">
    <param prefix="/bin/sh -c 'printf &quot;%s\n&quot; &quot;$1&quot; &gt;&gt; &quot;$2&quot;' sh" suffix="{}"/>
  </plugin>"#,
        out.display()
    );
    let c = load(&conf(&watch, "", &block)).expect("loads");
    let module = Module::new(&c, "command").expect("defined");
    let running = module
        .start_with(&c, Stop::manual().expect("stop"))
        .expect("started");
    std::fs::create_dir(watch.join("sub")).expect("mkdir");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(watch.join("sub/a file.txt"), b"x").expect("write");
    let file = watch.join("sub/a file.txt").display().to_string();
    let text = wait_for_line(&out, &file);
    running.stop();
    // The new directory is a change too (createFolder is on by default).
    let sub = watch.join("sub").display().to_string();
    assert!(text.lines().any(|l| l == sub), "{text}");
}

#[test]
fn shell_command_plugin_without_include_filter_runs_every_changed_file_as_a_script() {
    // The shipped `<param prefix="/bin/sh">` with its filter off ran every uploaded file
    // as a root shell script, and nothing said so.
    let c = command(&command_def("/bin/sh", ""));
    assert!(c.runs_changed_files());
    assert_eq!(c.describe(), "/bin/sh <changed file>");
    for prefix in ["sh -x", "/usr/bin/env", "/usr/bin/env -i A=b sh"] {
        if let Ok(Plugin::Command(c)) =
            Plugin::from_raw(&Cx::new("test.xml", false), &command_def(prefix, ""))
        {
            assert!(c.runs_changed_files(), "{prefix}");
        }
    }
    // A script of its own, inline code, or a dedicated program: the file is data.
    let d = dir();
    let script = d.path().join("hook.sh");
    std::fs::write(&script, b"#!/bin/sh\n").expect("write the script");
    let own = format!("/bin/sh {}", script.display());
    for prefix in [own.as_str(), "/bin/sh -c 'true'", "/bin/true"] {
        assert!(
            !command(&command_def(prefix, "")).runs_changed_files(),
            "{prefix}"
        );
    }
    // An include filter narrows what runs.
    let mut def = command_def("/bin/sh", "");
    def.filter = Some(Filter {
        start: s("true"),
        include: vec![crate::config::raw::Expression {
            expression: s(r"(.*)\.sh"),
            line: Some(5),
        }],
        ..Default::default()
    });
    assert!(!command(&def).runs_changed_files());
}

// ---- batch mode ----

fn batch_def(prefix: &str, mode: &str, timeout: Option<&str>) -> PluginDef {
    PluginDef {
        mode: s(mode),
        timeout: timeout.and_then(s),
        line: Some(7),
        ..command_def(prefix, "")
    }
}

fn refused_def(def: &PluginDef) -> String {
    match Plugin::from_raw(&Cx::new("test.xml", false), def) {
        Ok(p) => panic!("should have been refused: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_mode_is_file_unless_batch_is_written() {
    let c = command(&command_def("/bin/true", ""));
    assert_eq!(c.mode(), Mode::File);
    assert_eq!(
        c.timeout(),
        crate::config::plugins::command::DEFAULT_TIMEOUT
    );
    assert!(
        c.describe_mode().starts_with("mode=\"file\""),
        "{}",
        c.describe_mode()
    );
    let c = command(&batch_def("/bin/true", "Batch", Some("5")));
    assert_eq!(c.mode(), Mode::Batch);
    assert_eq!(c.timeout(), Duration::from_secs(5));
    assert_eq!(c.describe(), "/bin/true < paths");
    assert!(
        c.describe_mode().starts_with("mode=\"batch\"") && c.describe_mode().contains("5s"),
        "{}",
        c.describe_mode()
    );
    // No path is an argument: a shell prefix runs no changed file.
    assert!(!command(&batch_def("/bin/sh", "batch", None)).runs_changed_files());
    assert!(command(&command_def("/bin/sh", "")).runs_changed_files());
    let c = command(&command_def("/bin/true", ""));
    assert_eq!(c.describe(), "/bin/true <changed file>");
}

#[test]
fn bad_modes_and_timeouts_are_refused_with_the_line_and_what_to_write() {
    let e = refused_def(&batch_def("/bin/true", "batches", None));
    assert!(e.starts_with("test.xml:7:"), "{e}");
    assert!(
        e.contains("mode=\"batches\"")
            && e.contains("mode=\"file\"")
            && e.contains("mode=\"batch\""),
        "{e}"
    );
    for bad in ["-1", "0", "abc", "86401", "1.5", ""] {
        let e = refused_def(&batch_def("/bin/true", "batch", Some(bad)));
        assert!(e.starts_with("test.xml:7:"), "{bad}: {e}");
        assert!(
            e.contains(&format!("timeout=\"{bad}\"")) && e.contains("timeout=\"60\""),
            "{bad}: {e}"
        );
    }
    let mut socket = batch_def("/bin/true", "batch", None);
    socket.name = s("socket");
    let e = refused_def(&socket);
    assert!(e.contains("command plugin's only"), "{e}");
}

#[test]
fn a_batch_reads_each_path_followed_by_a_nul() {
    let b = command::Batch {
        root: "/w".into(),
        remote: "h::m".into(),
        paths: vec!["a b".into(), "new\nline".into(), "d/".into()],
    };
    assert_eq!(b.stdin_bytes(), b"a b\0new\nline\0d/\0");
    assert_eq!(batch_path(&Entry::plain("x/y")), Path::new("x/y"));
    assert_eq!(batch_path(&Entry::listing("x")).as_os_str(), "x/");
    assert_eq!(batch_path(&Entry::listing("")).as_os_str(), "./");
    assert_eq!(batch_path(&Entry::plain("")).as_os_str(), ".");
}

#[test]
fn a_batch_hook_gets_the_paths_on_stdin_and_the_remote_in_its_environment() {
    let d = dir();
    let out = d.path().join("out");
    let env = d.path().join("env");
    let prefix = format!(
        r#"/bin/sh -c 'cat > "$1"; printf "%s|%s|%s" "$SERSYNC_REMOTE" "$SERSYNC_ROOT" "$SERSYNC_PATHS" > "$2"' sh {} {}"#,
        out.display(),
        env.display()
    );
    let c = command(&batch_def(&prefix, "batch", None));
    let b = command::Batch {
        root: d.path().to_path_buf(),
        remote: "127.0.0.1::www".into(),
        paths: vec!["a b".into(), "new\nline".into()],
    };
    assert_eq!(c.run_batch(&b), Outcome::Ok);
    assert_eq!(std::fs::read(&out).expect("out"), b"a b\0new\nline\0");
    assert_eq!(
        std::fs::read_to_string(&env).expect("env"),
        format!("127.0.0.1::www|{}|2", d.path().display())
    );
}

#[test]
fn a_batch_hook_that_never_reads_its_stdin_does_not_block() {
    // 100,000 paths, far beyond a pipe's buffer: written to a file before the hook
    // starts, so a hook that exits without reading ends the run as any other.
    let c = command(&batch_def("/bin/true", "batch", None));
    let b = command::Batch {
        root: "/w".into(),
        remote: "h::m".into(),
        paths: (0..100_000)
            .map(|i| format!("dir/file-{i}").into())
            .collect(),
    };
    assert_eq!(c.run_batch(&b), Outcome::Ok);
    // One that never reads and never ends is killed at its timeout.
    let c = command(&batch_def("/bin/sleep 600", "batch", Some("1")));
    assert_eq!(c.run_batch(&b), Outcome::TimedOut);
}

#[test]
fn a_failing_batch_hook_is_counted_and_the_next_push_still_runs_it() {
    let d = dir();
    let marks = d.path().join("marks");
    let prefix = format!(
        r#"/bin/sh -c 'echo "$SERSYNC_REMOTE" >> "$1"; exit 3' sh {}"#,
        marks.display()
    );
    let block = format!(
        r#"<plugin name="command" mode="batch"><param prefix="{}"/></plugin>"#,
        prefix.replace('"', "&quot;")
    );
    let c = load(&conf(
        d.path(),
        r#"<plugin start="true" name="command"/>"#,
        &block,
    ))
    .expect("loads");
    let runner = Runner::for_live(&c.plugins).expect("active");
    for (remote, first) in [("a::m", true), ("b::m", false)] {
        runner.pushed(&Landed {
            root: d.path(),
            remote,
            first,
            entries: &[Entry::plain("f")],
        });
    }
    let started = Instant::now();
    while runner.report().runs < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "the runs end");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = runner.report();
    assert_eq!(
        (r.name, r.mode, r.runs, r.failed),
        ("command", "batch", 2, 2)
    );
    let last = r.last_failure.expect("a failure").1;
    assert!(last.contains("exit 3") && last.contains("b::m"), "{last}");
    // Once per remote, not only after the root's first.
    assert_eq!(
        std::fs::read_to_string(&marks).expect("marks"),
        "a::m\nb::m\n"
    );
}
