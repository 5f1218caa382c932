//! Config loading and validation: what must load, and what must be refused with its place.

use super::*;

pub(crate) fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A minimal valid config watching `watch`, with `extra` inserted inside <sersync>.
fn conf(watch: &Path, extra: &str) -> String {
    conf_with(watch, extra, "")
}

/// A minimal valid config watching `watch`, with `inside` inserted in <sersync> and
/// `after` after it (the plugin tests put their blocks there).
pub(crate) fn conf_with(watch: &Path, inside: &str, after: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
  <sersync>
    <localpath watch="{}">
      <remote ip="127.0.0.1" name="mod"/>
    </localpath>
    {inside}
  </sersync>
  {after}
</head>"#,
        watch.display()
    )
}

fn load_str(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("test.xml"), text.as_bytes())
}

fn err(text: &str) -> ConfigError {
    match load_str(text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn the_original_default_loads() {
    // ../shared/compat holds sersync 2.5.4's shipped confxml.xml, byte for byte.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/confxml-2.5.4.xml");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("skipped: {} not present", path.display());
        return;
    };
    let d = dir();
    // The watch dir /opt/tongbu may not exist here: point it at a temp dir.
    let text =
        String::from_utf8_lossy(&bytes).replace("/opt/tongbu", &d.path().display().to_string());
    let c = load_str(&text).expect("the original default must load");
    assert_eq!(c.roots.len(), 1);
    assert_eq!(c.roots[0].remotes[0].name, "tongbu1");
    assert_eq!(c.rsync.params, ["-artuz"]);
    assert!(c.excludes.is_empty(), "filter is off in the default");
    assert_eq!(c.events, Events::default());
    assert_eq!(c.replay_every, Duration::from_secs(3600));
    assert!(c.crontab.is_none());
    assert!(c.unknown.is_empty(), "{:?}", c.unknown);
}

#[test]
fn the_shipped_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("confxml.xml");
    let bytes = std::fs::read(&path).expect("confxml.xml ships with the project");
    let d = dir();
    let text =
        String::from_utf8_lossy(&bytes).replace("/opt/tongbu", &d.path().display().to_string());
    let c = load_str(&text).expect("the shipped example must load");
    assert_eq!(c.rsync.batch, 5000);
    assert!(c.unknown.is_empty(), "{:?}", c.unknown);
}

#[test]
fn text_between_elements_is_ignored() {
    let d = dir();
    let text = conf(
        d.path(),
        r#"<rsync> # tutorials paste comments like this
        <commonParams params="-az"/> # and this
        </rsync>"#,
    );
    let c = load_str(&text).expect("loads");
    assert_eq!(c.rsync.params, ["-az"]);
}

#[test]
fn latin1_declaration_with_real_latin1_bytes() {
    let d = dir();
    let watch = d.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&watch).expect("mkdir");
    let mut bytes = br#"<?xml version="1.0" encoding="ISO-8859-1"?>
<head version="2.5"><!-- r"#
        .to_vec();
    bytes.extend_from_slice(b"\xe9sum\xe9 -->\n<sersync><localpath watch=\"");
    bytes.extend_from_slice(watch.as_os_str().as_bytes());
    bytes
        .extend_from_slice(b"\"><remote ip=\"10.0.0.1\" name=\"m\"/></localpath></sersync></head>");
    let c = parse(Path::new("latin1.xml"), &bytes).expect("latin-1 config loads");
    assert_eq!(
        c.roots[0].path, watch,
        "the watch path keeps its Latin-1 bytes"
    );
}

#[test]
fn trailing_slash_on_watch_is_the_same_watch() {
    let d = dir();
    let with = format!("{}/", d.path().display());
    let c = load_str(&conf(Path::new(&with), "")).expect("loads");
    assert_eq!(c.roots[0].path, d.path());
}

#[test]
fn names_match_case_insensitively() {
    let d = dir();
    let text = format!(
        r#"<HEAD><Sersync><LocalPath Watch="{}"><Remote IP="h" Name="m"/></LocalPath>
        <RSYNC><CommonParams Params="-a"/></RSYNC></Sersync></HEAD>"#,
        d.path().display()
    );
    let c = load_str(&text).expect("loads");
    assert_eq!(c.rsync.params, ["-a"]);
    assert_eq!(c.roots[0].remotes[0].ip, "h");
}

