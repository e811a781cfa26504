//! The fleet journal: an embedded SQLite database (schema in `schema.sql`), written in
//! transactions with a rollback journal (not WAL, which needs shared memory and so does not
//! work over NFS or EFS), so a run killed at any moment leaves it consistent. One `fleet run`
//! at a time holds it ([`lock_for_run`]). It caches
//! what each source went through (stages, resources, outcome) and feeds `status` and
//! `report`; what is really done is read back from AWS tags on every run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The journal format this build writes; older ones are upgraded on open.
pub const FORMAT: i64 = 1;
const SCHEMA: &str = include_str!("schema.sql");

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {err}")]
    Sql {
        path: PathBuf,
        #[source]
        err: rusqlite::Error,
    },
    #[error("{path}: journal format {found} is newer than this pv2hvm reads ({FORMAT}): use a newer pv2hvm")]
    TooNew { path: PathBuf, found: i64 },
    #[error("{path}: not a pv2hvm fleet journal")]
    Foreign { path: PathBuf },
}

/// One source as the journal has it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Entry {
    pub source: String,
    pub region: String,
    pub name: Option<String>,
    pub status: String,
    pub stage: Option<String>,
    pub outcome: Option<String>,
    pub image: Option<String>,
    /// AMI copies: (region, id).
    pub copies: Vec<(String, String)>,
    pub instance: Option<String>,
    pub error: Option<String>,
    pub blocks_fetched: u64,
    pub blocks_uploaded: u64,
    pub attempts: u32,
    pub seconds: Option<f64>,
    /// Seconds per stage of the last attempt, in stage order.
    pub stages: Vec<(String, f64)>,
}

/// A source claimed for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub source: String,
    pub region: String,
    /// Its plan from the fleet plan file, as JSON.
    pub plan: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// What a new source row holds.
pub struct NewItem<'a> {
    pub source: &'a str,
    pub region: &'a str,
    pub name: Option<&'a str>,
    pub plan: Option<&'a str>,
}

/// The exclusive hold of one `fleet run` on a journal: an advisory lock (flock) on
/// `JOURNAL.lock`, beside it. Over NFS (EFS) Linux takes it as a whole-file POSIX lock on the
/// server, so runs on different nodes exclude each other too. Released when dropped or when
/// the process ends, however it ends; the file itself stays.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{journal}: another fleet run is using this journal (it holds {lock}); two runs of one shard at once would repeat work: let that one finish"
    )]
    Held { journal: PathBuf, lock: PathBuf },
    #[error("{lock}: locking the journal: {err}")]
    Io {
        lock: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

/// The lock file of the journal at `journal`.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes the journal for this run, or fails at once if another run has it.
pub fn lock_for_run(journal: &Path) -> Result<RunLock, LockError> {
    use std::os::fd::AsRawFd;
    let lock = lock_path(journal);
    let io = |err| LockError::Io { lock: lock.clone(), err };
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
    loop {
        // SAFETY: flock on a descriptor this function owns (the file lives in the result); it
        // touches no memory.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(RunLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Err(LockError::Held { journal: journal.to_path_buf(), lock }),
            _ => return Err(io(err)),
        }
    }
}

