//! The snapshot a migration reads and builds its child on, made usable first where AWS would
//! refuse it: the EBS direct APIs read no public snapshot and take no other account's as a
//! parent, and with EBS encryption by default on, StartSnapshot refuses an unencrypted
//! `ParentSnapshotId` (EBS user guide, "Use encryption with EBS direct APIs"). In each case the
//! source is copied into the account (encrypted when the account or `--kms-key-id` asks),
//! tagged temporary with the run id, and the copy is read and used as the parent; it is
//! removed at the end like every temporary snapshot.

use super::{Made, MigrateError, MigrateOptions, MigrateReport, Observer, WAIT};
use crate::aws::Aws;
use crate::aws::ec2::{self, SnapshotCopy, SnapshotInfo};
use crate::aws::tags::{self, Role};
use crate::spec::LayoutKind;

/// Why `snap` cannot be used as it is, if it cannot; `by_default` is whether the account
/// encrypts new snapshots by default.
fn why_copy(
    o: &MigrateOptions,
    aws: &Aws,
    snap: &SnapshotInfo,
    by_default: bool,
) -> Result<Option<String>, MigrateError> {
    if let Some(why) = ec2::foreign_or_public(aws, snap)? {
        return Ok(Some(format!("{why}: the EBS direct APIs cannot read it or build on it")));
    }
    if o.spec.layout == LayoutKind::InPlace && !snap.encrypted && by_default {
        return Ok(Some(format!(
            "EBS encryption by default is on in {} and {} is unencrypted: a child of it would be refused",
            aws.region, snap.id
        )));
    }
    if o.spec.layout == LayoutKind::InPlace && o.kms_key_id.is_some() && snap.kms_key_id != o.kms_key_id {
        return Ok(Some(format!("--kms-key-id asks for another key than {}'s", snap.id)));
    }
    Ok(None)
}

/// `snap` itself, or a completed copy of it in this account that the EBS direct APIs can read
/// and build on.
pub fn usable(
    aws: &Aws,
    o: &MigrateOptions,
    snap: SnapshotInfo,
    hash: &str,
    report: &mut MigrateReport,
    made: &mut Made,
    obs: &dyn Observer,
) -> Result<SnapshotInfo, MigrateError> {
    let by_default = ec2::encryption_by_default(aws)?;
    let Some(why) = why_copy(o, aws, &snap, by_default)? else { return Ok(snap) };
    let encrypt = snap.encrypted || o.kms_key_id.is_some() || by_default;
    obs.progress().note(&format!("copying {} into the account ({why})", snap.id));
    let copy = ec2::copy_snapshot(
        aws,
        &SnapshotCopy {
            source: &snap.id,
            description: format!("pv2hvm: copy of {} to migrate {}", snap.id, o.source),
            encrypt,
            kms_key_id: o.kms_key_id.clone(),
            tags: tags::work_tags(&o.run_id, &o.source, Role::Temporary, hash),
        },
    )?;
    made.snapshots.push(copy.clone());
    obs.created("snapshot", &copy, &aws.region, Role::Temporary);
    let done = ec2::wait_snapshot(aws, &copy, WAIT)?;
    report.notes.push(format!(
        "copied {} to the temporary {copy}{} because {why}; the new snapshot builds on the copy",
        snap.id,
        if encrypt { " (encrypted)" } else { "" }
    ));
    Ok(done)
}
