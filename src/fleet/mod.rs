//! Fleets: many PV sources, across regions, planned together and migrated in batches that
//! survive a crash, on one machine or sharded over an array job.
//!
//! - [`plan`]: one plan per source, streamed to a JSON file and a Markdown review;
//! - [`run`]: migrations with a global and a per-region limit, each recorded in a
//!   [`journal`] (SQLite), resuming from AWS tags after any crash;
//! - [`shard`]: stable, disjoint slices for array jobs (AWS Batch, Kubernetes);
//! - [`report`]: status and reports merged from any number of shard journals.
//!
//! Finding the fleet is [`crate::aws::discover`].

pub mod journal;
pub mod plan;
pub mod report;
pub mod run;
pub mod shard;

/// The exit codes of `fleet run` beyond pv2hvm's own (README, "Exit codes"), for an array job
/// engine to tell what to do with a child: AWS Batch `retryStrategy.evaluateOnExit` and a
/// Kubernetes `podFailurePolicy` map them (deploy/, tests/deploy_check.py checks).
pub mod exit {
    /// Some sources were refused (not convertible: retrying changes nothing) and none failed
    /// otherwise.
    pub const REFUSED: u8 = 9;
    /// Some sources failed for a reason a retry can fix (AWS, I/O, a host tool): run again.
    pub const RETRY: u8 = 10;
    /// Another `fleet run` holds the journal (two runs of one shard at once).
    pub const BUSY: u8 = 11;
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::aws::{Aws, AwsError, Connection};

/// One connection (runtime and clients) per region, made on first use and shared.
pub struct Regions {
    base: Connection,
    map: Mutex<HashMap<String, Arc<Aws>>>,
}

impl Regions {
    pub fn new(base: Connection) -> Regions {
        Regions { base, map: Mutex::new(HashMap::new()) }
    }

    /// The home region's connection: the one `base` resolves to.
    pub fn home(&self) -> Result<Arc<Aws>, AwsError> {
        let aws = Arc::new(Aws::connect(&self.base)?);
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Arc::clone(map.entry(aws.region.clone()).or_insert(aws)))
    }

    pub fn get(&self, region: &str) -> Result<Arc<Aws>, AwsError> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = map.get(region) {
            return Ok(Arc::clone(a));
        }
        let c = Connection { region: Some(region.to_string()), ..self.base.clone() };
        let aws = Arc::new(Aws::connect(&c)?);
        map.insert(region.to_string(), Arc::clone(&aws));
        Ok(aws)
    }
}

#[cfg(test)]
mod tests {
    use super::exit;
    use crate::ErrorKind;

    #[test]
    fn fleet_exit_codes_are_their_own_and_documented() {
        let kinds = ErrorKind::ALL;
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).chain([0, 2]).collect();
        let readme = include_str!("../../README.md");
        for c in [exit::REFUSED, exit::RETRY, exit::BUSY] {
            assert!(!codes.contains(&c), "exit code {c} is taken");
            assert!(readme.contains(&format!("| {c} | `fleet run`")), "README's table lacks exit code {c}");
            codes.push(c);
        }
    }
}
