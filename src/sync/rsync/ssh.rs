//! The ssh command rsync runs (`-e`): connect timeout, one persistent connection per
//! remote, and closing it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Target;

impl Target {
    /// ssh mode with the agent's own shared connection: `<ssh command> -O exit HOST`,
    /// which asks that connection's master to close. `None` where the ssh command sets
    /// its own ControlPath or ControlMaster (that connection is the user's) or there is
    /// no control directory.
    pub fn ssh_exit_argv(&self) -> Option<(OsString, Vec<OsString>)> {
        let cmd = self.opts.ssh.as_ref()?;
        let ours = ssh_command(cmd, self.ssh_control.as_deref());
        if ours == ssh_command(cmd, None) {
            return None;
        }
        let words = crate::sys::shell::split_str(&ours).ok()?;
        let (program, rest) = words.split_first()?;
        let mut argv: Vec<OsString> = rest.iter().map(OsString::from).collect();
        argv.extend(["-O", "exit"].map(OsString::from));
        argv.push(self.remote.ip.clone().into());
        Some((program.into(), argv))
    }
}

/// How long a call waits for the remote to accept its connection (rsync daemon or ssh)
/// unless `commonParams` or the ssh command say otherwise.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a call waits on a remote that sends nothing when `<timeout>` is not set.
pub const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The ssh command with `-o ConnectTimeout=N` added, unless it sets one already.
/// The ssh command for `-e`: the connect timeout, and with a control directory one
/// persistent connection per remote (ControlMaster), unless the command sets its own
/// ControlPath or ControlMaster. rsync splits `-e` on blanks: a directory whose path
/// has blanks or quotes gets no reuse.
pub fn ssh_command(cmd: &str, control: Option<&Path>) -> String {
    let mut out = ssh_with_connect_timeout(cmd);
    let lower = cmd.to_ascii_lowercase();
    let Some(dir) = control else { return out };
    let plain = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'\'' | b'"' | b'\\' | b'%'));
    if plain && !lower.contains("controlpath") && !lower.contains("controlmaster") {
        out.push_str(&format!(
            " -o ControlMaster=auto -o ControlPath={}/%C -o ControlPersist={}",
            dir.display(),
            SSH_PERSIST.as_secs()
        ));
    }
    out
}

/// How long an idle ssh master connection stays up after the last push.
pub const SSH_PERSIST: std::time::Duration = std::time::Duration::from_secs(60);

pub fn ssh_with_connect_timeout(cmd: &str) -> String {
    if cmd.to_ascii_lowercase().contains("connecttimeout") {
        return cmd.to_owned();
    }
    format!("{cmd} -o ConnectTimeout={}", CONNECT_TIMEOUT.as_secs())
}
