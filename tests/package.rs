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

    let root = Dir::new("deb-extract");
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
}
