//! `-t`: check the config and the rsync on PATH, and print what would run; with
//! `--probe`, ask each remote to answer.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::Stdio;
use std::time::Duration;

use anyhow::anyhow;

use super::{module::Module, runtime, usage, Exit};
use crate::cli::Args;
use crate::config::plugins::Plugin;
use crate::config::{Config, Schedule};
use crate::sync::{self, Job};
use crate::sys::shell;

/// Prints the watches, remotes and rsync commands; with `-m`, checks that module too.
pub fn test_config(config: &Config, module: Option<&str>, args: &Args) -> Result<u8, Exit> {
    if let Some(m) = module {
        Module::new(config, m).map_err(usage)?;
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
        Some(Err(why)) => println!(
            "warning: {}",
            sync::rsync::unguarded_warning(&why.to_string())
        ),
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
            // Named as --status, the logs and --remote name it; dest() is rsync's.
            println!("  remote {}", t.label());
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
    if !config.rules.is_empty() {
        // In order, as rsync reads them (the full sync's command line above carries them).
        println!(
            "filter rules (after the excludes; the first that matches decides, none: included):"
        );
        for r in &config.rules.0 {
            println!("    {}", String::from_utf8_lossy(&r.text()));
        }
    }
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
        Some(Plugin::Command(c)) => {
            println!("plugin: command: {} ({})", c.describe(), c.describe_mode())
        }
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
    match &config.delete_brake {
        Some(b) => {
            let when = if b.percent == 0 {
                format!("at {} or more", b.count)
            } else {
                format!(
                    "when more than {}% of the tree and {} or more",
                    b.percent, b.count
                )
            };
            let settle = match b.settle.as_secs() {
                0 => "deletes go at once".to_string(),
                s => format!("each delete waits {s} s first"),
            };
            println!(
                "delete brake: deletes held {when} within {} s; {settle} (release: sersync2 \
                 --release-deletes)",
                b.window.as_secs()
            );
        }
        None => println!("delete brake: off"),
    }
    match &config.big_files {
        Some(b) if b.append || b.inplace => println!(
            "big files: {} or more pushed {} (the rest whole)",
            crate::config::show_size(b.size),
            match (b.append, b.inplace) {
                (true, true) => "as appends when they grew, in place otherwise",
                (true, false) => "as appends when they grew",
                _ => "in place",
            }
        ),
        _ => println!("big files: off (every file pushed whole)"),
    }
    println!("batch: up to {} paths per rsync call", config.rsync.batch);
    match &config.host {
        Some((host, port)) => println!(
            "status: http://{}/status and /metrics (and `sersync2 --status -o <this config>`)",
            crate::config::host_port(host, *port)
        ),
        None => println!(
            "status: `sersync2 --status -o <this config>` (the control socket); HTTP /status \
             and /metrics: off (on with <host start=\"true\">)"
        ),
    }
    if !config.ssh_commands().is_empty() {
        println!(
            "ssh: one shared connection per remote: the live and full commands' ssh also \
             gets -o ControlMaster=auto -o ControlPath=<lock dir>/ssh-<hash>/%C \
             -o ControlPersist={} (unless the ssh command sets its own)",
            sync::rsync::SSH_PERSIST.as_secs()
        );
    }
    for warning in resolve_warnings(config, &targets) {
        println!("warning: {warning}");
    }
    if !unavailable.is_empty() {
        return Err(usage(anyhow!(
            "<watcher backend=\"fanotify\"> cannot watch {}: the agent would not start",
            unavailable.join(", ")
        )));
    }
    if args.probe {
        return probe_all(&targets);
    }
    Ok(0)
}

/// How long one name may take to resolve before `-t` says it did not.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// The host part of a remote's or `<host>`'s address: brackets of an IPv6 address off.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Looks every name up at once, each on its own thread, and waits at most
/// [`RESOLVE_WITHIN`] for all of them together: a resolver that hangs must not hang
/// `-t` (which the unit runs before every start), nor make it wait once per name. A
/// lookup still running then is left behind, reported as not resolved in time.
fn lookups(hosts: &[String]) -> std::collections::HashMap<String, Result<(), String>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut out = std::collections::HashMap::new();
    let mut waiting = 0usize;
    for host in hosts {
        let tx = tx.clone();
        let key = host.clone();
        let name = bare_host(host).to_owned();
        let spawned = std::thread::Builder::new()
            .name("resolve".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let found = match (name.as_str(), 0).to_socket_addrs() {
                    Ok(mut a) => match a.next() {
                        Some(_) => Ok(()),
                        None => Err("resolves to no address".to_owned()),
                    },
                    Err(e) => Err(format!("does not resolve: {e}")),
                };
                let _ = tx.send((key, found));
            });
        match spawned {
            Ok(_) => waiting += 1,
            Err(e) => {
                out.insert(host.clone(), Err(format!("cannot start its lookup: {e}")));
            }
        }
    }
    let deadline = std::time::Instant::now() + RESOLVE_WITHIN;
    while waiting > 0 {
        match rx.recv_deadline(deadline) {
            Ok((host, found)) => {
                out.insert(host, found);
                waiting -= 1;
            }
            Err(_) => break,
        }
    }
    for host in hosts {
        out.entry(host.clone()).or_insert_with(|| {
            Err(format!(
                "did not resolve within {} s",
                RESOLVE_WITHIN.as_secs()
            ))
        });
    }
    out
}

