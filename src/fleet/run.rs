//! `fleet run`: migrations in batches, `concurrency` at once and at most `per_region` in any
//! one region, each recorded stage by stage in the journal. Killed at any moment and run again
//! (with or without the journal, on any machine), each source goes on from its last completed
//! stage: [`crate::aws::migrate`] finds what was made by its tags. A failing source does not
//! stop the others unless `fail_fast`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::journal::{Claim, Journal, JournalError};
use super::{Regions, exit};
use crate::aws::ebs::Transfer;
use crate::aws::migrate::{self, MigrateOptions, MigrateReport, Observer, Stage};
use crate::aws::tags::Role;
use crate::guest::playbook::Playbook;
use crate::plan::Plan;
use crate::progress::{Progress, Silent};
use crate::spec::ConvertSpec;

/// The choices of a fleet run (those of `migrate`, plus the limits).
#[derive(Clone)]
pub struct RunOptions {
    pub spec: ConvertSpec,
    pub playbooks: Vec<Playbook>,
    pub work_dir: PathBuf,
    /// Migrations in flight.
    pub concurrency: usize,
    /// Migrations in flight in any one region.
    pub per_region: usize,
    /// EBS requests in flight per migration.
    pub ebs_concurrency: usize,
    pub copy_to_regions: Vec<String>,
    /// (region, KMS key) of the copies.
    pub copy_kms_keys: Vec<(String, String)>,
    pub kms_key_id: Option<String>,
    pub launch: bool,
    pub stop: bool,
    pub keep_temp: bool,
    pub grub_dir: Option<PathBuf>,
    pub fail_fast: bool,
    pub run_id: String,
}

/// What the command line shows of a run.
pub trait Watcher: Sync {
    fn started(&self, source: &str, region: &str);
    fn stage(&self, source: &str, stage: Stage, done: bool, detail: &str);
    fn transfers(&self, _source: &str, _fetched: Arc<Transfer>, _uploaded: Arc<Transfer>) {}
    fn finished(&self, source: &str, result: Result<&MigrateReport, &str>);
}

/// How a run ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub done: u64,
    /// Sources that failed this run, refused ones included.
    pub failed: u64,
    /// Of them, the refused ones (not convertible); the rest are worth a retry.
    pub refused: u64,
    /// Sources not started because of `fail_fast`.
    pub stopped_early: bool,
}

impl RunSummary {
    /// The exit code of `fleet run` for this outcome (README, "Exit codes"): 0 when every
    /// source is done; [`exit::RETRY`] when any failed for a reason a retry can fix, or
    /// `--fail-fast` left sources pending; else [`exit::REFUSED`] when some were refused.
    pub fn exit_code(&self) -> u8 {
        if self.failed > self.refused || self.stopped_early {
            exit::RETRY
        } else if self.refused > 0 {
            exit::REFUSED
        } else {
            0
        }
    }
}

/// One source's migration, heard by the journal and the watcher.
struct Heard<'a> {
    source: &'a str,
    attempt: u32,
    journal: &'a Journal,
    watcher: &'a dyn Watcher,
}

impl Heard<'_> {
    fn log(&self, r: Result<(), JournalError>) {
        if let Err(e) = r {
            tracing::warn!(source = self.source, error = %e, "could not write to the journal");
        }
    }
}

impl Observer for Heard<'_> {
    fn progress(&self) -> &dyn Progress {
        &Silent
    }
    fn stage_started(&self, stage: Stage) {
        self.log(self.journal.stage_started(self.source, self.attempt, stage.as_str()));
        self.watcher.stage(self.source, stage, false, "");
    }
    fn stage_done(&self, stage: Stage, detail: &str) {
        self.log(self.journal.stage_done(self.source, self.attempt, stage.as_str(), detail));
        self.watcher.stage(self.source, stage, true, detail);
    }
    fn created(&self, kind: &str, id: &str, region: &str, role: Role) {
        self.log(self.journal.resource(self.source, kind, id, region, role.as_str()));
    }
    fn transfers(&self, fetched: &Arc<Transfer>, uploaded: &Arc<Transfer>) {
        self.watcher.transfers(self.source, Arc::clone(fetched), Arc::clone(uploaded));
    }
}

#[derive(Default)]
struct Sched {
    active: HashMap<String, usize>,
    stop: bool,
    summary: RunSummary,
    error: Option<String>,
}

