//! `pv2hvm migrate` and `pv2hvm plan` against AWS: source snapshot → lazy EBS source → the
//! conversion engine → an incremental child snapshot (in place) or a full upload (mbr, gpt) →
//! RegisterImage → copies, replacement instance, temporary snapshots removed.
//!
//! Every resource carries the run's tags ([`super::tags`]); a finished AMI carries the source id
//! and the options hash, which is how a second run finds it and makes no duplicate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ebs::{self, ChildSnapshotSink, EbsSnapshotSource, NewSnapshot};
use super::ec2::{self, Mapping, SourceInfo};
use super::tags::{self, Role};
use super::{Aws, AwsError, ResourceKind};
use crate::convert::{self, Environment};
use crate::guest::playbook::Playbook;
use crate::io::{BlockSink, BlockSource, LocalFileSink};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::{ConvertSpec, LayoutKind};

const GIB: u64 = 1 << 30;
const WAIT: Duration = Duration::from_secs(6 * 3600);

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{source_id}: {reason}")]
    Refused { source_id: String, reason: String },
    #[error(transparent)]
    Convert(#[from] crate::Error),
    #[error("{0}")]
    Declined(String),
}

impl From<MigrateError> for crate::Error {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Aws(e) => crate::Error::Aws(e),
            MigrateError::Convert(e) => e,
            e @ (MigrateError::Refused { .. } | MigrateError::Declined(_)) => crate::Error::Refused(e.to_string()),
        }
    }
}

/// The choices of one migration.
pub struct MigrateOptions {
    pub source: String,
    pub spec: ConvertSpec,
    pub expected_plan: Option<Plan>,
    pub copy_to_regions: Vec<String>,
    pub name: Option<String>,
    pub stop: bool,
    pub launch: bool,
    pub instance_type: Option<String>,
    pub keep_temp: bool,
    pub work_dir: PathBuf,
    pub concurrency: usize,
    pub playbooks: Vec<Playbook>,
    pub grub_dir: Option<PathBuf>,
    pub run_id: String,
}

/// What a migration did (or found already done).
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub run_id: String,
    pub source: String,
    /// "migrated", "already-migrated" or "already-hvm".
    pub outcome: &'static str,
    pub image: Option<String>,
    pub region: String,
    pub copies: Vec<(String, String)>,
    pub instance: Option<String>,
    pub source_snapshot: Option<String>,
    pub root_snapshot: Option<String>,
    pub layout: Option<LayoutKind>,
    pub blocks_fetched: u64,
    pub blocks_uploaded: u64,
    pub delta_blocks: Option<u64>,
    pub temporary_deleted: Vec<String>,
    pub notes: Vec<String>,
    pub seconds: f64,
    pub plan: Option<Plan>,
}

/// The options that shape the result, hashed: the idempotency key with the source id.
pub fn spec_hash(spec: &ConvertSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    crate::util::sha256_hex(&json)[..16].to_string()
}

fn plan_hash(plan: &Plan) -> String {
    let json = serde_json::to_vec(plan).unwrap_or_default();
    crate::util::sha256_hex(&json)[..16].to_string()
}

/// Refusals that need no block of the volume, and the already-HVM case (`Ok(false)`).
pub fn preflight(src: &SourceInfo) -> Result<bool, MigrateError> {
    let refuse = |reason: String| Err(MigrateError::Refused { source_id: src.id.clone(), reason });
    if src.virtualization.as_deref() == Some("hvm") {
        return Ok(false);
    }
    if src.root_device_type.as_deref() == Some("instance-store") {
        return refuse("the root device is instance store: there is no EBS volume to snapshot".into());
    }
    if src.platform.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("windows")) {
        return refuse("Windows guests are not supported: pv2hvm converts Linux ext2/3/4 root volumes".into());
    }
    if let Some((code, _)) = src.product_codes.iter().find(|(_, t)| t == "marketplace") {
        return refuse(format!(
            "it carries the Marketplace product code {code}; a Marketplace image cannot be re-registered"
        ));
    }
    Ok(true)
}

