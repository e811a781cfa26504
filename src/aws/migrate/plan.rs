//! `pv2hvm plan` of an instance, AMI or snapshot: the plan is made from a snapshot that already
//! exists (the newest completed one of the root volume, else the AMI's), or with
//! `--snapshot-now` from a fresh one deleted after planning. Only the blocks inspection needs
//! are fetched.

use std::path::Path;
use std::sync::Arc;

use super::{MigrateError, WAIT, preflight};
use crate::aws::Aws;
use crate::aws::ebs::EbsSnapshotSource;
use crate::aws::ec2::{self, SourceInfo};
use crate::aws::tags::{self, Role};
use crate::convert;
use crate::guest::playbook::Playbook;
use crate::plan::Plan;
use crate::spec::ConvertSpec;

/// A plan and what making it cost.
pub struct Planned {
    pub plan: Plan,
    /// The snapshot read.
    pub snapshot: String,
    /// 512 KiB blocks fetched from it.
    pub blocks_fetched: u64,
    /// Blocks the snapshot stores (what --layout mbr/gpt would move).
    pub stored_blocks: u64,
}

/// Which snapshot `plan` reads for a source, and what it says about it.
fn snapshot_for_plan(aws: &Aws, src: &SourceInfo) -> Result<(String, String), MigrateError> {
    // A plan creates nothing, so it cannot copy what the EBS direct APIs cannot read.
    let readable = |s: &str, fix: &str| -> Result<(), MigrateError> {
        let info = ec2::describe_snapshot(aws, s)?;
        match ec2::foreign_or_public(aws, &info)? {
            Some(why) => Err(MigrateError::Refused {
                source_id: src.id.clone(),
                reason: format!("{why}, and the EBS direct APIs cannot read it: {fix}"),
            }),
            None => Ok(()),
        }
    };
    if let Some(s) = &src.root_snapshot {
        readable(s, "`pv2hvm migrate` copies it into the account first; a plan creates nothing")?;
        return Ok((s.clone(), format!("reads {s}, the root snapshot of {}", src.id)));
    }
    let vol = src.root_volume.as_deref().ok_or_else(|| MigrateError::Refused {
        source_id: src.id.clone(),
        reason: "the instance has no EBS root volume".into(),
    })?;
    let mut snaps =
        ec2::find_snapshots(aws, vec![aws_sdk_ec2::types::Filter::builder().name("volume-id").values(vol).build()])?;
    snaps.retain(|s| s.state == "completed");
    snaps.sort_by_key(|s| s.started);
    if let Some(s) = snaps.last() {
        let age = (crate::aws::tags::now_secs() - s.started).max(0);
        return Ok((
            s.id.clone(),
            format!("reads {}, the newest completed snapshot of {vol}, {} old", s.id, age_text(age)),
        ));
    }
    if let Some(img) = &src.image_id
        && let Ok(ami) = ec2::describe_source(aws, img)
        && let Some(s) = ami.root_snapshot
    {
        readable(&s, "pass --snapshot-now to plan from a fresh snapshot of the volume")?;
        return Ok((
            s.clone(),
            format!(
                "reads {s}, the root snapshot of {img} the instance was launched from: {vol} has no snapshot (pass --snapshot-now for a fresh one)"
            ),
        ));
    }
    Err(MigrateError::Refused {
        source_id: src.id.clone(),
        reason: format!("{vol} has no completed snapshot and the instance's AMI has none; pass --snapshot-now"),
    })
}

fn age_text(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The plan for an AWS source. `src` is its description when the caller already has it.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    aws: &Aws,
    id: &str,
    src: Option<SourceInfo>,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    work_dir: &Path,
    concurrency: usize,
    snapshot_now: bool,
    run_id: &str,
) -> Result<Planned, MigrateError> {
    let src = match src {
        Some(s) => s,
        None => ec2::describe_source(aws, id)?,
    };
    if !preflight(&src)? {
        return Err(MigrateError::Refused { source_id: id.into(), reason: "already HVM, nothing to do".into() });
    }
    let (snap, how, fresh) = match (snapshot_now, &src.root_volume) {
        (true, Some(vol)) => {
            let s = ec2::create_snapshot(
                aws,
                vol,
                &format!("pv2hvm plan of {id}"),
                &tags::run_tags(run_id, id, Role::Temporary),
            )?;
            let how = format!("reads {s}, taken now of {vol} and deleted after planning");
            (s.clone(), how, Some(s))
        }
        _ => {
            let (s, how) = snapshot_for_plan(aws, &src)?;
            (s, how, None)
        }
    };
    let planned = plan_snapshot(aws, id, &snap, spec, playbooks, work_dir, concurrency, fresh.is_some());
    // A snapshot taken for the plan is only read: it goes, whatever the plan said.
    if let Some(s) = &fresh
        && let Err(e) = ec2::delete_snapshot(aws, s)
    {
        tracing::warn!(snapshot = %s, error = %e, "could not delete the snapshot taken for the plan");
    }
    let mut planned = planned?;
    planned.plan.notes.push(how);
    planned.plan.notes.push(format!("{} block(s) of 512 KiB fetched to make this plan", planned.blocks_fetched));
    planned.plan.source_reads.blocks_fetched = Some(planned.blocks_fetched);
    Ok(planned)
}

#[allow(clippy::too_many_arguments)]
fn plan_snapshot(
    aws: &Aws,
    id: &str,
    snap: &str,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    work_dir: &Path,
    concurrency: usize,
    wait: bool,
) -> Result<Planned, MigrateError> {
    if wait {
        ec2::wait_snapshot(aws, snap, WAIT)?;
    }
    let source = Arc::new(EbsSnapshotSource::open(aws, snap, work_dir, concurrency)?);
    let fetches = Arc::clone(&source.fetches);
    let mut plan = convert::plan_only(source.clone(), spec, playbooks, Some(format!("an HVM AMI of {id}")))
        .map_err(MigrateError::Convert)?;
    // Nothing is converted from this plan in this process: what it unpacked can go now.
    plan.forget_unpacked();
    Ok(Planned {
        plan,
        snapshot: snap.to_string(),
        blocks_fetched: fetches.blocks(),
        stored_blocks: source.stored_blocks() as u64,
    })
}
