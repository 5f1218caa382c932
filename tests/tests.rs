//! Single integration-test binary (Cargo.toml sets `autotests = false`): every
//! integration-test module is declared here so the suite links once. One module per
//! subject; the line above each says what it covers. Shared fixtures live in `support`.

// Fixtures: temp dirs, polling, tree snapshots, rsync daemons, sshd, test users, the agent.
#[macro_use]
mod support;
// Self-tests of those fixtures, with plain rsync (no agent).
mod fixtures;
// The module layering of src/ (no import cycle, each layer imports only from below).
mod layers;

// The basic mirror: creates, writes, deletes, links, excludes, -r, ssh mode, SIGTERM.
mod e2e;
// `<filter>`'s rsync include/exclude rules: the remotes hold what rsync itself selects.
mod filter_rules;
// The same against rsync for random trees and rule lists, live, full syncs and --once.
mod filter_random;
// Renames inside the tree travel as renames (files, directories, in and out of the tree).
mod moves;
// Seeded random workloads of every change the kernel can report, checked for equality.
mod churn;
// Directories swapped for links to outside the tree under a running agent.
mod links;
// Directories' own attributes (mode, times) reach the remotes whatever <attrib> says.
mod attributes;
// Paths longer than rsync can carry.
mod longpath;
// Large trees, storms and deploys (a release replaced by a copy, moved out and in).
mod scale;
// The fanotify backend's own cases (the shared suite also runs on it, see scripts/test.sh).
mod fanotify;
// A full sync never hides the live changes made while it runs.
mod fulllive;
// Big files pushed as appends or in place (`<bigFiles>`): the mirrors equal the source.
mod bigfiles;
// Warm restart: what changed while no agent ran arrives at the next start.
mod warm;

// Something goes wrong: a remote down mid-burst or at start, a kill, a queue overflow;
// daemon mode and the status endpoint.
mod scenarios;
// Remotes that fail and come back: retries, backoff, the fail log, full syncs owed.
mod faults_recover;
// The watch root removed, renamed away or replaced under a running agent.
mod faults_root;
// Signals and the service manager: SIGHUP, SIGTERM grace, sd_notify, syslog.
mod faults_signals;
// `--replay` beside a running instance, and the control socket it goes through.
mod faults_control;
// The brake on mass deletes: held, released, discarded, kept over a stop; edits flow.
mod brake;
// `--pause` and `--resume` (every remote or one): what waits, the reload, the stop, refusals.
mod pause;
// Pause, the brake and batch hooks with an ssh remote beside daemon remotes.
mod ssh_ops;
// Every failed push says its real cause (rsync's and ssh's own words).
mod causes;
// Many remotes and relays: one hung remote holds back only itself.
mod fanout;

// Replication lag per remote in /status, /metrics, --status and --wait-synced.
mod mirrors_lag;
// `sersync2 --verify` against real daemons.
mod mirrors_verify;
// One instance per config, and the commands that ask it (--status, --stop, ...).
mod instance;
// Logs for the journal: priority prefixes, JSON lines, the log file, rotation.
mod logs;
// Hostile or broken config files: -t and the start answer without a panic.
mod config_bounds;
// Per-remote options: ssh and daemon remotes in one config, each with its own settings.
mod remotes;
// The command plugin's batch hooks: paths on stdin, the remote's label, failures counted.
mod hooks;
// The Debian package built from this checkout.
mod package;

// Attacks made as the attacker: planted files, the status endpoint, the watched tree.
mod security;
