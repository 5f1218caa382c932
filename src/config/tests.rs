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

// Found by an outside test run: `-t` accepted a NUL byte (`&#0;`) in `<remote name=>` and
// exited 0 (a raw NUL byte in the file; `&#0;` the XML reader refuses); only `--probe` caught it ("nul byte found"). A NUL or another control
// character in any attribute is refused with the file's line and what to do.
#[test]
fn a_nul_or_control_character_in_an_attribute_is_refused_with_its_line() {
    let d = dir();
    for (written, code) in [
        ("\0", "U+0000"),
        ("&#x1;", "U+0001"),
        ("\u{1b}", "U+001B"),
        ("\u{7f}", "U+007F"),
    ] {
        let text = conf(d.path(), "").replace("name=\"mod\"", &format!("name=\"mo{written}d\""));
        let e = err(&text);
        assert_eq!(e.line, Some(5), "{written}: {e}");
        assert!(
            e.message.contains(&format!(
                "name= of <remote> holds the control character {code}"
            )) && e.message.contains("remove it"),
            "{written}: {e}"
        );
    }
    let text = conf(d.path(), "").replace("<remote ip=\"127.0.0.1\"", "<remote ip=\"127.0.0.1\0\"");
    assert!(err(&text).message.contains("ip= of <remote>"));
    // `&#0;` the XML reader refuses itself.
    let text = conf(d.path(), "").replace("name=\"mod\"", "name=\"mo&#0;d\"");
    assert_eq!(err(&text).line, Some(5));
}

