//! `-t`: check the config and the rsync on PATH, and print what would run.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use anyhow::anyhow;

use super::{module::Module, usage, Exit};
use crate::cli::Args;
use crate::config::plugins::Plugin;
use crate::config::{Config, Schedule};
use crate::sync::{self, Job};
use crate::sys::shell;

/// Prints the watches, remotes and rsync commands; with `-m`, checks that module too.
pub fn test_config(config: &Config, module: Option<&str>, args: &Args) -> Result<u8, Exit> {
    if let Some(m) = module {
        Module::new(config, m).map_err(|e| usage(anyhow!(e)))?;
    }
    let rsync = super::require_rsync()?;
    if let Some((host, port)) = &config.host {
        status_bindable(host).map_err(|m| {
            usage(anyhow!(
                "{}: <host hostip=\"{host}\" port=\"{port}\">: {m}; the status endpoint would \
                 never answer",
                config.file.display()
            ))
        })?;
    }
    let targets = sync::targets(config);
    let root_word = |t: &sync::Target| shell::display(&[t.root.clone().into()]);
    println!("config {}: OK", config.file.display());
    println!("rsync: {rsync}");
    match config
        .roots
        .first()
        .map(|r| sync::rsync::link_guard(&r.path))
    {
        Some(Ok(())) => println!(
            "links: rsync reads the watch roots through a nosymfollow mount (no link in a \
             path is followed)"
        ),
        Some(Err(why)) => println!("warning: {}", sync::rsync::unguarded_warning(&why)),
        None => {}
    }
    let mut unavailable = Vec::new();
    for root in &config.roots {
        println!("watch {}", root.path.display());
        let (backend, why) = crate::watch::choose(&root.path, config.watcher);
        println!("  watcher: {} ({why})", backend.as_str());
        if config.watcher == crate::config::Backend::Fanotify
            && why.starts_with("asked for, but unavailable")
        {
            unavailable.push(root.path.display().to_string());
        }
        for t in targets.iter().filter(|t| t.root == root.path) {
            println!("  remote {}", t.dest());
            let (mut live, _) = t.argv(&Job::Paths(vec![]), &[]);
            let dest = live.pop().unwrap_or_default();
            println!(
                "    live:  cd {} && rsync {} ./PATH... {}",
                root_word(t),
                shell::display(&live),
                shell::display(&[dest])
            );
            let (full, _) = t.argv(&Job::Full, &[]);
            println!(
                "    full:  cd {} && rsync {}",
                root_word(t),
                shell::display(&full)
            );
        }
    }
    let on = |b: bool| if b { "on" } else { "off" };
    let e = config.events;
    println!(
        "events: delete {} createFolder {} createFile {} closeWrite {} moveFrom {} moveTo {} attrib {} modify {}",
        on(e.delete), on(e.create_folder), on(e.create_file), on(e.close_write),
        on(e.move_from), on(e.move_to), on(e.attrib), on(e.modify)
    );
    println!("filter: {} exclude rule(s)", config.excludes.len());
    println!(
        "fail log: {} (replayed every {} min)",
        config.fail_log.display(),
        config.replay_every.as_secs() / 60
    );
    match &config.crontab {
        Some(c) => match &c.schedule {
            Schedule::Every(d) => println!("crontab: full sync every {} min", d.as_secs() / 60),
            Schedule::Cron(expr) => println!("crontab: full sync at \"{expr}\""),
        },
        None => println!("crontab: off"),
    }
    match config.plugins.active().map(|p| &**p) {
        Some(Plugin::Command(c)) => println!("plugin: command: {}", c.describe()),
        Some(p) => println!("plugin: {}", p.name()),
        None => println!("plugin: off"),
    }
    if let Some(warning) = super::plugin_warning(config) {
        println!("warning: {warning}");
    }
    for warning in super::own_files_warnings(config, args) {
        println!("warning: {warning}");
    }
    match &config.verify {
        Some(Schedule::Every(d)) => println!("verify: every {} min", d.as_secs() / 60),
        Some(Schedule::Cron(expr)) => println!("verify: at \"{expr}\""),
        None => println!("verify: off"),
    }
    println!("batch: up to {} paths per rsync call", config.rsync.batch);
    match &config.host {
        Some((host, port)) => println!(
            "status: http://{}/status and /metrics",
            crate::config::host_port(host, *port)
        ),
        None => println!("status: off"),
    }
    if config.rsync.ssh.is_some() {
        println!(
            "ssh: one shared connection per remote: the live and full commands' ssh also \
             gets -o ControlMaster=auto -o ControlPath=<lock dir>/ssh-<hash>/%C \
             -o ControlPersist={} (unless the ssh command sets its own)",
            sync::rsync::SSH_PERSIST.as_secs()
        );
    }
    if !unavailable.is_empty() {
        return Err(usage(anyhow!(
            "<watcher backend=\"fanotify\"> cannot watch {}: the agent would not start",
            unavailable.join(", ")
        )));
    }
    Ok(0)
}

/// Whether the agent could listen on `host`: the name resolves and one of its addresses
/// is this host's (a bind to port 0 succeeds; the port itself may well be held by the
/// running agent, so it is not tried).
fn status_bindable(host: &str) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut why = format!("{host} resolves to no address");
    for addr in &addrs {
        match TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) => why = format!("cannot listen on {}: {e}", addr.ip()),
        }
    }
    Err(why)
}
