//! The unit tests of trusted files: the pure checks on (uid, mode), and the opens,
//! writes and set-asides on real files in a temporary directory.

use super::*;

const REG: u32 = libc::S_IFREG;
const DIR: u32 = libc::S_IFDIR;
const LNK: u32 = libc::S_IFLNK;

#[test]
fn a_foreign_file_is_moved_to_a_name_that_says_so() {
    let n = aside_name(OsStr::new("fail.sh"), "20261206T053226Z", 0xab);
    assert_eq!(n, OsStr::new("fail.sh.foreign-20261206T053226Z-000000ab"));
}

#[test]
fn the_agents_own_file_and_a_missing_one_are_not_moved() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("fail.sh");
    assert_eq!(set_aside_foreign(&path).expect("missing"), None);
    let nowhere = d.path().join("gone/fail.sh");
    assert_eq!(set_aside_foreign(&nowhere).expect("no directory"), None);
    std::fs::write(&path, b"#errno 5\n").expect("write");
    assert_eq!(set_aside_foreign(&path).expect("ours"), None);
    assert!(path.exists());
}

#[test]
fn a_file_must_be_regular_ours_and_not_writable_by_others() {
    assert_eq!(judge_file(0, 0, REG | 0o600), FileVerdict::Trusted);
    assert_eq!(judge_file(0, 0, REG | 0o644), FileVerdict::Trusted);
    assert_eq!(judge_file(1000, 1000, REG | 0o640), FileVerdict::Trusted);
    assert_eq!(judge_file(0, 1001, REG | 0o600), FileVerdict::ForeignOwner);
    assert_eq!(judge_file(1000, 0, REG | 0o600), FileVerdict::ForeignOwner);
    assert_eq!(judge_file(0, 0, REG | 0o666), FileVerdict::Writable);
    assert_eq!(judge_file(0, 0, REG | 0o620), FileVerdict::Writable);
    assert_eq!(judge_file(0, 0, REG | 0o602), FileVerdict::Writable);
    assert_eq!(judge_file(0, 0, LNK | 0o777), FileVerdict::Symlink);
    assert_eq!(judge_file(0, 0, DIR | 0o700), FileVerdict::NotRegular);
    assert_eq!(
        judge_file(0, 0, libc::S_IFIFO | 0o600),
        FileVerdict::NotRegular
    );
}

#[test]
fn a_sticky_world_writable_directory_is_allowed_a_plain_one_is_not() {
    assert_eq!(judge_dir(0, 0, DIR | 0o1777), DirVerdict::Trusted);
    assert_eq!(judge_dir(1000, 0, DIR | 0o1777), DirVerdict::Trusted);
    assert_eq!(judge_dir(0, 0, DIR | 0o755), DirVerdict::Trusted);
    assert_eq!(judge_dir(1000, 1000, DIR | 0o700), DirVerdict::Trusted);
    assert_eq!(judge_dir(0, 0, DIR | 0o777), DirVerdict::WritableNotSticky);
    assert_eq!(judge_dir(0, 0, DIR | 0o775), DirVerdict::WritableNotSticky);
    assert_eq!(judge_dir(0, 1001, DIR | 0o755), DirVerdict::ForeignOwner);
    assert_eq!(
        judge_dir(1000, 1001, DIR | 0o1777),
        DirVerdict::ForeignOwner
    );
    assert_eq!(judge_dir(0, 0, REG | 0o755), DirVerdict::NotDir);
}

#[test]
fn the_lock_directory_is_private_to_the_agent() {
    assert_eq!(
        judge_private_dir(0, 0, DIR | 0o755),
        PrivateDirVerdict::Trusted
    );
    assert_eq!(
        judge_private_dir(0, 0, DIR | 0o777),
        PrivateDirVerdict::Open
    );
    assert_eq!(
        judge_private_dir(0, 0, DIR | 0o1777),
        PrivateDirVerdict::Open
    );
    assert_eq!(
        judge_private_dir(1000, 1000, DIR | 0o700),
        PrivateDirVerdict::Trusted
    );
    assert_eq!(
        judge_private_dir(1000, 1000, DIR | 0o755),
        PrivateDirVerdict::Open
    );
    assert_eq!(
        judge_private_dir(1000, 1001, DIR | 0o700),
        PrivateDirVerdict::ForeignOwner
    );
    assert_eq!(
        judge_private_dir(0, 1001, DIR | 0o755),
        PrivateDirVerdict::ForeignOwner
    );
    assert_eq!(
        judge_private_dir(1000, 1000, LNK | 0o777),
        PrivateDirVerdict::Symlink
    );
    assert_eq!(
        judge_private_dir(1000, 1000, REG | 0o600),
        PrivateDirVerdict::NotDir
    );
}

#[test]
fn temporary_names_are_recognised() {
    let t = temp_name(OsStr::new("fail.sh")).expect("a name");
    assert!(is_temp_of(t.as_bytes(), b"fail.sh"), "{t:?}");
    assert!(!is_temp_of(t.as_bytes(), b"fail"));
    assert!(!is_temp_of(b".fail.sh.0123.tmp", b"fail.sh"));
    assert!(!is_temp_of(b"fail.sh", b"fail.sh"));
}

#[test]
fn a_written_file_replaces_a_link_instead_of_following_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let victim = d.path().join("victim");
    std::fs::write(&victim, b"original").expect("victim");
    let path = d.path().join("log.sh");
    std::os::unix::fs::symlink(&victim, &path).expect("symlink");
    let err = read_trusted(&path).expect_err("a link is refused");
    assert!(is_refused(&err), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    write_atomic(&path, b"new").expect("write");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"original");
    let m = std::fs::symlink_metadata(&path).expect("stat");
    assert!(m.file_type().is_file());
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(read_trusted(&path).expect("read"), b"new");
    let left: Vec<_> = std::fs::read_dir(d.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
}

#[test]
fn a_lock_directory_is_created_private_and_a_link_or_open_one_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let made = d.path().join("new/locks");
    private_dir(&made, 0o700).expect("created with its parent");
    let m = std::fs::symlink_metadata(&made).expect("stat");
    assert!(m.is_dir() && m.mode() & 0o777 == 0o700, "{:o}", m.mode());
    private_dir(&made, 0o700).expect("an existing private directory is fine");
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&made, &link).expect("symlink");
    let err = private_dir(&link, 0o700).expect_err("a link is refused");
    assert!(
        is_refused(&err) && err.to_string().contains("symbolic link"),
        "{err}"
    );
    let open = d.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let err = private_dir(&open, 0o700).expect_err("an open directory is refused");
    assert!(
        is_refused(&err) && err.to_string().contains("0777"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_not_found_and_a_writable_one_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("x");
    let err = read_trusted(&path).expect_err("missing");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    std::fs::write(&path, b"x").expect("write");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let err = read_trusted(&path).expect_err("0666 refused");
    assert!(
        is_refused(&err) && err.to_string().contains("0666"),
        "{err}"
    );
    let err =
        open_trusted(&path, libc::O_WRONLY | libc::O_APPEND, 0o640).expect_err("0666 refused");
    assert!(is_refused(&err), "{err}");
}