/// Device names for the other volumes: PV partition names (`/dev/sda2`) are not valid HVM
/// devices, so they move to the next free `/dev/sdb`, `/dev/sdc`, …
pub fn hvm_device_names(devices: &[String]) -> Vec<(String, String)> {
    let is_partition = |d: &str| {
        (d.starts_with("/dev/sd") || d.starts_with("/dev/xvd")) && d.chars().last().is_some_and(|c| c.is_ascii_digit())
    };
    let mut used: Vec<String> = devices.iter().filter(|d| !is_partition(d)).cloned().collect();
    let mut next = b'b';
    devices
        .iter()
        .map(|d| {
            if !is_partition(d) {
                return (d.clone(), d.clone());
            }
            loop {
                let cand = format!("/dev/sd{}", next as char);
                next += 1;
                if !used.contains(&cand) && !used.contains(&cand.replace("/dev/sd", "/dev/xvd")) {
                    used.push(cand.clone());
                    return (d.clone(), cand);
                }
            }
        })
        .collect()
}

/// Which snapshot `plan` reads for a source, and what it says about it.
fn snapshot_for_plan(aws: &Aws, src: &SourceInfo) -> Result<(String, String), MigrateError> {
    if let Some(s) = &src.root_snapshot {
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
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if let Some(s) = snaps.last() {
        let age = (now - s.started).max(0);
        return Ok((
            s.id.clone(),
            format!("reads {}, the newest completed snapshot of {vol}, {} old", s.id, age_text(age)),
        ));
    }
    if let Some(img) = &src.image_id
        && let Ok(ami) = ec2::describe_source(aws, img)
        && let Some(s) = ami.root_snapshot
    {
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

/// The plan for an AWS source, made from a snapshot that already exists (or, with
/// `snapshot_now`, a fresh one, tagged temporary and deleted after planning). Reads only the
/// blocks inspection needs.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    aws: &Aws,
    id: &str,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    work_dir: &std::path::Path,
    concurrency: usize,
    snapshot_now: bool,
    run_id: &str,
) -> Result<Plan, MigrateError> {
    let src = ec2::describe_source(aws, id)?;
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
    let (mut plan, fetched) = planned?;
    plan.notes.push(how);
    plan.notes.push(format!("{fetched} block(s) of 512 KiB fetched to make this plan"));
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
fn plan_snapshot(
    aws: &Aws,
    id: &str,
    snap: &str,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    work_dir: &std::path::Path,
    concurrency: usize,
    wait: bool,
) -> Result<(Plan, u64), MigrateError> {
    if wait {
        ec2::wait_snapshot(aws, snap, WAIT)?;
    }
    let source = Arc::new(EbsSnapshotSource::open(aws, snap, work_dir, concurrency)?);
    let fetches = Arc::clone(&source.fetches);
    let plan = convert::plan_only(source, spec, playbooks, Some(format!("an HVM AMI of {id}")))?;
    Ok((plan, fetches.blocks()))
}

/// Runs one migration. `confirm` sees the plan before anything is written and may decline.
pub fn migrate(
    aws: &Aws,
    o: &MigrateOptions,
    progress: &dyn Progress,
    confirm: &dyn Fn(&Plan) -> bool,
) -> Result<MigrateReport, MigrateError> {
    let started = Instant::now();
    let src = ec2::describe_source(aws, &o.source)?;
    let mut report = MigrateReport {
        run_id: o.run_id.clone(),
        source: o.source.clone(),
        outcome: "migrated",
        image: None,
        region: aws.region.clone(),
        copies: Vec::new(),
        instance: None,
        source_snapshot: None,
        root_snapshot: None,
        layout: Some(o.spec.layout),
        blocks_fetched: 0,
        blocks_uploaded: 0,
        delta_blocks: None,
        temporary_deleted: Vec::new(),
        notes: Vec::new(),
        seconds: 0.0,
        plan: None,
    };
    if !preflight(&src)? {
        report.outcome = "already-hvm";
        report.layout = None;
        report.notes.push(format!("{} is already HVM, nothing to do", o.source));
        return Ok(report);
    }
    let hash = spec_hash(&o.spec);
    let done = ec2::find_images(
        aws,
        &aws.ec2,
        vec![
            ec2::tag_filter(tags::SOURCE, &o.source),
            ec2::tag_filter(tags::SPEC_HASH, &hash),
            ec2::tag_filter(tags::ROLE, "image"),
        ],
    )?;
    if let Some(img) = done.iter().find(|i| i.state == "available") {
        report.outcome = "already-migrated";
        report.image = Some(img.id.clone());
        report.run_id = tags::get(&img.tags, tags::RUN_ID).unwrap_or_default().to_string();
        report.notes.push(format!("{} was already migrated to {} with these options", o.source, img.id));
        return Ok(report);
    }
    if src.root_device_type.as_deref() != Some("ebs") && src.root_snapshot.is_none() {
        return Err(MigrateError::Refused { source_id: o.source.clone(), reason: "no EBS root device".into() });
    }

    // 1. The source snapshot.
    let temp = |role| tags::run_tags(&o.run_id, &o.source, role);
    let mut temporary = Vec::new();
    let mut data_snapshots: Vec<(String, String)> = Vec::new();
    let snap = match ResourceKind::of(&o.source) {
        Some(ResourceKind::Instance) => {
            let vol = src.root_volume.clone().ok_or_else(|| MigrateError::Refused {
                source_id: o.source.clone(),
                reason: "the instance has no EBS root volume attached".into(),
            })?;
            let was_running = src.state.as_deref() == Some("running");
            if o.stop && was_running {
                progress.note(&format!("stopping {}", o.source));
                ec2::stop_instance(aws, &o.source)?;
            } else if !o.stop {
                report
                    .notes
                    .push("the snapshot is crash-consistent (no --stop): the journal is replayed in the delta".into());
            }
            progress.note(&format!("snapshotting {vol}"));
            let s =
                ec2::create_snapshot(aws, &vol, &format!("pv2hvm: source of {}", o.source), &temp(Role::Temporary))?;
            temporary.push(s.clone());
            for (dev, v) in &src.other_volumes {
                let d = ec2::create_snapshot(aws, v, &format!("pv2hvm: {dev} of {}", o.source), &temp(Role::Data))?;
                data_snapshots.push((dev.clone(), d));
            }
            ec2::wait_snapshot(aws, &s, WAIT)?;
            for (_, d) in &data_snapshots {
                ec2::wait_snapshot(aws, d, WAIT)?;
            }
            if o.stop && was_running {
                ec2::start_instance(aws, &o.source)?;
            }
            s
        }
        _ => src.root_snapshot.clone().ok_or_else(|| MigrateError::Refused {
            source_id: o.source.clone(),
            reason: "the AMI has no EBS root snapshot".into(),
        })?,
    };
    report.source_snapshot = Some(snap.clone());
    // A failure from here on leaves nothing the run no longer needs: the snapshots taken only
    // for it go (what was written to AWS after them stays tagged for `cleanup --run-id`).
    let made: Vec<String> = temporary.iter().cloned().chain(data_snapshots.iter().map(|(_, s)| s.clone())).collect();
    let result = finish(aws, o, &src, &snap, &temporary, &data_snapshots, &hash, &mut report, progress, confirm);
    if let Err(e) = result {
        let mut r = report;
        cleanup_temporary(aws, &made, &mut r);
        return Err(e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Everything after the source snapshot: plan, convert, upload, register, copy, launch.
#[allow(clippy::too_many_arguments)]
fn finish(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    snap: &str,
    temporary: &[String],
    data_snapshots: &[(String, String)],
    hash: &str,
    report: &mut MigrateReport,
    progress: &dyn Progress,
    confirm: &dyn Fn(&Plan) -> bool,
) -> Result<(), MigrateError> {
    let temp = |role| tags::run_tags(&o.run_id, &o.source, role);
    let snap_info = ec2::describe_snapshot(aws, snap)?;

    // 2. Plan, confirm, convert.
    let ebs_source = Arc::new(EbsSnapshotSource::open(aws, snap, &o.work_dir, o.concurrency)?);
    let fetches = Arc::clone(&ebs_source.fetches);
    let source: Arc<dyn BlockSource> = ebs_source.clone();
    let plan =
        convert::plan_only(Arc::clone(&source), &o.spec, &o.playbooks, Some(format!("an HVM AMI of {}", o.source)))?;
    if let Some(saved) = &o.expected_plan {
        crate::plan::saved::check(saved, &plan)?;
    }
    if !confirm(&plan) {
        return Err(MigrateError::Declined("not confirmed: nothing was registered".into()));
    }
    let env = Environment {
        grub_dir: o.grub_dir.clone(),
        work_dir: o.work_dir.clone(),
        playbooks: o.playbooks.clone(),
        expected_plan: None,
        boot_check: None,
    };
    let size_gib = (o.spec.disk_size(source.len()).div_ceil(GIB) as i64).max(snap_info.size_gib as i64);
    let mut root_tags = temp(Role::Root);
    root_tags.push((tags::SPEC_HASH.into(), hash.to_string()));
    let new = NewSnapshot {
        parent: None,
        encrypt: snap_info.encrypted.then(|| snap_info.kms_key_id.clone()),
        size_gib,
        description: format!("pv2hvm: HVM root of {}", o.source),
        tags: root_tags,
        client_token: format!("pv2hvm-{}", &o.run_id),
    };
    let uploads;
    let converted;
    let root = if o.spec.layout == LayoutKind::InPlace {
        let new = NewSnapshot { parent: Some(snap.to_string()), encrypt: None, ..new };
        let sink = ChildSnapshotSink::new(aws, Arc::clone(&source), new, o.concurrency);
        uploads = Arc::clone(&sink.uploads);
        let result = Arc::clone(&sink.result);
        converted = convert::convert(Arc::clone(&source), Box::new(sink), &o.spec, &env, progress)?;
        let id = result.lock().ok().and_then(|r| r.clone());
        id.ok_or_else(|| AwsError::Other("the child snapshot was not written".into()))?
    } else {
        // Every allocated block comes down into a sparse staging image; the whole disk goes up.
        let need = ebs_source.stored_blocks() as u64 * ebs::BLOCK * 2;
        let free = crate::util::free_space(&o.work_dir).unwrap_or(u64::MAX);
        if free < need {
            return Err(MigrateError::Refused {
                source_id: o.source.clone(),
                reason: format!(
                    "--layout {:?} needs {} MiB free in {} (found {} MiB)",
                    o.spec.layout,
                    need >> 20,
                    o.work_dir.display(),
                    free >> 20
                ),
            });
        }
        progress.note("downloading every allocated block of the source");
        source
            .prefetch(&source.data_ranges().map_err(|e| AwsError::Other(e.to_string()))?)
            .map_err(|e| AwsError::Other(e.to_string()))?;
        let staged = o.work_dir.join(format!("pv2hvm-{}.img", o.run_id));
        let disk_size = o.spec.disk_size(source.len());
        let sink = LocalFileSink::create(&staged, disk_size)
            .map_err(|e| AwsError::Other(format!("creating {}: {e}", staged.display())))?;
        let sink: Box<dyn BlockSink> = Box::new(sink);
        converted = convert::convert(Arc::clone(&source), sink, &o.spec, &env, progress)?;
        progress.note("uploading the converted disk");
        let t = Arc::new(ebs::Transfer::default());
        let new = NewSnapshot { size_gib: disk_size.div_ceil(GIB) as i64, ..new };
        let id = ebs::upload_image(aws, &staged, &new, o.concurrency, &t);
        let _ = std::fs::remove_file(&staged);
        uploads = t;
        id?
    };
    report.root_snapshot = Some(root.clone());
    report.delta_blocks = converted.delta.as_ref().map(|d| d.changed_blocks);
    ec2::wait_snapshot(aws, &root, WAIT)?;
    report.blocks_fetched = fetches.blocks();
    report.blocks_uploaded = uploads.blocks();

    // 3. Register. An instance keeps its AMI's instance-store (ephemeral, swap) mappings.
    let mut other_mappings = src.other_mappings.clone();
    if let Some(img) = &src.image_id
        && let Ok(launched_from) = ec2::describe_source(aws, img)
    {
        other_mappings.extend(launched_from.other_mappings.into_iter().filter(|m| m.virtual_name.is_some()));
    }
    let mut others: Vec<Mapping> = Vec::new();
    let devices: Vec<String> =
        data_snapshots.iter().map(|(d, _)| d.clone()).chain(other_mappings.iter().map(|m| m.device.clone())).collect();
    let renamed = hvm_device_names(&devices);
    for ((old, new_dev), i) in renamed.iter().zip(0..) {
        if old != new_dev {
            report.notes.push(format!("{old} is a PV partition name: mapped to {new_dev}; its fstab line gets nofail"));
        }
        if let Some((_, s)) = data_snapshots.get(i) {
            others.push(Mapping {
                device: new_dev.clone(),
                snapshot: Some(s.clone()),
                virtual_name: None,
                size_gib: None,
                volume_type: Some("gp3".into()),
                delete_on_termination: true,
            });
        } else if let Some(m) = other_mappings.get(i - data_snapshots.len()) {
            others.push(Mapping { device: new_dev.clone(), ..m.clone() });
        }
    }
    let mut image_tags = src.tags.clone();
    image_tags.extend(temp(Role::Image));
    image_tags.push((tags::SPEC_HASH.into(), hash.to_string()));
    image_tags.push((tags::PLAN_HASH.into(), plan_hash(&converted.plan)));
    image_tags.push((tags::LAYOUT.into(), format!("{:?}", o.spec.layout).to_lowercase()));
    let base =
        o.name.clone().unwrap_or_else(|| format!("{}-hvm", src.name.clone().unwrap_or_else(|| o.source.clone())));
    let name = if o.name.is_some() { base } else { format!("{base}-{}", &o.run_id[..8.min(o.run_id.len())]) };
    let reg = ec2::Registration {
        name: name.clone(),
        description: src.description.clone().unwrap_or_else(|| format!("HVM migration of {} by pv2hvm", o.source)),
        architecture: converted.plan.ami.architecture.clone(),
        root_snapshot: root.clone(),
        root_size_gib: size_gib as i32,
        other: others,
        ena: converted.plan.ami.ena_support,
        sriov: converted.plan.ami.sriov_net_support.is_some(),
        tags: image_tags.clone(),
    };
    progress.note("registering the HVM AMI");
    let image = ec2::register_image(aws, &reg)?;
    report.image = Some(image.clone());
    ec2::wait_image(aws, &aws.ec2, &image, WAIT)?;

    // 4. Copies and the replacement instance.
    for region in &o.copy_to_regions {
        progress.note(&format!("copying {image} to {region}"));
        let token = format!("pv2hvm-{}-{region}", o.run_id);
        let id = ec2::copy_image(aws, &image, &name, region, &token, &image_tags)?;
        report.copies.push((region.clone(), id));
    }
    if o.launch {
        let nitro = converted.plan.target.nitro();
        let ty = o
            .instance_type
            .clone()
            .filter(|t| t != "auto")
            .unwrap_or_else(|| ec2::replacement_type(src.instance_type.as_deref().unwrap_or("m1.large"), nitro));
        let mut t = src.tags.clone();
        t.extend(temp(Role::Instance));
        let id = ec2::launch(aws, src, &image, &ty, &format!("pv2hvm-{}-launch", o.run_id), &t)?;
        report.notes.push(format!("{id} ({ty}) launched from {image} and left stopped"));
        report.instance = Some(id);
    }

    // 5. Temporary snapshots.
    if o.keep_temp {
        report.notes.push(format!("kept the temporary snapshot(s) {} (--keep-temp)", temporary.join(", ")));
    } else {
        cleanup_temporary(aws, temporary, report);
    }
    report.blocks_fetched = fetches.blocks();
    report.plan = Some(converted.plan);
    Ok(())
}

fn cleanup_temporary(aws: &Aws, temporary: &[String], report: &mut MigrateReport) {
    for s in temporary {
        match ec2::delete_snapshot(aws, s) {
            Ok(()) => report.temporary_deleted.push(s.clone()),
            Err(e) => report.notes.push(format!("could not delete the temporary {s}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_partition_names_move_to_whole_disk_names() {
        let got = hvm_device_names(&["/dev/sda2".into(), "/dev/sda3".into(), "/dev/sdb".into(), "/dev/xvdf".into()]);
        assert_eq!(
            got,
            vec![
                ("/dev/sda2".into(), "/dev/sdc".into()),
                ("/dev/sda3".into(), "/dev/sdd".into()),
                ("/dev/sdb".into(), "/dev/sdb".into()),
                ("/dev/xvdf".into(), "/dev/xvdf".into()),
            ]
        );
    }

    #[test]
    fn preflight_refuses_what_cannot_be_migrated() {
        let base = SourceInfo {
            id: "i-1".into(),
            virtualization: Some("paravirtual".into()),
            root_device_type: Some("ebs".into()),
            ..SourceInfo::default()
        };
        assert!(preflight(&base).unwrap());
        let hvm = SourceInfo { virtualization: Some("hvm".into()), ..base.clone() };
        assert!(!preflight(&hvm).unwrap());
        for (bad, words) in [
            (SourceInfo { root_device_type: Some("instance-store".into()), ..base.clone() }, "instance store"),
            (SourceInfo { platform: Some("windows".into()), ..base.clone() }, "Windows"),
            (SourceInfo { product_codes: vec![("abc".into(), "marketplace".into())], ..base.clone() }, "Marketplace"),
        ] {
            let e = preflight(&bad).unwrap_err().to_string();
            assert!(e.contains(words) && e.starts_with("i-1: "), "{e}");
        }
    }
}
