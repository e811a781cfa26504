//! What earlier runs left for a source, found by tags alone (no local state): the finished AMI,
//! a completed root snapshot to register, a temporary source snapshot to read again, and what
//! is stale. This is how a run killed at any point, resumed on any machine, goes on from its
//! last completed stage and makes nothing twice.

use aws_sdk_ec2::types::Filter;

use crate::aws::ec2::{self, ImageInfo, SnapshotInfo, tag_filter};
use crate::aws::tags::{self, Role};
use crate::aws::{Aws, AwsError};

/// A temporary snapshot older than this is not read again: it is removed and a fresh one taken.
pub const TEMPORARY_REUSE_SECS: i64 = 24 * 3600;

/// The resources of one source and options hash that earlier runs made.
#[derive(Debug, Default)]
pub struct Found {
    /// The AMI (available or pending).
    pub image: Option<ImageInfo>,
    /// A completed root snapshot.
    pub root: Option<SnapshotInfo>,
    /// A pending or completed temporary source snapshot young enough to read.
    pub temporary: Option<SnapshotInfo>,
    /// Data snapshots made with that temporary one (same run): (device, snapshot).
    pub data: Vec<(String, String)>,
    /// Everything else of theirs: root snapshots never completed, old temporaries.
    pub stale: Vec<String>,
}

fn by(source: &str, hash: &str) -> Vec<Filter> {
    vec![tag_filter(tags::SOURCE, source), tag_filter(tags::SPEC_HASH, hash)]
}

/// The snapshots of `source` made with options `hash` (every role).
pub fn snapshots(aws: &Aws, source: &str, hash: &str) -> Result<Vec<SnapshotInfo>, AwsError> {
    ec2::find_snapshots(aws, by(source, hash))
}

/// Looks up what is left for `source` with options `hash`.
pub fn look(aws: &Aws, source: &str, hash: &str) -> Result<Found, AwsError> {
    let mut found = Found::default();
    let mut filters = by(source, hash);
    filters.push(tag_filter(tags::ROLE, Role::Image.as_str()));
    let images = ec2::find_images(aws, &aws.ec2, filters)?;
    found.image = images
        .iter()
        .find(|i| i.state == "available")
        .or_else(|| images.iter().find(|i| i.state == "pending"))
        .cloned();
    let role = |s: &SnapshotInfo| tags::get(&s.tags, tags::ROLE).unwrap_or_default().to_string();
    let mut snaps = snapshots(aws, source, hash)?;
    snaps.sort_by_key(|s| std::cmp::Reverse(s.started));
    let now = tags::now_secs();
    for s in &snaps {
        match role(s).as_str() {
            "root" if s.state == "completed" && found.root.is_none() => found.root = Some(s.clone()),
            "temporary"
                if s.state != "error" && now - s.started < TEMPORARY_REUSE_SECS && found.temporary.is_none() =>
            {
                found.temporary = Some(s.clone())
            }
            _ => {}
        }
    }
    let run_of = |s: &SnapshotInfo| tags::get(&s.tags, tags::RUN_ID).map(str::to_string);
    let keep_run = found.root.as_ref().or(found.temporary.as_ref()).and_then(run_of);
    for s in &snaps {
        let r = role(s);
        let in_use = found.root.as_ref().is_some_and(|x| x.id == s.id)
            || found.temporary.as_ref().is_some_and(|x| x.id == s.id)
            || found.image.as_ref().is_some_and(|i| i.snapshots.contains(&s.id));
        if in_use {
            continue;
        }
        if r == "data" && s.state != "error" && keep_run.is_some() && run_of(s) == keep_run {
            if let Some(dev) = tags::get(&s.tags, tags::DEVICE) {
                found.data.push((dev.to_string(), s.id.clone()));
            }
            continue;
        }
        // A root that never completed, or one a finished AMI does not use; an old or failed
        // temporary; data snapshots of another run. Kept ones are not tagged with this role.
        if matches!(r.as_str(), "root" | "temporary" | "data") && found.image.is_none() {
            found.stale.push(s.id.clone());
        }
    }
    found.data.sort();
    Ok(found)
}

/// Snapshots of `source`/`hash` that `image` does not use and no run needs any more, once the
/// AMI exists: leftovers of runs that died, and this run's temporaries.
pub fn leftovers(aws: &Aws, source: &str, hash: &str, image: &ImageInfo) -> Result<Vec<SnapshotInfo>, AwsError> {
    Ok(snapshots(aws, source, hash)?
        .into_iter()
        .filter(|s| !image.snapshots.contains(&s.id))
        .filter(|s| matches!(tags::get(&s.tags, tags::ROLE), Some("root" | "temporary" | "data")))
        .collect())
}