#[test]
fn malformed_xml_names_file_and_line() {
    let e = err("<head>\n<sersync>\n<localpath watch=\"/tmp\">\n</sersync>\n</head>");
    assert_eq!(e.file, "test.xml");
    assert!(e.line.is_some(), "{e}");
    assert!(e.message.contains("malformed"), "{e}");
}

#[test]
fn empty_and_foreign_files_are_refused() {
    assert!(err("").message.contains("empty"));
    assert!(err("   \n").message.contains("empty"));
    assert!(err("<html><body/></html>")
        .message
        .contains("not a sersync config"));
    assert!(err("<head version=\"2.5\"/>").message.contains("<sersync>"));
}

#[test]
fn missing_localpath_or_remote_is_refused() {
    assert!(err("<head><sersync></sersync></head>")
        .message
        .contains("localpath"));
    let d = dir();
    let text = format!(
        "<head><sersync>\n<localpath watch=\"{}\"></localpath></sersync></head>",
        d.path().display()
    );
    let e = err(&text);
    assert!(e.message.contains("remote"), "{e}");
    assert_eq!(e.line, Some(2));
}

#[test]
fn missing_watch_dir_is_refused() {
    let e = err(&conf(Path::new("/nonexistent/sersync-watch"), ""));
    assert!(e.message.contains("watch directory"), "{e}");
    assert_eq!(e.line, Some(4));
}

#[test]
fn bad_number_names_element_and_attribute() {
    let d = dir();
    let e = err(&conf(
        d.path(),
        "<rsync>\n<timeout start=\"true\" time=\"ten\"/></rsync>",
    ));
    assert!(e.message.contains("<timeout time=\"ten\">"), "{e}");
    assert_eq!(e.line, Some(8));
    let e = err(&conf(
        d.path(),
        "<rsync><userDefinedPort start=\"true\" port=\"99999\"/></rsync>",
    ));
    assert!(e.message.contains("userDefinedPort"), "{e}");
}

#[test]
fn bad_switch_is_refused() {
    let d = dir();
    let e = err(&conf(d.path(), "<rsync><ssh start=\"yes\"/></rsync>"));
    assert!(e.message.contains("\"true\" or \"false\""), "{e}");
}

#[test]
fn bad_regex_is_refused_only_when_the_filter_is_on() {
    let d = dir();
    let mk = |on: &str| {
        format!(
            "<head><filter start=\"{on}\"><exclude expression=\"(unclosed\"/></filter><sersync>\
             <localpath watch=\"{}\"><remote ip=\"h\" name=\"m\"/></localpath></sersync></head>",
            d.path().display()
        )
    };
    assert!(load_str(&mk("false")).is_ok());
    let e = err(&mk("true"));
    assert!(e.message.contains("regular expression"), "{e}");
}

#[test]
fn unreadable_password_file_is_refused_when_auth_is_on() {
    let d = dir();
    let auth = |on: &str| {
        format!("<rsync><auth start=\"{on}\" users=\"u\" passwordfile=\"/nonexistent/rsync.pas\"/></rsync>")
    };
    assert!(load_str(&conf(d.path(), &auth("false"))).is_ok());
    let e = err(&conf(d.path(), &auth("true")));
    assert!(e.message.contains("password file"), "{e}");
}

#[test]
fn unknown_elements_are_reported_not_fatal() {
    let d = dir();
    let c = load_str(&conf(d.path(), "<frobnicate/>")).expect("loads");
    assert_eq!(c.unknown.len(), 1);
    assert!(c.unknown[0].0.ends_with("frobnicate"));
}

#[test]
fn exclude_regexes_are_anchored() {
    let d = dir();
    let text = format!(
        "<head><filter start=\"true\"><exclude expression=\"a\"/></filter><sersync>\
         <localpath watch=\"{}\"><remote ip=\"h\" name=\"m\"/></localpath></sersync></head>",
        d.path().display()
    );
    let c = load_str(&text).expect("loads");
    assert!(c.excludes[0].is_match(b"a"));
    assert!(!c.excludes[0].is_match(b"ab"));
}

