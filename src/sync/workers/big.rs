//! Big files (`<bigFiles>`, `sync::bigfiles`): each in a call of its own, its transfer
//! chosen before the job runs, and what its push landed kept for the next one.

use std::path::{Path, PathBuf};

use super::{Mirror, Ordered};
use crate::config::BigFiles;
use crate::sync::bigfiles::{is_big, transfer, Stamp, Transfer};
use crate::sync::job::{Job, RemoteId};
use crate::sync::lockorder::Lock;

/// The most plain entries of a job whose big files are looked for: one stat per path
/// would be most of the agent's own CPU in a burst's calls of thousands of paths, whose
/// big files go whole (as before); a big file changed alone or beside a few others is
/// looked at.
pub(super) const PLAN_AT_MOST: usize = 64;

/// The big files of one job: each with its transfer and what it was when chosen, and
/// where the remote's full syncs stood then (`Known::fulls`).
#[derive(Default)]
pub(super) struct Plan {
    pub(super) big: Vec<(PathBuf, Transfer, Stamp)>,
    fulls: u64,
}

impl Mirror {
    /// From now on big files are pushed by `rule` (`None`: every file whole).
    pub fn push_big_files(&self, rule: Option<BigFiles>) {
        if let Some(rule) = rule {
            let _ = self.big.set(rule);
        }
    }

    /// Before `job` runs to `t`: its big files (plain entries, regular files of the
    /// rule's size or more now), each with its transfer; and what the job may write on
    /// the remote is forgotten (a big file's own push records it again once it landed,
    /// [`Mirror::big_landed`]).
    pub(super) fn big_plan(&self, t: RemoteId, job: &Job) -> Plan {
        let mut plan = Plan::default();
        // Without the rule nothing is ever known: nothing to choose or forget.
        let Some(rule) = self.big.get() else {
            return plan;
        };
        let root = &self.targets[t.0].root;
        let stamps: Vec<(PathBuf, Stamp)> = match job {
            Job::Paths(paths) if paths.len() <= PLAN_AT_MOST => paths
                .iter()
                .filter(|e| !e.listing)
                .filter_map(|e| Some((e.path.clone(), Stamp::of(root, &e.path)?)))
                .filter(|(_, now)| is_big(rule, now))
                .collect(),
            Job::Paths(_) | Job::Full | Job::Rename { .. } => Vec::new(),
        };
        let mut known = Ordered::lock(&self.known[t.0], Lock::BigFiles);
        for (path, now) in stamps {
            let how = transfer(rule, &now, known.get(&path));
            plan.big.push((path, how, now));
        }
        known.forget(job);
        plan.fulls = known.fulls();
        plan
    }

    /// After the call of the big file `rel` chosen as `before`: its length is known on
    /// `t` if the call landed and the file did not change while it ran (else the next
    /// push of it is not an append).
    pub(super) fn big_landed(
        &self,
        t: RemoteId,
        plan: &Plan,
        rel: &Path,
        before: &Stamp,
        ok: bool,
    ) {
        let now = Stamp::of(&self.targets[t.0].root, rel);
        if ok && now.as_ref() == Some(before) {
            Ordered::lock(&self.known[t.0], Lock::BigFiles).landed(rel, before.size, plan.fulls);
        }
    }

    /// After `job` ran to `t`: a full sync's end makes what pushes beside it recorded
    /// unknown (it landed what it read when it began).
    pub(super) fn big_done(&self, t: RemoteId, job: &Job) {
        if matches!(job, Job::Full) && self.big.get().is_some() {
            Ordered::lock(&self.known[t.0], Lock::BigFiles).full_ended();
        }
    }
}

/// The plan's entry for a call that is one of its big files alone.
pub(super) fn planned<'a>(plan: &'a Plan, call: &Job) -> Option<&'a (PathBuf, Transfer, Stamp)> {
    match call {
        Job::Paths(p) if p.len() == 1 && !p[0].listing => {
            plan.big.iter().find(|(path, _, _)| *path == p[0].path)
        }
        _ => None,
    }
}
