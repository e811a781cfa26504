//! `--shard K/N`: the K-th of N stable, disjoint slices of a fleet, by a hash of the source id.
//! Without the flag, K comes from the array index an engine gives each child
//! (`AWS_BATCH_JOB_ARRAY_INDEX` on AWS Batch, `JOB_COMPLETION_INDEX` on a Kubernetes Indexed
//! Job) and N from `PV2HVM_SHARDS`.

use std::fmt;

/// One slice of N (K counts from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?}: expected K/N, e.g. 0/3"))?;
        let k: u32 = k.trim().parse().map_err(|_| format!("shard {s:?}: K is not a number"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("shard {s:?}: N is not a number"))?;
        if n == 0 || k >= n {
            return Err(format!("shard {s:?}: need 0 <= K < N"));
        }
        Ok(Shard { k, n })
    }
}

/// The environment variables that carry an array child's index, in the order tried.
pub const INDEX_VARS: [&str; 2] = ["AWS_BATCH_JOB_ARRAY_INDEX", "JOB_COMPLETION_INDEX"];
/// The number of shards, set in the job definition next to the array size.
pub const COUNT_VAR: &str = "PV2HVM_SHARDS";

impl Shard {
    /// The shard an array child runs: `None` outside an array job. An index without
    /// `PV2HVM_SHARDS` (or a bad value) is an error: guessing N would drop or repeat work. So is
    /// `PV2HVM_SHARDS` without an index: that child would migrate the whole fleet.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, String> {
        let Some((var, k)) = INDEX_VARS.iter().find_map(|v| get(v).map(|k| (*v, k))) else {
            return match get(COUNT_VAR) {
                Some(n) => Err(format!(
                    "{COUNT_VAR}={n} is set but no shard index is: not an array child ({} unset), and no --shard K/N",
                    INDEX_VARS.join(" and ")
                )),
                None => Ok(None),
            };
        };
        let n =
            get(COUNT_VAR).ok_or_else(|| format!("{var}={k} is set but {COUNT_VAR} (the number of shards) is not"))?;
        format!("{}/{}", k.trim(), n.trim()).parse().map(Some).map_err(|e| format!("{var} and {COUNT_VAR}: {e}"))
    }

    /// `--shard K/N` given with `PV2HVM_SHARDS` also set: the two must agree on N.
    pub fn check_count(&self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        match get(COUNT_VAR) {
            Some(n) if n.trim().parse::<u32>().ok() != Some(self.n) => {
                Err(format!("--shard {self} but {COUNT_VAR}={n}: the number of shards must be the same"))
            }
            _ => Ok(()),
        }
    }

    /// True when `id` falls in this slice. Stable across runs, machines and versions: the first
    /// 8 bytes of SHA-256(id), modulo N.
    pub fn holds(&self, id: &str) -> bool {
        use sha2::Digest;
        let d = sha2::Sha256::digest(id.as_bytes());
        let h = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        h % u64::from(self.n) == u64::from(self.k)
    }
}

/// Set to the run id of the whole array (all shards share it) by a Kubernetes Job's pods: a
/// downward-API env from the Job's `batch.kubernetes.io/controller-uid` label.
pub const RUN_ID_VAR: &str = "PV2HVM_RUN_ID";

/// The run id an engine gives every child of one array job, so that all shards tag their
/// resources alike and `cleanup --run-id` needs one id: `PV2HVM_RUN_ID`, else the AWS Batch
/// array job's id (`AWS_BATCH_JOB_ID` of a child is `<array job id>:<index>`).
pub fn run_id_from_env(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(id) = get(RUN_ID_VAR).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        return Some(id);
    }
    let job = get("AWS_BATCH_JOB_ID")?;
    let parent = job.split_once(':').map_or(job.as_str(), |(p, _)| p).trim();
    (!parent.is_empty()).then(|| parent.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { k: 2, n: 3 });
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slices_are_disjoint_and_cover_everything() {
        let ids: Vec<String> = (0..300).map(|i| format!("i-{i:017x}")).collect();
        let n = 3;
        let mut seen = 0;
        for k in 0..n {
            let s = Shard { k, n };
            let mine = ids.iter().filter(|id| s.holds(id)).count();
            assert!(mine > 60, "shard {k} holds only {mine} of 300");
            seen += mine;
        }
        assert_eq!(seen, ids.len());
        for id in &ids {
            assert_eq!((0..n).filter(|&k| Shard { k, n }.holds(id)).count(), 1);
        }
        // Stable: a fixed id always lands in the same slice.
        assert!(Shard { k: 0, n: 1 }.holds("i-0123456789abcdef0"));
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    /// The definition is SHA-256 of the id, its first 8 bytes big-endian, modulo N: journals and
    /// runs of other versions must agree on it, so these are fixed.
    #[test]
    fn the_assignment_is_pinned() {
        let shard_of = |id: &str, n: u32| (0..n).find(|&k| Shard { k, n }.holds(id)).unwrap();
        assert_eq!(shard_of("i-0123456789abcdef0", 4), 1);
        assert_eq!(shard_of("i-0a1b2c3d4e5f60718", 4), 0);
        assert_eq!(shard_of("ami-0abcdef1234567890", 4), 2);
    }

    #[test]
    fn from_the_array_job_environment() {
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            Shard::from_env(env(&[("AWS_BATCH_JOB_ARRAY_INDEX", "1"), ("PV2HVM_SHARDS", "4")])).unwrap(),
            Some(Shard { k: 1, n: 4 })
        );
        assert_eq!(
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "3"), ("PV2HVM_SHARDS", "4")])).unwrap(),
            Some(Shard { k: 3, n: 4 })
        );
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap_err().contains("PV2HVM_SHARDS"));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "4"), ("PV2HVM_SHARDS", "4")])).is_err());
        // N without K: refused, not the whole fleet.
        let e = Shard::from_env(env(&[("PV2HVM_SHARDS", "4")])).unwrap_err();
        assert!(e.contains("no shard index"), "{e}");
        let s = Shard { k: 1, n: 4 };
        assert!(s.check_count(env(&[])).is_ok());
        assert!(s.check_count(env(&[("PV2HVM_SHARDS", "4")])).is_ok());
        assert!(s.check_count(env(&[("PV2HVM_SHARDS", "3")])).is_err());
    }

    #[test]
    fn one_run_id_for_every_child() {
        assert_eq!(run_id_from_env(env(&[])), None);
        assert_eq!(
            run_id_from_env(env(&[("AWS_BATCH_JOB_ID", "7c1d2d7e-52c1-4a57-9d8a-0b5fd3b4a1e2:3")])).as_deref(),
            Some("7c1d2d7e-52c1-4a57-9d8a-0b5fd3b4a1e2")
        );
        assert_eq!(run_id_from_env(env(&[("AWS_BATCH_JOB_ID", "single-job")])).as_deref(), Some("single-job"));
        assert_eq!(
            run_id_from_env(env(&[("PV2HVM_RUN_ID", "f00d"), ("AWS_BATCH_JOB_ID", "abc:1")])).as_deref(),
            Some("f00d")
        );
        assert_eq!(run_id_from_env(env(&[("PV2HVM_RUN_ID", " ")])), None);
    }
}
