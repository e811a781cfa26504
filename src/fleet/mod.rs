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
