//! The Debian package: `scripts/package.sh` builds it with cargo-deb from this checkout,
//! and it holds the binary, the unit, logrotate, the example config and the man page.
//! Skipped (with a message) where cargo-deb is not installed, as in CI: building
//! cargo-deb costs minutes.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cargo_deb_installed() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

// A package missing a file, installing the unit with /usr/local paths, enabling units or
// lacking the rsync dependency would install cleanly and then fail on first use.
#[test]
fn the_debian_package_builds_and_contains_what_it_should() {
    if !cargo_deb_installed() {
        eprintln!(
            "skipped: cargo-deb is not installed (cargo install cargo-deb --locked); \
             the Debian package was not built"
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = run(Command::new(repo.join("scripts/package.sh")).current_dir(repo));
    let printed = text(&built);
    let deb = Path::new(printed.lines().last().unwrap_or("").trim());
    let deb = repo.join(deb);
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "package.sh printed no .deb path: {printed:?}"
    );

    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for file in [
        "./usr/bin/sersync2",
        "./usr/lib/systemd/system/sersync2@.service",
        "./etc/logrotate.d/sersync2",
        "./etc/sersync/example.xml",
        "./usr/share/man/man1/sersync2.1.gz",
        "./usr/share/man/man5/sersync2.xml.5.gz",
        "./usr/share/bash-completion/completions/sersync2",
        "./usr/share/zsh/vendor-completions/_sersync2",
        "./usr/share/fish/vendor_completions.d/sersync2.fish",
        "./usr/share/doc/sersync/changelog.Debian.gz",
        "./usr/share/doc/sersync/copyright",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {file}"))),
            "{file} not in the package:\n{listing}"
        );
    }
    let depends = text(&run(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .arg("Depends")));
    assert!(depends.contains("rsync (>= 3.1)"), "Depends: {depends}");
    // prerm stops with deb-systemd-invoke.
    assert!(
        depends.contains("init-system-helpers"),
        "Depends: {depends}"
    );
    let prerm = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("prerm")));
    assert!(
        prerm.contains("deb-systemd-invoke stop") && prerm.contains("kill -TERM"),
        "prerm stops the running instances: {prerm}"
    );
    let postrm = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("postrm")));
    assert!(
        postrm.contains("sersync: kept /var/lib/sersync"),
        "{postrm}"
    );
    // lintian, where installed: no error, no warning.
    match Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
    {
        Err(e) => eprintln!("lintian not run ({e})"),
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stdout);
            let bad: Vec<&str> = said
                .lines()
                .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
                .collect();
            assert!(bad.is_empty() && out.status.success(), "lintian:\n{said}");
        }
    }
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")));
    assert!(
        conffiles.contains("/etc/sersync/example.xml"),
        "conffiles: {conffiles}"
    );
    let postinst = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("postinst")));
    assert!(
        postinst.contains("/var/lib/sersync"),
        "postinst: {postinst}"
    );
    let commands: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for word in ["enable", "start", "restart"] {
        for tool in ["systemctl", "deb-systemd-invoke", "deb-systemd-helper"] {
            let call = format!("{tool} {word}");
            assert!(
                !commands.iter().any(|l| l.contains(&call)),
                "postinst must not {word} units:\n{postinst}"
            );
        }
    }

    let root = test_dir!();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    let version = run(Command::new(root.join("usr/bin/sersync2")).arg("--version"));
    assert_eq!(
        text(&version).trim(),
        format!("sersync2 {}", env!("CARGO_PKG_VERSION"))
    );
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/sersync2@.service"))
        .expect("read the unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/sersync2 ") && !unit.contains("/usr/local/"),
        "the unit must run /usr/bin/sersync2:\n{unit}"
    );
    let man = text(&run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/sersync2.1.gz"))));
    assert!(
        man.contains(".SH \"EXIT STATUS\"") && man.contains(".SH OPTIONS"),
        "{man}"
    );
    let man5 = text(&run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man5/sersync2.xml.5.gz"))));
    assert!(
        man5.starts_with(".TH SERSYNC2.XML 5")
            && man5.contains(".SS <head/sersync/localpath/remote>"),
        "{man5}"
    );
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/sersync2"))
        .expect("bash completions");
    assert!(
        bash.contains("--wait-synced") && bash.contains("--probe"),
        "{bash}"
    );
    let changelog = text(&run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/doc/sersync/changelog.Debian.gz"))));
    assert!(
        changelog.starts_with(&format!("sersync ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "{changelog}"
    );
}

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/packaging/sersync2@.service"),
    )
    .expect("read the unit")
}

/// The value of `key=` in the unit (the last one, as systemd reads a plain setting).
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

// The changelog's first entry is this version (a package built from a checkout whose
// Cargo.toml moved on would otherwise ship an older changelog entry), and the unit keeps
// what a distribution's would: its documentation, no restart on a bad config, and the
// sandbox (without PrivateTmp=: a private /tmp is discarded at every stop, with the
// fail log in it). `systemd-analyze security` rates it, where systemd-analyze is
// installed: 5.0 at most.
#[test]
fn the_changelog_names_this_version_and_the_unit_is_sandboxed() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let changelog =
        std::fs::read_to_string(repo.join("scripts/packaging/changelog")).expect("changelog");
    assert!(
        changelog.starts_with(&format!("sersync ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "scripts/packaging/changelog's first entry must be this version:\n{changelog}"
    );
    let unit = unit();
    for (key, want) in [
        ("Documentation", "man:sersync2(1) man:sersync2.xml(5)"),
        ("RestartPreventExitStatus", "2"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "full"),
        ("ProtectHome", "read-only"),
    ] {
        assert_eq!(setting(&unit, key).as_deref(), Some(want), "{key}=\n{unit}");
    }
    assert!(setting(&unit, "CapabilityBoundingSet").is_some(), "{unit}");
    assert!(
        setting(&unit, "PrivateTmp").is_none(),
        "no PrivateTmp=:\n{unit}"
    );
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped the rating: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let dir = test_dir!();
    let path = dir.write(
        "sersync2@.service",
        unit.replace("/usr/local/bin/", "/usr/bin/"),
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = text(&out);
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("offline") {
        eprintln!("skipped the rating: this systemd-analyze has no --offline (systemd < 250)");
        return;
    }
    let rating: f64 = said
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall rating in:\n{said}"));
    assert!(
        rating <= 5.0,
        "systemd-analyze security rates the unit {rating}:\n{said}"
    );
}

/// `setpriv` arguments that give a process what the unit gives the agent: only the
/// unit's CapabilityBoundingSet= (root keeps no other capability across exec), and
/// NoNewPrivileges=.
fn unit_privileges(unit: &str) -> Vec<String> {
    let caps: Vec<String> = setting(unit, "CapabilityBoundingSet")
        .expect("CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    vec![
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".to_owned(),
        "--no-new-privs".to_owned(),
        "--".to_owned(),
    ]
}

// The unit takes every capability away but those it lists: the agent still watches
// (fanotify where it can mark the filesystem: CAP_SYS_ADMIN, and open_by_handle_at:
// CAP_DAC_READ_SEARCH), confines rsync to its nosymfollow view (a mount namespace:
// CAP_SYS_ADMIN) and mirrors, under exactly those. (The rest of the sandbox, read-only
// /usr, /etc and /home, needs systemd as PID 1 to run; this checks the capabilities.)
#[test]
fn the_agent_mirrors_with_only_the_capabilities_the_unit_leaves() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the unit runs the agent as root; this test must be root too");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let unit = unit();
    let privileges = unit_privileges(&unit);
    let s = setup!();
    let mut conf = s.conf();
    conf.backend = "auto".to_owned();
    let conf_path = s.dir.write("sersync.xml", conf.render());
    let check = |confined: bool| {
        let mut cmd = if confined {
            let mut c = Command::new("setpriv");
            c.args(&privileges).arg(sersync_bin());
            c
        } else {
            Command::new(sersync_bin())
        };
        let out = run(cmd
            .arg("-t")
            .arg("-o")
            .arg(&conf_path)
            .current_dir(s.dir.path()));
        text(&out)
    };
    let free = check(false);
    let confined = check(true);
    for line in free
        .lines()
        .filter(|l| l.starts_with("links:") || l.trim_start().starts_with("watcher:"))
    {
        assert!(
            confined.lines().any(|c| c == line),
            "under the unit's capabilities -t must still say `{line}`:\n{confined}"
        );
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(&privileges)
        .arg(sersync_bin())
        .args(["-n", "4", "-o"])
        .arg(&conf_path)
        .current_dir(s.dir.path());
    let mut agent = Agent::spawn(cmd, s.dir.join("agent.err"));
    agent.wait_live();
    s.write("a/b.txt", "under the unit's capabilities\n");
    s.write("c.txt", "and another\n");
    s.wait(
        &mut agent,
        "pushed by an agent with only the unit's capabilities",
    );
    let log = agent.log();
    assert!(
        !log.contains("without the nosymfollow guard") && !log.contains("ERROR"),
        "{log}"
    );
    agent.stop();
}

// prerm and postrm as dpkg runs them, in a private mount namespace where /usr/bin,
// /etc, /var/log and /var/lib are throw-away layers over the real ones (so the test
// changes nothing outside): an instance started by hand from /usr/bin/sersync2 is
// stopped by `prerm remove` (its SIGTERM: it exits 0), and `postrm purge` removes the
// log directory and says what it kept: a /var/lib/sersync with a fail log in it, and
// an /etc/sersync with a config written there.
#[test]
fn prerm_stops_a_running_instance_and_purge_says_what_it_kept() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: maintainer scripts run as root; this test must be root too");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = test_dir!();
    let watch = dir.mkdir_p("src");
    let conf = dir.write(
        "sersync.xml",
        format!(
            "<head><sersync><localpath watch=\"{}\"><remote ip=\"127.0.0.1\" name=\"m\"/>\
             </localpath><failLog path=\"{}\"/></sersync></head>",
            watch.display(),
            dir.join("fail.sh").display()
        ),
    );
    let script = r#"
set -eu
mount --make-rprivate /
layer() { # layer DIR: a throw-away overlay over DIR
    mkdir -p "$T/$2/upper" "$T/$2/work"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$T/$2/upper,workdir=$T/$2/work" "$1"
}
layer /usr/bin bin
layer /etc etc
mount -t tmpfs none /var/log
mount -t tmpfs none /var/lib
cp "$BIN" /usr/bin/sersync2
mkdir -p /var/log/sersync2 /var/lib/sersync /etc/sersync
echo owed >/var/lib/sersync/rsync_fail_log.sh
echo '<head/>' >/etc/sersync/web.xml
/usr/bin/sersync2 -o "$CONF" >"$T/agent.log" 2>&1 &
agent=$!
n=0
until grep -q 'live:' "$T/agent.log"; do
    n=$((n + 1))
    [ "$n" -lt 1200 ] || { echo "agent not live"; cat "$T/agent.log"; exit 1; }
    kill -0 "$agent" || { echo "agent exited"; cat "$T/agent.log"; exit 1; }
    sleep 0.05 # poll interval, inside a deadline loop
done
echo "agent pid $agent"
sh "$PRERM" remove
if kill -0 "$agent" 2>/dev/null; then echo "agent still running"; exit 1; fi
wait "$agent" && echo "agent exit 0" || echo "agent exit $?"
sh "$POSTRM" purge
[ -d /var/log/sersync2 ] && echo "log dir left" || echo "log dir removed"
"#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("T", dir.path())
        .env("BIN", sersync_bin())
        .env("CONF", &conf)
        .env("PRERM", repo.join("scripts/packaging/debian/prerm"))
        .env("POSTRM", repo.join("scripts/packaging/debian/postrm"))
        .output()
        .expect("run unshare");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let pid = said
        .lines()
        .find_map(|l| l.strip_prefix("agent pid "))
        .unwrap_or_else(|| panic!("{said}"));
    for want in [
        format!("sersync: stopping sersync2 (pid {pid}, not started by systemd)"),
        "agent exit 0".to_owned(),
        "sersync: kept /var/lib/sersync: it is not empty".to_owned(),
        "rsync_fail_log.sh".to_owned(),
        "sersync: kept /etc/sersync: it holds configs".to_owned(),
        "web.xml".to_owned(),
        "log dir removed".to_owned(),
    ] {
        assert!(said.contains(&want), "want `{want}`:\n{said}");
    }
}