#[test]
fn crontab_takes_minutes_or_cron() {
    let d = dir();
    let c = load_str(&conf(d.path(), "<crontab start=\"true\" schedule=\"30\"/>")).expect("loads");
    assert_eq!(
        c.crontab.expect("on").schedule,
        Schedule::Every(Duration::from_secs(1800))
    );
    let c = load_str(&conf(
        d.path(),
        "<crontab start=\"true\" schedule=\"0 3 * * *\"/>",
    ))
    .expect("loads");
    assert!(matches!(c.crontab.expect("on").schedule, Schedule::Cron(_)));
    let e = err(&conf(
        d.path(),
        "<crontab start=\"true\" schedule=\"often\"/>",
    ));
    assert!(e.message.contains("crontab"), "{e}");
}

#[test]
fn ssh_mode_and_auth_shape_the_destination() {
    let d = dir();
    let c = load_str(&conf(
        d.path(),
        "<rsync><ssh start=\"true\" command=\"ssh -p 2222\"/></rsync>",
    ))
    .expect("loads");
    assert_eq!(c.rsync.ssh.as_deref(), Some("ssh -p 2222"));
}

#[test]
fn common_params_split_like_sh_words() {
    assert_eq!(
        split_words(r#"-artuz --exclude='a b' "--chmod=D755""#).expect("splits"),
        ["-artuz", "--exclude=a b", "--chmod=D755"]
    );
    assert!(split_words("'open").is_err());
    let d = dir();
    let e = err(&conf(
        d.path(),
        "<rsync><commonParams params=\"-a ; rm\"/></rsync>",
    ));
    assert!(e.message.contains("not an option"), "{e}");
}

#[test]
fn options_that_follow_links_in_the_tree_are_refused() {
    let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(follows_links(&w(&["-artuzL"])).as_deref(), Some("-L"));
    assert_eq!(follows_links(&w(&["-a", "-k"])).as_deref(), Some("-k"));
    assert_eq!(
        follows_links(&w(&["--copy-links"])).as_deref(),
        Some("--copy-links")
    );
    assert_eq!(
        follows_links(&w(&["-a", "--copy-unsafe-links"])).as_deref(),
        Some("--copy-unsafe-links")
    );
    assert_eq!(
        follows_links(&w(&["--copy-dirlinks"])).as_deref(),
        Some("--copy-dirlinks")
    );
    // A cluster ends at a letter that takes a value; other options are fine.
    for ok in [
        &["-artuz"][..],
        &["-essh -L"],
        &["-B1024kL"],
        &["--safe-links", "-K", "--keep-dirlinks", "-l"],
        &["--exclude=-L"],
    ] {
        assert_eq!(follows_links(&w(ok)), None, "{ok:?}");
    }
    let d = dir();
    let e = err(&conf(
        d.path(),
        "<rsync><commonParams params=\"-artuzL\"/></rsync>",
    ));
    assert!(e.message.contains("-L makes rsync follow the links"), "{e}");
}

use std::os::unix::ffi::OsStrExt;

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever bytes a config holds, loading returns a value or an error, never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(Path::new("fuzz.xml"), &bytes);
        }

        /// Arbitrary attribute text in a real config never panics either.
        #[test]
        fn arbitrary_attribute_values_never_panic(v in "[ -~]{0,20}") {
            let v = v.replace(['"', '<', '&'], "");
            let text = format!(
                "<head><sersync><localpath watch=\"/tmp\"><remote ip=\"h\" name=\"m\"/></localpath>\
                 <rsync><timeout start=\"true\" time=\"{v}\"/></rsync></sersync></head>"
            );
            let _ = parse(Path::new("fuzz.xml"), text.as_bytes());
        }
    }
}

#[test]
fn a_fail_log_that_cannot_be_written_is_refused() {
    let d = dir();
    let e = err(&conf(
        d.path(),
        "<failLog path=\"/nonexistent/dir/fail.sh\" timeToExecute=\"60\"/>",
    ));
    assert!(e.message.contains("failLog"), "{e}");
    let e = err(&conf(
        d.path(),
        &format!("<failLog path=\"{}\"/>", d.path().display()),
    ));
    assert!(e.message.contains("is a directory"), "{e}");
}