/// Runs every source of the journal not done yet (a failed one is tried again).
pub fn run(regions: &Regions, journal: &Journal, o: &RunOptions, watcher: &dyn Watcher) -> Result<RunSummary, String> {
    let g = journal.next_generation().map_err(|e| e.to_string())?;
    let sched = Mutex::new(Sched::default());
    let wake = Condvar::new();
    let lock = || sched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    std::thread::scope(|s| {
        for _ in 0..o.concurrency.max(1) {
            s.spawn(|| {
                loop {
                    // Claim the next source whose region has room, or wait for one to end.
                    let mut st = lock();
                    let claimed = loop {
                        if st.stop {
                            return;
                        }
                        let full: Vec<String> = st
                            .active
                            .iter()
                            .filter(|(_, n)| **n >= o.per_region.max(1))
                            .map(|(r, _)| r.clone())
                            .collect();
                        match journal.claim(g, &full) {
                            Ok(Some(item)) => {
                                *st.active.entry(item.region.clone()).or_default() += 1;
                                break item;
                            }
                            Ok(None) if st.active.values().sum::<usize>() == 0 => return,
                            Ok(None) => st = wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner),
                            Err(e) => {
                                st.error = Some(e.to_string());
                                st.stop = true;
                                wake.notify_all();
                                return;
                            }
                        }
                    };
                    drop(st);
                    let Claim { source, region, plan, attempt } = claimed;
                    let end = migrate_one(regions, journal, o, watcher, &source, &region, plan.as_deref(), attempt);
                    let mut st = lock();
                    if let Some(n) = st.active.get_mut(&region) {
                        *n -= 1;
                    }
                    if end == End::Done {
                        st.summary.done += 1;
                    } else {
                        st.summary.failed += 1;
                        if end == End::Refused {
                            st.summary.refused += 1;
                        }
                        if o.fail_fast {
                            st.stop = true;
                            st.summary.stopped_early = journal.any_left(g).unwrap_or(false);
                        }
                    }
                    wake.notify_all();
                }
            });
        }
    });
    let st = sched.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    match st.error {
        Some(e) => Err(e),
        None => Ok(st.summary),
    }
}

/// How one source ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Done,
    /// Not convertible (instance store, a Xen-only kernel, drift…): a retry changes nothing.
    Refused,
    /// Anything else (AWS, I/O, a host tool): worth a retry.
    Failed,
}

/// One source, start to end. Its failure is recorded, not returned.
#[allow(clippy::too_many_arguments)]
fn migrate_one(
    regions: &Regions,
    journal: &Journal,
    o: &RunOptions,
    watcher: &dyn Watcher,
    source: &str,
    region: &str,
    saved: Option<&str>,
    attempt: u32,
) -> End {
    watcher.started(source, region);
    let heard = Heard { source, attempt, journal, watcher };
    let result = (|| -> Result<MigrateReport, (String, End)> {
        let expected_plan: Option<Plan> = match saved {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| (format!("the saved plan: {e}"), End::Failed))?),
            None => None,
        };
        let aws = regions.get(region).map_err(|e| (e.to_string(), End::Failed))?;
        let mo = MigrateOptions {
            source: source.to_string(),
            spec: o.spec.clone(),
            expected_plan,
            copy_to_regions: o.copy_to_regions.clone(),
            name: None,
            stop: o.stop,
            launch: o.launch,
            instance_type: None,
            keep_temp: o.keep_temp,
            kms_key_id: o.kms_key_id.clone(),
            copy_kms_keys: o.copy_kms_keys.clone(),
            work_dir: o.work_dir.clone(),
            concurrency: o.ebs_concurrency,
            playbooks: o.playbooks.clone(),
            grub_dir: o.grub_dir.clone(),
            run_id: o.run_id.clone(),
        };
        migrate::migrate(&aws, &mo, &heard, &|_| true).map_err(|e| {
            let e: crate::Error = e.into();
            let end = if e.kind() == crate::ErrorKind::Refused { End::Refused } else { End::Failed };
            (format!("{:#}", anyhow::Error::from(e)), end)
        })
    })();
    match result {
        Ok(r) => {
            heard.log(journal.done(
                source,
                r.outcome,
                r.image.as_deref(),
                &r.copies,
                r.instance.as_deref(),
                r.blocks_fetched,
                r.blocks_uploaded,
            ));
            watcher.finished(source, Ok(&r));
            End::Done
        }
        Err((e, end)) => {
            heard.log(journal.failed(source, &e));
            watcher.finished(source, Err(&e));
            end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_whether_a_retry_helps() {
        let s = |done, failed, refused, stopped_early| RunSummary { done, failed, refused, stopped_early }.exit_code();
        assert_eq!(s(3, 0, 0, false), 0);
        assert_eq!(s(3, 2, 2, false), exit::REFUSED);
        assert_eq!(s(3, 2, 1, false), exit::RETRY);
        assert_eq!(s(0, 1, 0, false), exit::RETRY);
        assert_eq!(s(0, 1, 1, true), exit::RETRY, "--fail-fast left work pending");
    }
}