/// Warnings for names that do not resolve now: each remote's host, and `<host hostip>`
/// while the endpoint is off (on, it is an error above). Warnings, not errors: the unit
/// runs `-t` before each start, and a boot where the resolver is not up yet must not
/// keep the agent from starting (its pushes are retried until the name resolves). In
/// ssh mode the ssh config may map the name (a `Host` alias): said so.
fn resolve_warnings(config: &Config, targets: &[sync::Target]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for name in targets
        .iter()
        .map(|t| &t.remote.ip)
        .chain(config.host_unused.as_ref())
    {
        if !hosts.contains(name) {
            hosts.push(name.clone());
        }
    }
    let found = lookups(&hosts);
    let failed = |host: &str| found.get(host).and_then(|r| r.as_ref().err());
    let mut out = Vec::new();
    let mut told = std::collections::HashSet::new();
    for t in targets {
        let host = t.remote.ip.as_str();
        if let Some(why) = failed(host) {
            if !told.insert(host) {
                continue;
            }
            let alias = if t.opts.ssh.is_some() {
                " (unless the ssh config names it as a Host alias)"
            } else {
                ""
            };
            out.push(format!(
                "remote {}: {host} {why}: no push to it can succeed{alias}",
                t.label()
            ));
        }
    }
    if let Some(hostip) = &config.host_unused {
        if let Some(why) = failed(hostip) {
            out.push(format!(
                "<host hostip=\"{hostip}\">: {why} (unused while <host start> is not \
                 \"true\"; the status endpoint would not start with it)"
            ));
        }
    }
    out
}

/// Most bytes of a failed probe's stderr kept for the report.
const PROBE_STDERR_MAX: usize = 4096;

/// Asks every remote to answer ([`sync::Target::probe_argv`]) and to take a push (a
/// dry run, [`sync::Target::probe_push_argv`]), one after the other; prints one line
/// each. Exit 1 if one did not answer or would refuse every push.
fn probe_all(targets: &[sync::Target]) -> Result<u8, Exit> {
    let mut failed = Vec::new();
    let mut refusing = Vec::new();
    for t in targets {
        let label = t.label();
        match probe(t) {
            Ok(()) => println!("probe {label}: answers"),
            Err(Probed::Silent(why)) => {
                println!("probe {label}: FAILED: {why}");
                failed.push(label);
            }
            Err(Probed::RefusesPushes(why)) => {
                println!("probe {label}: READ-ONLY: {why}");
                refusing.push(label);
            }
        }
    }
    if failed.is_empty() && refusing.is_empty() {
        return Ok(0);
    }
    let mut said = Vec::new();
    if !failed.is_empty() {
        said.push(format!(
            "{} of {} remote(s) did not answer: {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        ));
    }
    if !refusing.is_empty() {
        said.push(format!(
            "{} of {} remote(s) answer but refuse pushes (every push to them will fail): {}",
            refusing.len(),
            targets.len(),
            refusing.join(", ")
        ));
    }
    Err(runtime(anyhow!("{}", said.join("; "))))
}

/// Why a probe failed.
enum Probed {
    /// The listing failed: rsync's exit and its last words.
    Silent(String),
    /// It answered, but a dry-run push was refused (a read-only module): what to do.
    RefusesPushes(String),
}

/// One remote's probe: Ok if rsync listed it and a dry-run push to it was taken.
fn probe(t: &sync::Target) -> Result<(), Probed> {
    rsync_said(t, t.probe_argv()).map_err(Probed::Silent)?;
    rsync_said(t, t.probe_push_argv()).map_err(|why| {
        Probed::RefusesPushes(if read_only_module(&why) {
            format!(
                "the module answers but is read only (`read only = yes` in the remote's \
                 rsyncd.conf): every push will fail; set `read only = no` for it there \
                 ({why})"
            )
        } else {
            format!(
                "it answers a listing, but refused a dry-run push: every push will fail ({why})"
            )
        })
    })
}

/// Does rsync's report say the daemon module is read only?
fn read_only_module(said: &str) -> bool {
    said.contains("module is read only")
}

/// Runs rsync with `argv` in the remote's watch root: Ok if it succeeded; else rsync's
/// exit and its last words.
fn rsync_said(t: &sync::Target, argv: Vec<std::ffi::OsString>) -> Result<(), String> {
    let mut cmd = sync::rsync::command_in(&t.root).map_err(|e| format!("cannot run rsync: {e}"))?;
    let out = cmd
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run rsync: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = &out.stderr[out.stderr.len().saturating_sub(PROBE_STDERR_MAX)..];
    let said: Vec<String> = String::from_utf8_lossy(err)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    let code = match out.status.code() {
        Some(c) => format!("rsync exit {c} ({})", sync::rsync::describe_status(c)),
        None => "rsync killed by a signal".to_owned(),
    };
    Err(if said.is_empty() {
        code
    } else {
        format!("{code}: {}", said.join(" / "))
    })
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