#[test]
fn huge_time_to_execute_and_crontab_minutes_are_refused_with_their_line() {
    // `timeToExecute="153722867280912930"` passed -t and later panicked the scheduler.
    let d = dir();
    let fail_log = d.path().join("fail.sh");
    let e = err(&conf(
        d.path(),
        &format!(
            "\n<failLog path=\"{}\" timeToExecute=\"153722867280912930\"/>",
            fail_log.display()
        ),
    ));
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.to_string().contains("at most 525600 minutes"), "{e}");
    // The crontab form: u64::MAX minutes.
    let e = err(&conf(
        d.path(),
        "\n\n<crontab start=\"true\" schedule=\"18446744073709551615\"/>",
    ));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.to_string().contains("at most 525600 minutes"), "{e}");
    // One year is still accepted.
    let c = load_str(&conf(
        d.path(),
        "<crontab start=\"true\" schedule=\"525600\"/>",
    ))
    .expect("one year loads");
    assert!(c.crontab.is_some());
}

#[test]
fn duplicate_remote_in_one_localpath_is_refused_naming_both_lines() {
    // 16,000 copies of the same <remote> under one <localpath> were accepted.
    let d = dir();
    let text = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
  <sersync>
    <localpath watch="{}">
      <remote ip="127.0.0.1" name="mod"/>
      <remote ip="127.0.0.2" name="mod"/>
      <remote ip="127.0.0.1" name="other"/>
      <remote ip="127.0.0.1" name="mod"/>
    </localpath>
  </sersync>
</head>"#,
        d.path().display()
    );
    let e = err(&text);
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.to_string().contains("same remote as line 5"), "{e}");
}

#[test]
fn verify_schedule_is_minutes_or_cron_and_off_by_default() {
    let d = dir();
    let c = load_str(&conf(d.path(), "")).expect("loads");
    assert_eq!(c.verify, None);
    let c = load_str(&conf(d.path(), r#"<verify start="true" schedule="60"/>"#)).expect("loads");
    assert_eq!(c.verify, Some(Schedule::Every(Duration::from_secs(3600))));
    assert!(c.unknown.is_empty(), "{:?}", c.unknown);
    let c = load_str(&conf(
        d.path(),
        r#"<verify start="true" schedule="*/2 * * * * *"/>"#,
    ))
    .expect("loads");
    assert_eq!(c.verify, Some(Schedule::Cron("*/2 * * * * *".into())));
    let c = load_str(&conf(d.path(), r#"<verify start="false" schedule="60"/>"#)).expect("loads");
    assert_eq!(c.verify, None);
    let e = err(&conf(d.path(), r#"<verify start="true" schedule="0"/>"#));
    assert!(e.to_string().contains("<verify schedule=\"0\">"), "{e}");
    let e = err(&conf(d.path(), r#"<verify start="true"/>"#));
    assert!(e.to_string().contains("missing schedule="), "{e}");
}

#[test]
fn watcher_backend_is_auto_when_absent_and_read_when_given() {
    let d = dir();
    let c = load_str(&conf(d.path(), "")).expect("load");
    assert_eq!(c.watcher, Backend::Auto);
    for (value, want) in [
        ("auto", Backend::Auto),
        ("inotify", Backend::Inotify),
        ("fanotify", Backend::Fanotify),
    ] {
        let text = conf_with(d.path(), "", &format!("<watcher backend=\"{value}\"/>"));
        let c = load_str(&text).expect("load");
        assert_eq!(c.watcher, want, "{value}");
        assert!(c.unknown.is_empty(), "<watcher> is known: {:?}", c.unknown);
    }
}

#[test]
fn a_watcher_backend_that_does_not_exist_is_refused_with_line_and_value() {
    let d = dir();
    let text = conf_with(d.path(), "", "<watcher backend=\"kqueue\"/>");
    let e = err(&text);
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("backend=\"kqueue\""), "{e}");
    assert!(e.message.contains("fanotify"), "{e}");
}
