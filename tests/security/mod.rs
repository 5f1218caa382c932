//! Attacks on the agent, made as the attacker makes them: an unprivileged user the test
//! creates (or a hostile client, or a starved process) against the real binary and real
//! rsync daemons. One file per kind of attack.

// Files the agent trusts (fail log, pid/lock file, log file) planted or swapped by another user.
mod planted_files;
// The status endpoint flooded, held open, fed a huge request or exposed on a public address.
mod status_endpoint;
// A user who can write in the watched tree: names, plugin programs, the agent's own files.
mod watched_tree;
// Resources taken away while changes arrive: processes.
mod exhaustion;
