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
    /// `PV2HVM_SHARDS` (or a bad value) is an error: guessing N would drop or repeat work.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, String> {
        let Some((var, k)) = INDEX_VARS.iter().find_map(|v| get(v).map(|k| (*v, k))) else {
            return Ok(None);
        };
        let n =
            get(COUNT_VAR).ok_or_else(|| format!("{var}={k} is set but {COUNT_VAR} (the number of shards) is not"))?;
        format!("{}/{}", k.trim(), n.trim()).parse().map(Some).map_err(|e| format!("{var} and {COUNT_VAR}: {e}"))
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

    #[test]
    fn from_the_array_job_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
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
    }
}
