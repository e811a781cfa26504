//! `pv2hvm cleanup`: removes what a run made, found by its `pv2hvm:run-id` tag, so it works
//! from any machine: replacement instances are terminated, then in the home region and every
//! region asked the AMIs (and copies) are deregistered and the snapshots deleted, the ones
//! CopyImage made behind the copies included. `--all-stale` removes temporary snapshots older
//! than a threshold, whatever run made them.

use serde::Serialize;

use super::ec2::{self, tag_filter};
use super::tags::{self, Role};
use super::{Aws, AwsError};

/// What cleanup removes.
pub enum Selection {
    Run(String),
    /// Temporary snapshots started more than this many seconds ago.
    StaleTemporary(u64),
}

#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    pub instances: Vec<String>,
    /// (region, AMI id)
    pub images: Vec<(String, String)>,
    /// (region, snapshot id)
    pub snapshots: Vec<(String, String)>,
}

impl CleanupReport {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.images.is_empty() && self.snapshots.is_empty()
    }
}

/// Finds (and unless `dry_run`, removes) what `sel` names, in the home region and `regions`.
pub fn cleanup(aws: &Aws, sel: &Selection, regions: &[String], dry_run: bool) -> Result<CleanupReport, AwsError> {
    let mut report = CleanupReport::default();
    let mut home = vec![aws.region.clone()];
    home.extend(regions.iter().filter(|r| **r != aws.region).cloned());
    match sel {
        Selection::Run(run) => {
            let by_run = || vec![tag_filter(tags::RUN_ID, run)];
            report.instances = ec2::find_instances(aws, by_run())?.into_iter().map(|(id, _)| id).collect();
            if !dry_run && !report.instances.is_empty() {
                aws.block_on(aws.ec2.terminate_instances().set_instance_ids(Some(report.instances.clone())).send())
                    .map_err(|e| AwsError::call("terminating the run's instances", e))?;
            }
            // A snapshot behind an AMI cannot be deleted: each region's AMIs go first.
            for region in &home {
                let client = aws.ec2_in(region);
                for img in ec2::find_images(aws, &client, by_run())? {
                    if !dry_run {
                        ec2::deregister_image(aws, &client, &img.id)?;
                    }
                    report.images.push((region.clone(), img.id));
                }
                for s in ec2::find_snapshots_in(aws, &client, by_run())? {
                    if !dry_run {
                        ec2::delete_snapshot_in(aws, &client, &s.id)?;
                    }
                    report.snapshots.push((region.clone(), s.id));
                }
            }
        }
        Selection::StaleTemporary(age) => {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            for region in &home {
                let client = aws.ec2_in(region);
                for s in ec2::find_snapshots_in(aws, &client, vec![tag_filter(tags::ROLE, Role::Temporary.as_str())])? {
                    if now - s.started < *age as i64 {
                        continue;
                    }
                    if !dry_run {
                        ec2::delete_snapshot_in(aws, &client, &s.id)?;
                    }
                    report.snapshots.push((region.clone(), s.id));
                }
            }
        }
    }
    Ok(report)
}