#[test]
fn an_unknown_element_or_attribute_is_refused_with_line_and_nearest_name() {
    let d = dir();
    // A typo in <remote>: that remote would never be pushed to.
    let text = conf(d.path(), "").replace(
        "<remote ip=\"127.0.0.1\" name=\"mod\"/>",
        "<remote ip=\"127.0.0.1\" name=\"mod\"/>\n      <remotee ip=\"10.0.0.2\" name=\"m\"/>",
    );
    let e = err(&text);
    assert_eq!(e.line, Some(6), "{e}");
    assert!(
        e.message
            .contains("unknown element <remotee> in <localpath>: did you mean <remote>?"),
        "{e}"
    );
    // An attribute the element does not take: rsync's option as a name of its own.
    let text = conf(d.path(), "").replace("name=\"mod\"/>", "name=\"mod\" bwlimit=\"2000\"/>");
    let e = err(&text);
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains(
            "unknown attribute bwlimit= on <remote>: <remote> takes one of ip=, name=, ssh="
        ),
        "{e}"
    );
    // Case does not matter, as for known names.
    let e = err(&conf(
        d.path(),
        r#"<failLog Path="/tmp/x" TimeToExecut="5"/>"#,
    ));
    assert!(e.message.contains("did you mean timeToExecute=?"), "{e}");
    // Several: the first gives the line, the message names each.
    let e = err(&conf(d.path(), "<frobnicate/>\n<verfy start=\"true\"/>"));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("<frobnicate> in <sersync>"), "{e}");
    assert!(
        e.message
            .contains("line 8: unknown element <verfy> in <sersync>: did you mean <verify>?"),
        "{e}"
    );
    // What the element holds is not reported on its own.
    let e = err(&conf(d.path(), "<x><y z=\"1\"/></x>"));
    assert!(!e.message.contains("<y>"), "{e}");
    // The internal line attribute is no way in.
    let e = err(&conf(d.path(), r#"<verify _line="3"/>"#));
    assert!(e.message.contains("unknown attribute _line="), "{e}");
}

#[test]
fn every_name_in_sersync_2_5_4_s_configs_is_known() {
    // The tutorials' configs are the shipped one with values changed, the <rsync>
    // switches on, comments (some between elements, some pasted as text) and a
    // Latin-1 declaration; every element and attribute of 2.5.4's confxml.xml with a
    // value that loads here.
    let d = dir();
    let pass = d.path().join("rsync.pas");
    std::fs::write(&pass, "secret\n").expect("write");
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let text = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1"?>
<head version="2.5">
    <host hostip="localhost" port="8008"></host>
    <debug start="true"/>
    <fileSystem xfs="true"/>
    <filter start="true">
	<exclude expression="(.*)\.svn"></exclude>
	<exclude expression="(.*)\.gz"></exclude>
    </filter>
    <inotify>
	<delete start="true"/>
	<createFolder start="true"/>
	<createFile start="false"/>
	<closeWrite start="true"/>
	<moveFrom start="true"/>
	<moveTo start="true"/>
	<attrib start="false"/>
	<modify start="false"/>
    </inotify>
    <sersync>
	<localpath watch="{watch}"> # the tree to mirror
	    <remote ip="192.168.1.20" name="www"/>
	    <remote ip="192.168.1.21" name="www"/>
	</localpath>
	<rsync>
	    <commonParams params="-artuz"/>
	    <auth start="true" users="rsync_backup" passwordfile="{pass}"/>
	    <userDefinedPort start="true" port="874"/><!-- port=874 -->
	    <timeout start="true" time="100"/><!-- timeout=100 -->
	    <ssh start="false"/>
	</rsync>
	<failLog path="{watch}/../fail.sh" timeToExecute="60"/>
	<crontab start="true" schedule="600"><!--600mins-->
	    <crontabfilter start="true">
		<exclude expression="*.php"></exclude>
	    </crontabfilter>
	</crontab>
	<plugin start="false" name="command"/>
    </sersync>
    <plugin name="command">
	<param prefix="/bin/sh" suffix="" ignoreError="true"/>
	<filter start="false">
	    <include expression="(.*)\.php"/>
	</filter>
    </plugin>
    <plugin name="socket">
	<localpath watch="{watch}">
	    <deshost ip="192.168.138.20" port="8009"/>
	</localpath>
    </plugin>
    <plugin name="refreshCDN">
	<localpath watch="{watch}">
	    <cdninfo domainname="ccms.chinacache.com" port="80" username="xxxx" passwd="xxxx"/>
	    <sendurl base="http://pic.xoyo.com/cms"/>
	    <regexurl regex="false" match="cms.xoyo.com/site([/a-zA-Z0-9]*).xoyo.com/images"/>
	</localpath>
    </plugin>
</head>"#,
        watch = d.path().display(),
        pass = pass.display()
    );
    let c = load_str(&text).expect("a tutorial's config loads");
    assert_eq!(c.roots[0].remotes.len(), 2);
    assert_eq!(c.rsync.port, Some(874));
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
fn options_that_break_the_mirror_are_refused() {
    let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let first = |v: &[&str]| breaks_the_mirror(&w(v)).map(|(o, _)| o);
    assert_eq!(first(&["-artuzn"]).as_deref(), Some("-n"));
    assert_eq!(first(&["-a", "--dry-run"]).as_deref(), Some("--dry-run"));
    for (words, opt) in [
        (&["--remove-source-files"][..], "--remove-source-files"),
        (&["-a", "--existing"], "--existing"),
        // rsync's other names of those two (outside run: accepted by -t, and the
        // watched files were deleted after one push).
        (&["--remove-sent-files"], "--remove-sent-files"),
        (&["-a", "--ignore-non-existing"], "--ignore-non-existing"),
        (&["--ignore-existing"], "--ignore-existing"),
        (&["--max-size=1"], "--max-size"),
        (&["--min-size=1k"], "--min-size"),
        (&["--files-from=/etc/shadow"], "--files-from"),
        (&["--write-batch=/tmp/x"], "--write-batch"),
        (&["--only-write-batch=/tmp/x"], "--only-write-batch"),
        (&["--read-batch=/tmp/x"], "--read-batch"),
        (&["--list-only"], "--list-only"),
        (&["--server"], "--server"),
    ] {
        assert_eq!(first(words).as_deref(), Some(opt), "{words:?}");
    }
    // A cluster ends at a letter that takes a value; other options are fine.
    for ok in [
        &["-artuz"][..],
        &["-artzH", "--bwlimit=2000", "--no-motd"],
        &["-essh -n"],
        &["-B1024kn"],
        &["--exclude=--dry-run", "--numeric-ids", "--inplace"],
    ] {
        assert_eq!(first(ok), None, "{ok:?}");
    }
    let d = dir();
    let e = err(&conf(
        d.path(),
        "<rsync><commonParams params=\"-artuz --remove-source-files\"/></rsync>",
    ));
    assert!(
        e.message
            .contains("--remove-source-files breaks the mirror")
            && e.message.contains("drop --remove-source-files"),
        "{e}"
    );
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn hard_links_are_kept_with_h_in_any_form_and_the_last_word_decides() {
    let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for on in [
        &["-artzH"][..],
        &["-a", "-H"],
        &["--hard-links"],
        &["--no-H", "-aH"],
    ] {
        assert!(keeps_hard_links(&w(on)), "{on:?}");
    }
    for off in [
        &["-artuz"][..],
        &["-aH", "--no-hard-links"],
        &["-Hz", "--no-H"],
        &["-essh -H"],
        &["--exclude=-H"],
        &["-B1024H"],
    ] {
        assert!(!keeps_hard_links(&w(off)), "{off:?}");
    }
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
fn big_files_are_on_by_default_and_bad_values_are_refused_with_what_to_write() {
    let d = dir();
    let c = load_str(&conf(d.path(), "")).expect("loads");
    assert_eq!(
        c.big_files,
        Some(super::BigFiles {
            size: 64 << 20,
            append: true,
            inplace: false
        })
    );
    let c = load_str(&conf(
        d.path(),
        r#"<bigFiles size="2g" append="false" inplace="true"/>"#,
    ))
    .expect("loads");
    assert_eq!(
        c.big_files,
        Some(super::BigFiles {
            size: 2 << 30,
            append: false,
            inplace: true
        })
    );
    let c = load_str(&conf(d.path(), r#"<bigFiles size="4096"/>"#)).expect("loads");
    assert_eq!(c.big_files.map(|b| b.size), Some(4096));
    let c = load_str(&conf(d.path(), r#"<bigFiles start="false"/>"#)).expect("loads");
    assert_eq!(c.big_files, None);
    for bad in [
        "0",
        "-1",
        "64MB",
        "1.5G",
        "M",
        "",
        "2E",
        "99999999999P",
        "2P",
    ] {
        let e = err(&conf(d.path(), &format!("\n<bigFiles size=\"{bad}\"/>")));
        assert_eq!(e.line, Some(8), "{e}");
        assert!(
            e.message.contains(&format!(
                "<bigFiles size=\"{bad}\">: must be a number of bytes"
            )) && e.message.contains("write e.g. size=\"64M\""),
            "{e}"
        );
    }
    let e = err(&conf(d.path(), r#"<bigFiles inplace="yes"/>"#));
    assert!(
        e.message
            .contains("<bigFiles inplace=\"yes\">: must be \"true\" or \"false\""),
        "{e}"
    );
    let e = err(&conf(d.path(), r#"<bigFiles sise="1G"/>"#));
    assert!(
        e.message.contains("unknown attribute sise= on <bigFiles>")
            && e.message.contains("did you mean size=?"),
        "{e}"
    );
    assert_eq!(super::show_size(64 << 20), "64M");
    assert_eq!(super::show_size(1536), "1536 bytes");
    assert_eq!(super::show_size(3 << 40), "3T");
}

#[test]
fn the_delete_brake_is_on_by_default_and_refuses_bad_values_with_what_to_write() {
    let d = dir();
    let c = load_str(&conf(d.path(), "")).expect("loads");
    assert_eq!(c.delete_brake, Some(DeleteBrake::default()));
    assert_eq!(
        DeleteBrake::default(),
        DeleteBrake {
            percent: 50,
            count: 1000,
            window: Duration::from_secs(60),
            settle: Duration::from_secs(2)
        }
    );
    let c = load_str(&conf(
        d.path(),
        r#"<deleteBrake percent="0" count="20" seconds="5" settle="0"/>"#,
    ))
    .expect("loads");
    assert_eq!(
        c.delete_brake,
        Some(DeleteBrake {
            percent: 0,
            count: 20,
            window: Duration::from_secs(5),
            settle: Duration::ZERO
        })
    );
    let c = load_str(&conf(d.path(), r#"<deleteBrake start="false"/>"#)).expect("loads");
    assert_eq!(c.delete_brake, None);
    for (attr, bad) in [
        ("percent", "-1"),
        ("percent", "101"),
        ("percent", "abc"),
        ("count", "0"),
        ("count", "-1"),
        ("seconds", "0"),
        ("seconds", "1.5"),
        ("seconds", "86401"),
        ("settle", "-1"),
        ("settle", "3601"),
    ] {
        let text = conf(d.path(), &format!("\n<deleteBrake {attr}=\"{bad}\"/>"));
        let e = err(&text);
        assert_eq!(e.line, Some(8), "{e}");
        assert!(
            e.message.contains(&format!(
                "<deleteBrake {attr}=\"{bad}\">: must be a whole number"
            )) && e.message.contains(&format!("write e.g. {attr}=")),
            "{e}"
        );
    }
    let e = err(&conf(d.path(), r#"<deleteBrake start="maybe"/>"#));
    assert!(e.message.contains("must be \"true\" or \"false\""), "{e}");
    let e = err(&conf(d.path(), r#"<deleteBrake precent="10"/>"#));
    assert!(
        e.message
            .contains("unknown attribute precent= on <deleteBrake>")
            && e.message.contains("did you mean percent=?"),
        "{e}"
    );
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

// The ssh command runs as the agent's user (rsync starts it): a program others can
// change is refused like a command plugin's; one not found is left to rsync, as before.
#[test]
fn an_ssh_program_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let ssh = bin.join("my-ssh");
    std::fs::write(&ssh, b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let with = |command: &str| {
        conf(
            d.path(),
            &format!("<rsync><ssh start=\"true\" command=\"{command}\"/></rsync>"),
        )
    };
    let command = format!("{} -p 2222", ssh.display());
    load_str(&with(&command)).expect("a program only its owner can change");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = err(&with(&command));
    assert!(
        e.message.contains("refusing to run") && e.message.contains("0777"),
        "{e}"
    );
    // Not found: refused (a user who can write where it would be found could put one
    // there, and rsync would run it as root; the outside run planted one in a sticky
    // directory).
    let e = err(&with("/tmp/no-such-dir/no-such-ssh-program -p 22"));
    assert!(e.message.contains("not found"), "{e}");
}

/// A valid config with `elements` written after its `<sersync>` in `<head>`.
fn conf_after(watch: &Path, elements: &str) -> String {
    conf_with(watch, "", elements)
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_naming_the_line() {
    // 50,000 nested elements made -t abort on memory: each unknown element kept its
    // whole path.
    let d = dir();
    let deep = |n: usize| format!("\n{}{}", "<a>".repeat(n), "</a>".repeat(n));
    // <head> is one level: 63 more reach the limit and load.
    let e = err(&conf_after(d.path(), &deep(raw::MAX_DEPTH - 1)));
    assert!(
        e.message.starts_with("unknown element <a> in <head>") && !e.message.contains(';'),
        "64 deep is read, and only the outermost unknown is reported: {e}"
    );
    for n in [raw::MAX_DEPTH, 50_000] {
        let e = err(&conf_after(d.path(), &deep(n)));
        assert_eq!(e.line, Some(10), "{e}");
        assert!(
            e.message
                .contains("<a> is nested more than 64 elements deep"),
            "{e}"
        );
    }
    // The depth counts known elements too.
    let e = err(&conf_after(
        d.path(),
        &deep(raw::MAX_DEPTH)
            .replace("<a>", "<plugin>")
            .replace("</a>", "</plugin>"),
    ));
    assert!(e.message.contains("nested more than 64"), "{e}");
}

#[test]
fn many_unknown_elements_are_counted_and_the_first_ones_named_with_their_lines() {
    // 512 KB of tiny elements took 23-35 s: each line number was found by counting
    // from the start of the file again. Correctness here; the time is in
    // docs/BENCHMARKS.md.
    let d = dir();
    let many = "<a/>\n".repeat(100_000);
    let text = conf_after(d.path(), &format!("{many}<debug start=\"true\"/>"));
    let e = err(&text);
    // Each is found on its own line, counted as the reader goes.
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("; line 13: unknown element <a>"), "{e}");
    assert!(
        e.message.ends_with(&format!(
            "; and {} more unknown names",
            100_000 - raw::MAX_UNKNOWN_LISTED
        )),
        "{e}"
    );
    // On one line, too, and malformed XML after them still names its line.
    let text = conf_after(
        d.path(),
        &format!("{}\n\n<debug start=\"true\"></x>", "<a/>".repeat(100_000)),
    );
    let e = err(&text);
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.message.contains("malformed XML"), "{e}");
}

#[test]
fn a_huge_comment_is_skipped() {
    let d = dir();
    let comment = format!("<!-- {} -->\n", "x <head> & ".repeat(300_000));
    let text = conf_after(d.path(), &format!("{comment}<debug start=\"true\"/>"));
    assert!(text.len() > 3_000_000);
    let c = load_str(&text).expect("loads");
    assert!(c.debug);
}

#[test]
fn an_element_with_too_many_attributes_is_refused() {
    let d = dir();
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=\"\"")).collect::<String>();
    // 64 are read: each is unknown to <debug>, none is over the limit.
    let ok = conf_after(d.path(), &format!("<debug start=\"true\"{}/>", attrs(63)));
    let e = err(&ok);
    assert!(e.message.ends_with("; and 58 more unknown names"), "{e}");
    for n in [65, 100_000] {
        let e = err(&conf_after(d.path(), &format!("<debug{}/>", attrs(n))));
        assert_eq!(e.line, Some(9), "{e}");
        assert!(
            e.message.contains("<debug> has more than 64 attributes"),
            "{e}"
        );
    }
}

#[test]
fn an_attribute_given_twice_in_any_case_is_refused() {
    let d = dir();
    for tag in [
        "<debug start=\"true\" start=\"false\"/>",
        "<debug start=\"true\" START=\"false\"/>",
    ] {
        let e = err(&conf_after(d.path(), tag));
        assert_eq!(e.line, Some(9), "{e}");
        assert!(e.message.contains("start= is given twice"), "{e}");
    }
}

#[test]
fn too_many_remotes_or_filter_rules_are_refused() {
    let d = dir();
    let remotes = |n: usize| {
        (0..n)
            .map(|i| format!("<remote ip=\"h\" name=\"m{i}\"/>\n"))
            .collect::<String>()
    };
    let text = |n: usize| {
        format!(
            "<head><sersync><localpath watch=\"{}\">\n{}</localpath></sersync></head>",
            d.path().display(),
            remotes(n)
        )
    };
    assert_eq!(
        load_str(&text(MAX_REMOTES)).expect("loads").roots[0]
            .remotes
            .len(),
        1000
    );
    let e = err(&text(MAX_REMOTES + 1));
    assert_eq!(e.line, Some(1), "{e}");
    assert!(
        e.message.contains("more than 1000 <remote> elements"),
        "{e}"
    );
    let rules = |n: usize| {
        format!(
            "<head><filter start=\"true\">{}</filter><sersync><localpath watch=\"{}\">\
             <remote ip=\"h\" name=\"m\"/></localpath></sersync></head>",
            "<exclude expression=\"a\"/>".repeat(n),
            d.path().display()
        )
    };
    assert_eq!(
        load_str(&rules(MAX_FILTER_RULES))
            .expect("loads")
            .excludes
            .len(),
        1000
    );
    let e = err(&rules(MAX_FILTER_RULES + 1));
    assert!(
        e.message
            .contains("<filter>: 1001 rules, more than the 1000 allowed"),
        "{e}"
    );
}

#[test]
fn overlapping_watches_are_refused_naming_the_later_one() {
    let d = dir();
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let other = d.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let lp = |p: &Path| {
        format!(
            "<localpath watch=\"{}\"><remote ip=\"h\" name=\"m\"/></localpath>\n",
            p.display()
        )
    };
    let text = |roots: &[&Path]| {
        format!(
            "<head><sersync>\n{}</sersync></head>",
            roots.iter().map(|p| lp(p)).collect::<String>()
        )
    };
    assert!(load_str(&text(&[&sub, &other])).is_ok());
    for (roots, line, named) in [
        (vec![d.path(), &other, &sub], 3, d.path()),
        (vec![&sub, &other, d.path()], 4, &other),
        (vec![&other, &sub, &sub], 4, &sub),
    ] {
        let e = err(&text(&roots));
        assert_eq!(e.line, Some(line), "{e}");
        assert!(
            e.message
                .contains(&format!("overlaps the watch {}", named.display())),
            "{e}"
        );
    }
}

#[test]
fn password_file_judged_as_rsync_judges_it() {
    // rsync 3.x refuses (seen with a real daemon client): mode & 006, and as root a file
    // root does not own. Group bits and other-execute pass, as in rsync.
    let reg = libc::S_IFREG;
    for mode in [0o600, 0o400, 0o640, 0o660, 0o620, 0o601, 0o700] {
        assert_eq!(judge_password_file(0, 0, reg | mode), Ok(()), "{mode:o}");
        assert_eq!(
            judge_password_file(1000, 1000, reg | mode),
            Ok(()),
            "{mode:o}"
        );
    }
    for mode in [0o644, 0o604, 0o602, 0o606, 0o666] {
        let e = judge_password_file(0, 0, reg | mode)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("mode {mode:04o}"))
                && e.contains("password file must not be other-accessible"),
            "{e}"
        );
        assert!(judge_password_file(1000, 1000, reg | mode).is_err());
    }
    let e = judge_password_file(0, 65534, reg | 0o600)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("owned by uid 65534")
            && e.contains("password file must be owned by root when running as root"),
        "{e}"
    );
    // Not root: rsync does not look at the owner.
    assert_eq!(judge_password_file(1000, 0, reg | 0o640), Ok(()));
    assert_eq!(judge_password_file(1000, 65534, reg | 0o640), Ok(()));
    let e = judge_password_file(0, 0, libc::S_IFIFO | 0o600)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file but a fifo"), "{e}");
}

#[test]
fn a_password_file_rsync_would_refuse_is_refused_in_daemon_mode_only() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let pass = d.path().join("rsync.pas");
    std::fs::write(&pass, "pw\n").expect("write");
    let auth = |ssh: &str| {
        format!(
            "<rsync><auth start=\"true\" users=\"u\" passwordfile=\"{}\"/>\
             <ssh start=\"{ssh}\"/></rsync>",
            pass.display()
        )
    };
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert!(load_str(&conf(d.path(), &auth("false"))).is_ok());
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = err(&conf(d.path(), &auth("false")));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(
        e.message.contains(&format!(
            "<auth passwordfile=\"{}\">: mode 0644",
            pass.display()
        )),
        "{e}"
    );
    // ssh mode does not hand the file to rsync.
    assert!(load_str(&conf(d.path(), &auth("true"))).is_ok());
}

#[test]
fn user_and_module_names_beginning_with_a_dash_are_refused() {
    let d = dir();
    let pass = d.path().join("rsync.pas");
    crate::sys::fsafe::write_atomic(&pass, b"pw\n").expect("write");
    let e = err(&conf(
        d.path(),
        &format!(
            "<rsync><auth start=\"true\" users=\"-oProxyCommand=x\" passwordfile=\"{}\"/></rsync>",
            pass.display()
        ),
    ));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("must not begin with \"-\""), "{e}");
    let text = format!(
        "<head><sersync><localpath watch=\"{}\">\n<remote ip=\"h\" name=\"--delete\"/>\
         </localpath></sersync></head>",
        d.path().display()
    );
    let e = err(&text);
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.message.contains(
            "<remote name=\"--delete\">: a module or directory name must not begin with \"-\""
        ),
        "{e}"
    );
}

#[test]
fn status_hostip_takes_ipv4_ipv6_with_or_without_brackets_and_names() {
    for (given, kept) in [
        ("127.0.0.1", "127.0.0.1"),
        (" ::1 ", "::1"),
        ("[::1]", "::1"),
        ("[fe80::1]", "fe80::1"),
        ("localhost", "localhost"),
        ("sync-1.example.org.", "sync-1.example.org."),
        ("0.0.0.0", "0.0.0.0"),
    ] {
        assert_eq!(status_host(given).as_deref(), Ok(kept), "{given}");
    }
    for bad in [
        "",
        "[::1",
        "[127.0.0.1]",
        "[localhost]",
        "[::1]:8008",
        "127.0.0.1:8008",
        "-oops",
        "a b",
        "http://x",
        "a..b",
    ] {
        assert!(status_host(bad).is_err(), "{bad}");
    }
    assert_eq!(host_port("::1", 8008), "[::1]:8008");
    assert_eq!(host_port("127.0.0.1", 8008), "127.0.0.1:8008");
    assert_eq!(host_port("localhost", 80), "localhost:80");
    // In a config: the brackets are gone, the line is named when refused.
    let d = dir();
    let c = load_str(&conf_with(
        d.path(),
        "",
        "<host hostip=\"[::1]\" port=\"8008\" start=\"true\"/>",
    ))
    .expect("loads");
    assert_eq!(c.host, Some(("::1".to_owned(), 8008)));
    let e = err(&conf_with(
        d.path(),
        "",
        "<host hostip=\"[::1]:8008\" start=\"true\"/>",
    ));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(
        e.message.contains("<host hostip=\"[::1]:8008\">: brackets"),
        "{e}"
    );
}

/// Found by an outside attack run: `params="-artz --exclude"` took the agent's `-R` as the
/// pattern, so `sub/index.html` was pushed over (and its delete deleted) the remote's
/// top-level `index.html`; -t said OK.
#[test]
fn an_option_that_takes_the_next_word_is_refused_in_common_params() {
    let d = dir();
    for bad in [
        "-artz --exclude",
        "-artz -e",
        "-ae",
        "--rsh -az",
        "-artz --link-dest",
    ] {
        let e = err(&conf(
            d.path(),
            &format!("<rsync><commonParams params=\"{bad}\"/></rsync>"),
        ));
        assert!(
            e.message.contains("takes its value from the next word"),
            "{bad}: {e}"
        );
    }
    for good in [
        "-artz --exclude=*.tmp",
        "-artuz",
        "-az --bwlimit=100",
        "-a -essh",
    ] {
        load_str(&conf(
            d.path(),
            &format!("<rsync><commonParams params=\"{good}\"/></rsync>"),
        ))
        .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

/// A config watching `watch` with the remotes `remotes` (each a whole `<remote .../>`
/// on a line of its own: the first is on line 5) and `inside` in <sersync>.
fn conf_remotes(watch: &Path, remotes: &[&str], inside: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<head version=\"2.5\">\n  <sersync>\n    \
         <localpath watch=\"{}\">\n{}\n    </localpath>\n    {inside}\n  </sersync>\n</head>",
        watch.display(),
        remotes.join("\n")
    )
}

#[test]
fn a_remote_without_options_of_its_own_uses_rsync_s() {
    let d = dir();
    let c = load_str(&conf_remotes(
        d.path(),
        &[r#"<remote ip="10.0.0.1" name="a"/>"#],
        "<rsync><commonParams params=\"-az\"/><timeout start=\"true\" time=\"30\"/></rsync>",
    ))
    .expect("loads");
    assert_eq!(c.roots[0].own, [None]);
    assert_eq!(c.rsync_for(&c.roots[0], 0), &c.rsync);
}

#[test]
fn one_config_mixes_an_ssh_remote_and_daemon_remotes_each_with_its_own_options() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let pass = d.path().join("b.pas");
    std::fs::write(&pass, "pw\n").expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let c = load_str(&conf_remotes(
        d.path(),
        &[
            r#"<remote ip="10.0.0.1" name="a"/>"#,
            &format!(
                r#"<remote ip="10.0.0.2" name="b" port="8730" user="bee" passwordfile="{}" params="--bwlimit=2000" timeout="30"/>"#,
                pass.display()
            ),
            r#"<remote ip="10.0.0.3" name="/srv/c" ssh="true" sshCommand="ssh -i /nonexistent/id_c" port="2222" user="sync"/>"#,
        ],
        "<rsync><commonParams params=\"-az\"/><userDefinedPort start=\"true\" port=\"874\"/></rsync>",
    ))
    .expect("loads");
    let root = &c.roots[0];
    // The first: <rsync>'s, untouched.
    assert_eq!(c.rsync_for(root, 0), &c.rsync);
    assert_eq!(c.rsync.port, Some(874));
    // The second: a daemon with its own port, user, password file, options and timeout.
    let b = c.rsync_for(root, 1);
    assert_eq!(b.ssh, None);
    assert_eq!(b.port, Some(8730));
    assert_eq!(b.auth, Some(("bee".to_owned(), pass.clone())));
    assert_eq!(b.params, ["-az", "--bwlimit=2000"]);
    assert_eq!(b.timeout, Some(30));
    // The third: over ssh, its port and login in the ssh command; no daemon options.
    let s = c.rsync_for(root, 2);
    assert_eq!(
        s.ssh.as_deref(),
        Some("ssh -i /nonexistent/id_c -p 2222 -l sync")
    );
    assert_eq!((s.port, &s.auth), (None, &None));
    assert_eq!(s.params, ["-az"]);
    assert_eq!(
        c.ssh_commands(),
        ["ssh -i /nonexistent/id_c -p 2222 -l sync"]
    );
}

#[test]
fn a_remote_may_leave_ssh_mode_and_then_its_inherited_password_file_is_judged() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let pass = d.path().join("rsync.pas");
    std::fs::write(&pass, "pw\n").expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = conf_remotes(
        d.path(),
        &[
            r#"<remote ip="10.0.0.1" name="/srv/a"/>"#,
            r#"<remote ip="10.0.0.2" name="b" ssh="false"/>"#,
        ],
        &format!(
            "<rsync><auth start=\"true\" users=\"u\" passwordfile=\"{}\"/><ssh start=\"true\"/></rsync>",
            pass.display()
        ),
    );
    // In ssh mode the file was never given to rsync; the daemon remote gives it.
    let e = err(&text);
    assert!(
        e.message.contains(&format!(
            "<auth passwordfile=\"{}\">: mode 0644",
            pass.display()
        )),
        "{e}"
    );
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let c = load_str(&text).expect("loads");
    assert!(c.rsync_for(&c.roots[0], 0).ssh.is_some());
    let b = c.rsync_for(&c.roots[0], 1);
    assert_eq!(b.ssh, None);
    assert_eq!(b.auth, Some(("u".to_owned(), pass.clone())));
}

#[test]
fn bad_per_remote_options_are_refused_with_their_line_and_what_to_write() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let pass = d.path().join("open.pas");
    std::fs::write(&pass, "pw\n").expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = format!(r#"user="u" passwordfile="{}""#, pass.display());
    let cases: Vec<(String, &str)> = vec![
        (
            r#"ssh="rsh""#.into(),
            "<remote ssh=\"rsh\">: must be \"true\" (this remote over ssh, host:dir) or \"false\"",
        ),
        (
            r#"port="-1""#.into(),
            "<remote port=\"-1\">: not a valid number",
        ),
        (
            r#"port="0""#.into(),
            "<remote port=\"0\">: not a port (a port is 1 to 65535)",
        ),
        (
            r#"port="70000""#.into(),
            "<remote port=\"70000\">: not a port (a port is 1 to 65535)",
        ),
        (
            r#"timeout="-1""#.into(),
            "<remote timeout=\"-1\">: not a valid number",
        ),
        (
            r#"params="-aL""#.into(),
            "<remote params=\"-aL\">: -L makes rsync follow the links in the tree",
        ),
        (
            r#"params="--exclude x""#.into(),
            "<remote params=\"--exclude x\">: \"x\" is not an option",
        ),
        (
            r#"params="--exclude""#.into(),
            "<remote params=\"--exclude\">: --exclude takes its value from the next word",
        ),
        (
            r#"params="-e'sh -c x' --rsh""#.into(),
            "--rsh takes its value from the next word",
        ),
        (
            r#"ssh="true" passwordfile="/etc/rsync.pas""#.into(),
            "a password file is for an rsync daemon; over ssh the key authenticates",
        ),
        (
            r#"sshCommand="ssh -i /k""#.into(),
            "this remote goes through an rsync daemon: write ssh=\"true\" with it",
        ),
        (
            r#"user="u""#.into(),
            "<remote user=\"u\">: a daemon user needs its password file: add passwordfile=",
        ),
        (
            r#"user="-oProxyCommand=x" ssh="true""#.into(),
            "<remote user=\"-oProxyCommand=x\">: a user name is letters, digits and ._-$",
        ),
        (
            r#"ssh="true" user="a b""#.into(),
            "<remote user=\"a b\">: a user name is",
        ),
        (open, "passwordfile="),
    ];
    for (attrs, says) in cases {
        let text = conf_remotes(
            d.path(),
            &[
                r#"<remote ip="10.0.0.1" name="a"/>"#,
                &format!(r#"<remote ip="10.0.0.2" name="b" {attrs}/>"#),
            ],
            "",
        );
        let e = err(&text);
        assert_eq!(e.line, Some(6), "{attrs}: {e}");
        assert!(e.message.contains(says), "{attrs}: want `{says}`: {e}");
        assert!(e.to_string().starts_with("test.xml:6: "), "{e}");
    }
    // The open password file: refused as <auth>'s is.
    let e = err(&conf_remotes(
        d.path(),
        &[&format!(
            r#"<remote ip="10.0.0.2" name="b" user="u" passwordfile="{}"/>"#,
            pass.display()
        )],
        "",
    ));
    assert!(
        e.message.contains(&format!(
            "<remote passwordfile=\"{}\">: mode 0644",
            pass.display()
        )),
        "{e}"
    );
}

#[test]
fn a_remote_ssh_program_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let prog = d.path().join("myssh");
    std::fs::write(&prog, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = err(&conf_remotes(
        d.path(),
        &[&format!(
            r#"<remote ip="10.0.0.2" name="/srv" ssh="true" sshCommand="{} -v"/>"#,
            prog.display()
        )],
        "",
    ));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains("<remote sshCommand=") && e.message.contains("refusing to run"),
        "{e}"
    );
}

/// A config with `<filter start="true">` holding `inside`.
fn with_filter(watch: &Path, inside: &str) -> String {
    conf_with(watch, "", "").replace(
        "<head version=\"2.5\">",
        &format!("<head version=\"2.5\">\n  <filter start=\"true\">\n{inside}\n  </filter>"),
    )
}

fn rule_texts(c: &Config) -> Vec<String> {
    c.rules
        .0
        .iter()
        .map(|r| String::from_utf8_lossy(&r.text()).into_owned())
        .collect()
}

// `<rule>` elements and `<rules file>` lines form one list, in the order written.
#[test]
fn filter_rules_and_rules_files_keep_their_order() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let file = d.path().join("site.rules");
    std::fs::write(&file, "# the site\n- *.tmp\r\n\n; old\ninclude_/b/***\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = with_filter(
        d.path(),
        &format!(
            "<exclude expression=\"(.*)\\.log\"/>\n<rule>+ /docs/***</rule>\n\
             <rules file=\"{}\"/><rule> - &lt;x&gt;/ </rule>\n<rule><![CDATA[- *]]></rule>",
            file.display()
        ),
    );
    let c = load_str(&text).expect("loads");
    assert_eq!(c.excludes.len(), 1, "the expressions stay as they were");
    assert_eq!(
        rule_texts(&c),
        ["+ /docs/***", "- *.tmp", "+ /b/***", "- <x>/", "- *"]
    );
    // Off: no rules.
    let off = text.replace("<filter start=\"true\">", "<filter start=\"false\">");
    assert!(load_str(&off).expect("loads").rules.is_empty());
}

// A bad rule is refused with its place and what to write.
#[test]
fn a_malformed_filter_rule_is_refused_with_its_line() {
    let d = dir();
    let e = err(&with_filter(
        d.path(),
        "<rule>+ /a/***</rule>\n<rule>-,s *.tmp</rule>",
    ));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(
        e.message.contains("<rule>") && e.message.contains("modifier"),
        "{e}"
    );
    assert!(e.message.contains("- PATTERN"), "{e}");
    let e = err(&with_filter(
        d.path(),
        "<rule>dir-merge .rsync-filter</rule>",
    ));
    assert!(e.message.contains("per-directory"), "{e}");
    let e = err(&with_filter(d.path(), "<rule/>"));
    assert!(e.message.contains("empty rule"), "{e}");
    let e = err(&with_filter(d.path(), "<rules/>"));
    assert!(e.message.contains("missing file="), "{e}");
    // In a rules file: that file's name and line, and where the config read it.
    let file = d.path().join("r");
    std::fs::write(&file, "+ /a/***\n\nP /keep\n").expect("write");
    let e = err(&with_filter(
        d.path(),
        &format!("<rules file=\"{}\"/>", file.display()),
    ));
    assert_eq!(
        (e.file.as_str(), e.line),
        (file.display().to_string().as_str(), Some(3)),
        "{e}"
    );
    assert!(
        e.message.contains("one-sided") && e.message.contains("test.xml:4"),
        "{e}"
    );
    // A missing file.
    let e = err(&with_filter(d.path(), "<rules file=\"/nonexistent/r\"/>"));
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("/nonexistent/r"), "{e}");
}

// Whoever can write the rules file decides what reaches the remotes and what is deleted
// there: one writable by others, or owned by another user, is refused.
#[test]
fn a_rules_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let file = d.path().join("r");
    std::fs::write(&file, "- *\n").expect("write");
    let text = with_filter(d.path(), &format!("<rules file=\"{}\"/>", file.display()));
    for mode in [0o666, 0o620] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let e = err(&text);
        assert!(e.message.contains("writable by group or others"), "{e}");
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(rule_texts(&load_str(&text).expect("loads")), ["- *"]);
    assert!(source::judge_owner(1000, 0, 0o100644).is_ok(), "root's");
    assert!(
        source::judge_owner(1000, 1000, 0o100600).is_ok(),
        "the agent's"
    );
    let foreign = source::judge_owner(1000, 1001, 0o100644)
        .expect_err("another user's")
        .0;
    assert!(foreign.contains("neither root nor"), "{foreign}");
    if crate::sys::fsafe::euid() == 0 {
        std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        let e = err(&text);
        assert!(e.message.contains("neither root nor"), "{e}");
    }
}

// Whoever can write a directory above the rules file can put another file there: such
// a directory is refused too (with the sticky bit, as /tmp has, it is not).
#[test]
fn a_rules_file_in_a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let open = d.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    let file = open.join("r");
    std::fs::write(&file, "- *\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = with_filter(d.path(), &format!("<rules file=\"{}\"/>", file.display()));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = err(&text);
    assert!(
        e.message.contains("(on the way to ")
            && e.message
                .contains("writable by group or others without the sticky bit")
            && e.message.contains("what reaches the remotes"),
        "{e}"
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    assert_eq!(rule_texts(&load_str(&text).expect("loads")), ["- *"]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(rule_texts(&load_str(&text).expect("loads")), ["- *"]);
}