pub struct Journal {
    path: PathBuf,
    db: Mutex<Connection>,
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Journal {
    fn sql(&self, err: rusqlite::Error) -> JournalError {
        JournalError::Sql { path: self.path.clone(), err }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens (creating if need be) the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let sql = |err| JournalError::Sql { path: path.to_path_buf(), err };
        let db = Connection::open(path).map_err(sql)?;
        db.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql)?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
        if version > FORMAT {
            return Err(JournalError::TooNew { path: path.to_path_buf(), found: version });
        }
        if version == 0 {
            let tables: i64 = db
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
                .map_err(sql)?;
            if tables > 0 {
                return Err(JournalError::Foreign { path: path.to_path_buf() });
            }
        }
        // A rollback journal: a process killed mid-write leaves the last committed transaction
        // intact, and it works on network filesystems, where WAL's shared memory does not.
        // Journals written in WAL mode by earlier versions are switched back here.
        db.pragma_update(None, "journal_mode", "DELETE").map_err(sql)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        if version == 0 {
            db.execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = {FORMAT}; COMMIT;")).map_err(sql)?;
        }
        Ok(Journal { path: path.to_path_buf(), db: Mutex::new(db) })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Adds sources not yet in the journal (one transaction per call); returns how many were new.
    pub fn add(&self, items: &[NewItem<'_>]) -> Result<usize, JournalError> {
        let mut db = self.lock();
        let tx = db.transaction().map_err(|e| self.sql(e))?;
        let mut added = 0;
        {
            let next: i64 = tx
                .query_row("SELECT coalesce(max(ord), -1) + 1 FROM items", [], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            let mut ins = tx
                .prepare("INSERT OR IGNORE INTO items (source, region, name, ord, plan) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(|e| self.sql(e))?;
            for it in items {
                added += ins
                    .execute(params![it.source, it.region, it.name, next + added as i64, it.plan])
                    .map_err(|e| self.sql(e))?;
            }
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(added)
    }

    /// Starts a new generation (one per `fleet run`): sources not done are offered again once.
    pub fn next_generation(&self) -> Result<i64, JournalError> {
        let g: i64 = self.meta("generation")?.and_then(|g| g.parse().ok()).unwrap_or(0) + 1;
        self.set_meta("generation", &g.to_string())?;
        // A source left "running" belonged to a run that died.
        self.lock()
            .execute("UPDATE items SET status = 'pending' WHERE status = 'running'", [])
            .map_err(|e| self.sql(e))?;
        Ok(g)
    }

    /// Claims the next source of generation `g` not done, whose region is not in `full`.
    pub fn claim(&self, g: i64, full: &[String]) -> Result<Option<Claim>, JournalError> {
        let mut db = self.lock();
        let tx = db.transaction().map_err(|e| self.sql(e))?;
        let row = {
            let mut q = tx
                .prepare(
                    "SELECT source, region, plan, attempts FROM items \
                     WHERE status != 'done' AND generation < ?1 ORDER BY ord",
                )
                .map_err(|e| self.sql(e))?;
            let mut rows = q.query([g]).map_err(|e| self.sql(e))?;
            let mut pick = None;
            while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
                let region: String = r.get(1).map_err(|e| self.sql(e))?;
                if !full.contains(&region) {
                    pick = Some(Claim {
                        source: r.get(0).map_err(|e| self.sql(e))?,
                        region,
                        plan: r.get(2).map_err(|e| self.sql(e))?,
                        attempt: r.get::<_, u32>(3).map_err(|e| self.sql(e))? + 1,
                    });
                    break;
                }
            }
            pick
        };
        if let Some(Claim { source, attempt, .. }) = &row {
            tx.execute(
                "UPDATE items SET status = 'running', generation = ?2, attempts = ?3, started = ?4, \
                 finished = NULL, error = NULL, stage = NULL WHERE source = ?1",
                params![source, g, attempt, now()],
            )
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(row)
    }

    /// True when some source of generation `g` is still to be claimed (in any region).
    pub fn any_left(&self, g: i64) -> Result<bool, JournalError> {
        self.lock()
            .query_row("SELECT count(*) FROM items WHERE status != 'done' AND generation < ?1", [g], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
            .map_err(|e| self.sql(e))
    }

    pub fn stage_started(&self, source: &str, attempt: u32, stage: &str) -> Result<(), JournalError> {
        let db = self.lock();
        db.execute(
            "INSERT INTO stages (source, attempt, stage, started) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (source, attempt, stage) DO NOTHING",
            params![source, attempt, stage, now()],
        )
        .map_err(|e| self.sql(e))?;
        db.execute("UPDATE items SET stage = ?2 WHERE source = ?1", params![source, stage]).map_err(|e| self.sql(e))?;
        Ok(())
    }

    pub fn stage_done(&self, source: &str, attempt: u32, stage: &str, detail: &str) -> Result<(), JournalError> {
        let t = now();
        self.lock()
            .execute(
                "INSERT INTO stages (source, attempt, stage, started, finished, detail) VALUES (?1, ?2, ?3, ?4, ?4, ?5) \
                 ON CONFLICT (source, attempt, stage) DO UPDATE SET finished = ?4, \
                 detail = coalesce(stages.detail || '; ', '') || ?5",
                params![source, attempt, stage, t, detail],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn resource(&self, source: &str, kind: &str, id: &str, region: &str, role: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO resources (id, region, source, kind, role, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, region, source, kind, role, now()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Records a finished source: its outcome, AMI (and copies, as resources), counters.
    #[allow(clippy::too_many_arguments)]
    pub fn done(
        &self,
        source: &str,
        outcome: &str,
        image: Option<&str>,
        copies: &[(String, String)],
        instance: Option<&str>,
        fetched: u64,
        uploaded: u64,
    ) -> Result<(), JournalError> {
        let mut db = self.lock();
        let tx = db.transaction().map_err(|e| self.sql(e))?;
        let region: String = tx
            .query_row("SELECT region FROM items WHERE source = ?1", [source], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        let t = now();
        if let Some(img) = image {
            tx.execute(
                "INSERT OR IGNORE INTO resources (id, region, source, kind, role, created) VALUES (?1, ?2, ?3, 'image', 'image', ?4)",
                params![img, region, source, t],
            )
            .map_err(|e| self.sql(e))?;
        }
        for (r, id) in copies {
            tx.execute(
                "INSERT OR IGNORE INTO resources (id, region, source, kind, role, created) VALUES (?1, ?2, ?3, 'image', 'image', ?4)",
                params![id, r, source, t],
            )
            .map_err(|e| self.sql(e))?;
        }
        tx.execute(
            "UPDATE items SET status = 'done', outcome = ?2, image = ?3, instance = ?4, error = NULL, \
             blocks_fetched = blocks_fetched + ?5, blocks_uploaded = blocks_uploaded + ?6, finished = ?7, stage = NULL \
             WHERE source = ?1",
            params![source, outcome, image, instance, fetched as i64, uploaded as i64, t],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))
    }

    pub fn failed(&self, source: &str, error: &str) -> Result<(), JournalError> {
        self.lock()
            .execute(
                "UPDATE items SET status = 'failed', outcome = 'failed', error = ?2, finished = ?3 WHERE source = ?1",
                params![source, error, now()],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Counts by status.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, JournalError> {
        let db = self.lock();
        let mut q = db
            .prepare("SELECT status, count(*) FROM items GROUP BY status ORDER BY status")
            .map_err(|e| self.sql(e))?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Every source in order, one at a time (the journal is not loaded whole).
    pub fn each(&self, f: &mut dyn FnMut(Entry)) -> Result<(), JournalError> {
        let db = self.lock();
        let mut q = db
            .prepare(
                "SELECT source, region, name, status, stage, outcome, image, instance, error, blocks_fetched, \
                 blocks_uploaded, attempts, started, finished FROM items ORDER BY source",
            )
            .map_err(|e| self.sql(e))?;
        let mut copies = db
            .prepare(
                "SELECT r.region, r.id FROM resources r JOIN items i ON i.source = r.source \
                 WHERE r.source = ?1 AND r.kind = 'image' AND r.role = 'image' AND r.region != i.region ORDER BY r.region",
            )
            .map_err(|e| self.sql(e))?;
        let mut stages = db
            .prepare(
                "SELECT stage, finished - started FROM stages WHERE source = ?1 AND attempt = ?2 AND finished IS NOT NULL",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = q.query([]).map_err(|e| self.sql(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let g = |e| self.sql(e);
            let started: Option<f64> = r.get(12).map_err(g)?;
            let finished: Option<f64> = r.get(13).map_err(g)?;
            let mut e = Entry {
                source: r.get(0).map_err(g)?,
                region: r.get(1).map_err(g)?,
                name: r.get(2).map_err(g)?,
                status: r.get(3).map_err(g)?,
                stage: r.get(4).map_err(g)?,
                outcome: r.get(5).map_err(g)?,
                image: r.get(6).map_err(g)?,
                instance: r.get(7).map_err(g)?,
                error: r.get(8).map_err(g)?,
                blocks_fetched: r.get::<_, i64>(9).map_err(g)? as u64,
                blocks_uploaded: r.get::<_, i64>(10).map_err(g)? as u64,
                attempts: r.get(11).map_err(g)?,
                seconds: started.zip(finished).map(|(s, f)| (f - s).max(0.0)),
                ..Entry::default()
            };
            let cs =
                copies.query_map([&e.source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(g)?;
            e.copies = cs.collect::<Result<_, _>>().map_err(g)?;
            let mut st: Vec<(String, f64)> = stages
                .query_map(params![e.source, e.attempts], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
                .map_err(g)?
                .collect::<Result<_, _>>()
                .map_err(g)?;
            let order = |s: &str| crate::aws::migrate::Stage::parse(s).map_or(99, |x| x as usize);
            st.sort_by_key(|(s, _)| order(s));
            e.stages = st;
            f(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(db: &Connection) -> Vec<(String, String)> {
        let mut q = db
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// The schema this build writes is format 1 as committed: changing it needs a new format
    /// (and an upgrade path), not an edit.
    #[test]
    fn a_new_journal_has_the_format_1_schema() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let fresh = schema(&j.lock());
        let old = Connection::open_in_memory().unwrap();
        old.execute_batch(include_str!("../../tests/fleet/journal-format-1.sql")).unwrap();
        assert_eq!(fresh, schema(&old));
        let v: i64 = old.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, FORMAT);
    }

    #[test]
    fn claims_respect_full_regions_and_generations() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let item = |s, r| NewItem { source: s, region: r, name: None, plan: None };
        assert_eq!(j.add(&[item("i-1", "a"), item("i-2", "b"), item("i-3", "a")]).unwrap(), 3);
        assert_eq!(j.add(&[item("i-1", "a")]).unwrap(), 0);
        let g = j.next_generation().unwrap();
        assert_eq!(j.claim(g, &[]).unwrap().unwrap().source, "i-1");
        assert_eq!(j.claim(g, &["a".into()]).unwrap().unwrap().source, "i-2");
        assert!(j.claim(g, &["a".into()]).unwrap().is_none());
        assert_eq!(j.claim(g, &[]).unwrap().unwrap().source, "i-3");
        assert!(j.claim(g, &[]).unwrap().is_none());
        j.done("i-1", "migrated", Some("ami-1"), &[("r2".into(), "ami-2".into())], None, 3, 2).unwrap();
        j.failed("i-3", "boom").unwrap();
        // A new run: what is not done is offered again, once; "running" (a dead run's) resets.
        let g = j.next_generation().unwrap();
        let again: Vec<String> = std::iter::from_fn(|| j.claim(g, &[]).unwrap().map(|c| c.source)).collect();
        assert_eq!(again, ["i-2", "i-3"]);
        let mut seen = Vec::new();
        j.each(&mut |e| seen.push(e)).unwrap();
        assert_eq!(seen[0].copies, vec![("r2".to_string(), "ami-2".to_string())]);
        assert_eq!(seen[0].image.as_deref(), Some("ami-1"));
        assert_eq!(seen[2].attempts, 2);
    }

    #[test]
    fn one_run_holds_a_journal_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let held = lock_for_run(&path).unwrap();
        // flock is per open file: a second open, even in this process, is refused at once.
        match lock_for_run(&path) {
            Err(LockError::Held { lock, .. }) => assert_eq!(lock, dir.path().join("j.db.lock")),
            other => panic!("a second hold: {other:?}"),
        }
        drop(held);
        let _again = lock_for_run(&path).expect("free once the first run let go");
    }

    /// A rollback journal, not WAL (which needs shared memory, absent on NFS); a WAL journal
    /// of an earlier version is switched on open and keeps its rows.
    #[test]
    fn journals_use_a_rollback_journal_and_wal_ones_are_switched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mode = |j: &Journal| -> String { j.lock().pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap() };
        assert_eq!(mode(&Journal::open(&path).unwrap()), "delete");
        let old = dir.path().join("old.db");
        {
            let db = Connection::open(&old).unwrap();
            db.pragma_update(None, "journal_mode", "WAL").unwrap();
            db.execute_batch(include_str!("../../tests/fleet/journal-format-1.sql")).unwrap();
        }
        let j = Journal::open(&old).unwrap();
        assert_eq!(mode(&j), "delete");
        assert_eq!(j.counts().unwrap().iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert!(!dir.path().join("old.db-wal").exists());
    }
}
