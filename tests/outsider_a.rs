//! Regressions for what an outside tester found: the status endpoint squatted, a
//! `--status` client that trusted whatever answered, a fail log reported as written when
//! it was not, rsync children left behind at the exit, and a shell command plugin that
//! nothing warned about.

use std::fs;
use std::process::{Command, Stdio};

use crate::support::*;

/// `sersync2 ARGS -o CONF` run to its end: (exit code, stdout, stderr).
fn run(dir: &Dir, conf: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sersync_bin())
        .args(args)
        .arg("-o")
        .arg(conf)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sersync2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// The shipped example's `/bin/sh` command plugin, switched on, ran every changed file as
// a root shell script, and `-t` did not even mention plugins.
#[test]
fn shipped_shell_command_plugin_switched_on_is_shown_and_warned_about_by_t() {
    let dir = Dir::new("outsider-plugin");
    let watch = dir.mkdir_p("tongbu");
    let example =
        fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("confxml.xml"))
            .expect("read confxml.xml");
    let text = example
        .replace("/opt/tongbu", &watch.display().to_string())
        .replace(
            "<plugin start=\"false\" name=\"command\"/>",
            "<plugin start=\"true\" name=\"command\"/>",
        );
    assert_ne!(
        text,
        example.replace("/opt/tongbu", &watch.display().to_string())
    );
    let conf = dir.write("conf.xml", text);
    let (code, out, err) = run(&dir, &conf, &["-t"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("plugin: command: /bin/sh <changed file>"),
        "{out}"
    );
    assert!(
        out.contains("runs every changed file as a script as user"),
        "{out}"
    );
    assert!(
        out.contains("<filter start=\"true\"> with an <include>"),
        "{out}"
    );
    // Switched off (as shipped): said so, no warning.
    let conf = dir.write(
        "off.xml",
        example.replace("/opt/tongbu", &watch.display().to_string()),
    );
    let (code, out, err) = run(&dir, &conf, &["-t"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("plugin: off"), "{out}");
    assert!(!out.contains("as a script"), "{out}");
}
