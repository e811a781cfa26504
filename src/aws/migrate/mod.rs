//! `pv2hvm migrate` and `pv2hvm plan` against AWS, as stages: source snapshot → lazy EBS
//! source and plan → the conversion engine → an incremental child snapshot (in place) or a full
//! upload (mbr, gpt) → RegisterImage → copies and the replacement instance → cleanup.
//!
//! Every resource carries the run's tags ([`crate::aws::tags`]) and the source and options
//! hash, which are the state of record: a run killed at any point and started again (on any
//! machine, under any run id) finds what was made ([`resume`]) and goes on from the last
//! completed stage. A [`Observer`] hears of each stage and each resource made.

mod copies;
mod parent;
mod plan;
mod register;
pub mod resume;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use plan::{Planned, plan};
pub use register::{RootSnapshot, hvm_device_names};

use super::ebs::{self, ChildSnapshotSink, EbsSnapshotSource, NewSnapshot, Transfer};
use super::ec2::{self, SourceInfo};
use super::tags::{self, Role};
use super::{Aws, AwsError, ResourceKind};
use crate::convert::{self, Environment};
use crate::guest::playbook::Playbook;
use crate::io::{BlockSink, BlockSource, LocalFileSink};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::{ConvertSpec, LayoutKind};

const GIB: u64 = 1 << 30;
pub(crate) const WAIT: Duration = Duration::from_secs(6 * 3600);

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

/// The stages of one migration, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Snapshot,
    Read,
    Convert,
    Upload,
    Register,
    Copy,
    Launch,
    Cleanup,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Snapshot,
        Stage::Read,
        Stage::Convert,
        Stage::Upload,
        Stage::Register,
        Stage::Copy,
        Stage::Launch,
        Stage::Cleanup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Snapshot => "snapshot",
            Stage::Read => "read",
            Stage::Convert => "convert",
            Stage::Upload => "upload",
            Stage::Register => "register",
            Stage::Copy => "copy",
            Stage::Launch => "launch",
            Stage::Cleanup => "cleanup",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Hears what a migration does: the engine's progress, each stage begun and done, each AWS
/// resource made, and the block counters. Every progress drawer is one (hearing progress only).
pub trait Observer: Sync {
    fn progress(&self) -> &dyn Progress;
    fn stage_started(&self, _stage: Stage) {}
    /// `detail` says what the stage made or found ("snap-…", "reused snap-…").
    fn stage_done(&self, _stage: Stage, _detail: &str) {}
    /// A resource was made: `kind` is snapshot, image or instance.
    fn created(&self, _kind: &str, _id: &str, _region: &str, _role: Role) {}
    /// The counters of blocks fetched and uploaded (again when a new one takes over).
    fn transfers(&self, _fetched: &Arc<Transfer>, _uploaded: &Arc<Transfer>) {}
}

impl<P: Progress> Observer for P {
    fn progress(&self) -> &dyn Progress {
        self
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
    /// The KMS key for the new snapshots when they are encrypted (`--kms-key-id`); else the
    /// source's key, or the account's default key.
    pub kms_key_id: Option<String>,
    /// The KMS key of the copy in each region (`--copy-kms-key-id REGION=KEY`): (region, key).
    pub copy_kms_keys: Vec<(String, String)>,
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
    /// "migrated", "resumed" (earlier runs' work was reused), "already-migrated" or
    /// "already-hvm".
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
    /// What earlier runs made that this one used.
    pub reused: Vec<String>,
    pub temporary_deleted: Vec<String>,
    pub notes: Vec<String>,
    pub seconds: f64,
    /// How long each stage this run went through took, in order.
    pub stages: Vec<StageTime>,
    pub plan: Option<Plan>,
}

/// The wall time of one stage.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StageTime {
    pub stage: Stage,
    pub seconds: f64,
}

/// Passes everything on to `inner` and notes when each stage started and how long it took.
struct Timed<'a> {
    inner: &'a dyn Observer,
    started: std::sync::Mutex<Vec<(Stage, Instant)>>,
    done: std::sync::Mutex<Vec<StageTime>>,
}

impl Observer for Timed<'_> {
    fn progress(&self) -> &dyn Progress {
        self.inner.progress()
    }
    fn stage_started(&self, stage: Stage) {
        if let Ok(mut s) = self.started.lock() {
            s.push((stage, Instant::now()));
        }
        self.inner.stage_started(stage);
    }
    fn stage_done(&self, stage: Stage, detail: &str) {
        let began = self.started.lock().ok().and_then(|s| s.iter().rev().find(|(st, _)| *st == stage).map(|x| x.1));
        if let (Some(began), Ok(mut done)) = (began, self.done.lock()) {
            done.push(StageTime { stage, seconds: began.elapsed().as_secs_f64() });
        }
        self.inner.stage_done(stage, detail);
    }
    fn created(&self, kind: &str, id: &str, region: &str, role: Role) {
        self.inner.created(kind, id, region, role);
    }
    fn transfers(&self, fetched: &Arc<Transfer>, uploaded: &Arc<Transfer>) {
        self.inner.transfers(fetched, uploaded);
    }
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

/// Snapshots this call made, removed again when it fails before an AMI uses them.
#[derive(Default)]
struct Made {
    snapshots: Vec<String>,
    image: bool,
}

/// Runs one migration, or the rest of one an earlier run left unfinished. `confirm` sees the
/// plan before anything is written and may decline.
pub fn migrate(
    aws: &Aws,
    o: &MigrateOptions,
    obs: &dyn Observer,
    confirm: &dyn Fn(&Plan) -> bool,
) -> Result<MigrateReport, MigrateError> {
    let started = Instant::now();
    if let Some(n) = &o.name
        && !tags::valid_ami_name(n)
    {
        return Err(MigrateError::Refused {
            source_id: o.source.clone(),
            reason: format!(
                "--name {n:?} is not an AMI name EC2 takes: 3 to 128 letters, digits, spaces and ( ) [ ] . / - ' @ _"
            ),
        });
    }
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
        reused: Vec::new(),
        temporary_deleted: Vec::new(),
        notes: Vec::new(),
        seconds: 0.0,
        stages: Vec::new(),
        plan: None,
    };
    if !preflight(&src)? {
        report.outcome = "already-hvm";
        report.layout = None;
        report.notes.push(format!("{} is already HVM, nothing to do", o.source));
        return Ok(report);
    }
    let hash = spec_hash(&o.spec);
    let mut made = Made::default();
    let timed = Timed { inner: obs, started: Default::default(), done: Default::default() };
    let result = stages(aws, o, &src, &hash, &mut report, &mut made, &timed, confirm);
    report.stages = timed.done.into_inner().unwrap_or_default();
    if let Err(e) = result {
        // What this call made goes unless an AMI uses it; what it made after that stays tagged
        // for `cleanup --run-id` and is found again by the next run.
        if !made.image {
            for s in &made.snapshots {
                match ec2::delete_snapshot(aws, s) {
                    Ok(()) => report.temporary_deleted.push(s.clone()),
                    Err(err) => tracing::warn!(snapshot = %s, error = %err, "could not delete"),
                }
            }
        }
        return Err(e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn stages(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    hash: &str,
    report: &mut MigrateReport,
    made: &mut Made,
    obs: &dyn Observer,
    confirm: &dyn Fn(&Plan) -> bool,
) -> Result<(), MigrateError> {
    let found = resume::look(aws, &o.source, hash)?;
    let image = match &found.image {
        Some(img) => {
            if img.state != "available" {
                ec2::wait_image(aws, &aws.ec2, &img.id, WAIT)?;
            }
            report.outcome = "already-migrated";
            report.image = Some(img.id.clone());
            report.run_id = tags::get(&img.tags, tags::RUN_ID).unwrap_or_default().to_string();
            report.root_snapshot = img.snapshots.first().cloned();
            report.notes.push(format!("{} was already migrated to {} with these options", o.source, img.id));
            obs.stage_done(Stage::Register, &format!("{} (found)", img.id));
            img.clone()
        }
        None => {
            for s in &found.stale {
                match ec2::delete_snapshot(aws, s) {
                    Ok(()) => report.notes.push(format!("removed {s}, left unfinished by an earlier run")),
                    Err(e) => tracing::warn!(snapshot = %s, error = %e, "could not delete a stale snapshot"),
                }
            }
            let root = match &found.root {
                Some(r) => {
                    report.outcome = "resumed";
                    report.reused.push(format!("the root snapshot {}", r.id));
                    obs.stage_done(Stage::Upload, &format!("{} (found)", r.id));
                    RootSnapshot::from_tags(r, found.data.clone())?
                }
                None => build_root(aws, o, src, hash, &found, report, made, obs, confirm)?,
            };
            report.root_snapshot = Some(root.id.clone());
            let img = register::register(aws, o, src, &root, hash, report, obs)?;
            made.image = true;
            img
        }
    };
    copies::copies(aws, o, &image, hash, report, obs)?;
    if o.launch {
        register::launch(aws, o, src, &image, hash, report, obs)?;
    }
    if !report.reused.is_empty() && report.outcome == "already-migrated" {
        report.outcome = "resumed";
    }

    // Every snapshot of this work the AMI does not use: this run's temporaries, and whatever
    // runs that died left.
    obs.stage_started(Stage::Cleanup);
    let leftovers = resume::leftovers(aws, &o.source, hash, &image)?;
    let is_temporary = |s: &ec2::SnapshotInfo| tags::get(&s.tags, tags::ROLE) == Some(Role::Temporary.as_str());
    // --keep-temp keeps the snapshot the AMI was read from: this run's, or, when this run found
    // the AMI or its root already made, the newest temporary one of the work (a resumed run
    // reads that one again rather than taking another).
    let keep = report.source_snapshot.clone().or_else(|| {
        leftovers.iter().filter(|s| is_temporary(s)).max_by_key(|s| (s.started, s.id.clone())).map(|s| s.id.clone())
    });
    for s in leftovers {
        let temporary = is_temporary(&s);
        if o.keep_temp && temporary && keep.as_deref() == Some(s.id.as_str()) {
            ec2::create_tags(aws, &aws.ec2, &s.id, &[(tags::ROLE.into(), Role::Kept.as_str().into())])?;
            report.notes.push(format!(
                "kept the temporary snapshot {} (--keep-temp; tagged {}=kept)",
                s.id,
                tags::ROLE
            ));
            continue;
        }
        match ec2::delete_snapshot(aws, &s.id) {
            Ok(()) => report.temporary_deleted.push(s.id),
            Err(e) => report.notes.push(format!("could not delete {}: {e}", s.id)),
        }
    }
    obs.stage_done(Stage::Cleanup, &format!("{} snapshot(s) removed", report.temporary_deleted.len()));
    Ok(())
}

/// The source snapshot (reused, taken now, or the AMI's), and the instance's data volumes'.
#[allow(clippy::too_many_arguments)]
fn source_snapshot(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    hash: &str,
    found: &resume::Found,
    report: &mut MigrateReport,
    made: &mut Made,
    obs: &dyn Observer,
) -> Result<(String, Vec<(String, String)>), MigrateError> {
    obs.stage_started(Stage::Snapshot);
    if ResourceKind::of(&o.source) != Some(ResourceKind::Instance) {
        let snap = src.root_snapshot.clone().ok_or_else(|| MigrateError::Refused {
            source_id: o.source.clone(),
            reason: "the AMI has no EBS root snapshot".into(),
        })?;
        obs.stage_done(Stage::Snapshot, &snap);
        return Ok((snap, Vec::new()));
    }
    let tagged = |role| tags::work_tags(&o.run_id, &o.source, role, hash);
    let vol = src.root_volume.clone().ok_or_else(|| MigrateError::Refused {
        source_id: o.source.clone(),
        reason: "the instance has no EBS root volume attached".into(),
    })?;
    let mut restart = src.stopped_by.is_some() && src.state.as_deref() == Some("stopped");
    let (snap, data) = if let Some(t) = &found.temporary {
        report.outcome = "resumed";
        report.reused.push(format!("the source snapshot {}", t.id));
        (t.id.clone(), found.data.clone())
    } else {
        if o.stop && src.state.as_deref() == Some("running") {
            obs.progress().note(&format!("stopping {}", o.source));
            ec2::create_tags(aws, &aws.ec2, &o.source, &[(tags::STOPPED_BY.into(), o.run_id.clone())])?;
            ec2::stop_instance(aws, &o.source)?;
            restart = true;
        } else if !o.stop {
            report
                .notes
                .push("the snapshot is crash-consistent (no --stop): the journal is replayed in the delta".into());
        }
        obs.progress().note(&format!("snapshotting {vol}"));
        let s = ec2::create_snapshot(aws, &vol, &format!("pv2hvm: source of {}", o.source), &tagged(Role::Temporary))?;
        made.snapshots.push(s.clone());
        obs.created("snapshot", &s, &aws.region, Role::Temporary);
        let mut data = Vec::new();
        for (dev, v) in &src.other_volumes {
            let mut t = tagged(Role::Data);
            t.push((tags::DEVICE.into(), dev.clone()));
            let d = ec2::create_snapshot(aws, v, &format!("pv2hvm: {dev} of {}", o.source), &t)?;
            made.snapshots.push(d.clone());
            obs.created("snapshot", &d, &aws.region, Role::Data);
            data.push((dev.clone(), d));
        }
        (s, data)
    };
    ec2::wait_snapshot(aws, &snap, WAIT)?;
    for (_, d) in &data {
        ec2::wait_snapshot(aws, d, WAIT)?;
    }
    if restart {
        obs.progress().note(&format!("starting {} again", o.source));
        ec2::start_instance(aws, &o.source)?;
        ec2::delete_tag(aws, &o.source, tags::STOPPED_BY)?;
    }
    obs.stage_done(Stage::Snapshot, &snap);
    Ok((snap, data))
}

/// Source snapshot, plan, convert and upload: the new root snapshot, completed.
#[allow(clippy::too_many_arguments)]
fn build_root(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    hash: &str,
    found: &resume::Found,
    report: &mut MigrateReport,
    made: &mut Made,
    obs: &dyn Observer,
    confirm: &dyn Fn(&Plan) -> bool,
) -> Result<RootSnapshot, MigrateError> {
    if src.root_device_type.as_deref() != Some("ebs") && src.root_snapshot.is_none() {
        return Err(MigrateError::Refused { source_id: o.source.clone(), reason: "no EBS root device".into() });
    }
    let (snap, data) = source_snapshot(aws, o, src, hash, found, report, made, obs)?;
    report.source_snapshot = Some(snap.clone());
    let snap_info = parent::usable(aws, o, ec2::describe_snapshot(aws, &snap)?, hash, report, made, obs)?;
    let snap = snap_info.id.clone();

    // Plan, confirm, convert.
    obs.stage_started(Stage::Read);
    let ebs_source = Arc::new(EbsSnapshotSource::open(aws, &snap, &o.work_dir, o.concurrency)?);
    let fetches = Arc::clone(&ebs_source.fetches);
    // Nothing is uploaded yet; the upload counter follows once the sink exists.
    obs.transfers(&fetches, &Arc::new(Transfer::default()));
    let source: Arc<dyn BlockSource> = ebs_source.clone();
    let mut plan =
        convert::plan_only(Arc::clone(&source), &o.spec, &o.playbooks, Some(format!("an HVM AMI of {}", o.source)))?;
    plan.source_reads.blocks_fetched = Some(fetches.blocks());
    if let Some(saved) = &o.expected_plan {
        crate::plan::saved::check(saved, &plan)?;
    }
    if !confirm(&plan) {
        return Err(MigrateError::Declined("not confirmed: nothing was registered".into()));
    }
    obs.stage_done(Stage::Read, &format!("{} block(s) fetched", fetches.blocks()));
    obs.stage_started(Stage::Convert);
    let env = Environment {
        grub_dir: o.grub_dir.clone(),
        work_dir: o.work_dir.clone(),
        playbooks: o.playbooks.clone(),
        expected_plan: None,
        planned: Some(plan.clone()),
        boot_check: None,
    };
    let size_gib = (o.spec.disk_size(source.len()).div_ceil(GIB) as i64).max(snap_info.size_gib as i64);
    let mut root = RootSnapshot {
        id: String::new(),
        size_gib: size_gib as i32,
        architecture: plan.ami.architecture.clone(),
        ena: plan.ami.ena_support,
        sriov: plan.ami.sriov_net_support.is_some(),
        nitro: plan.target.nitro(),
        plan_hash: plan_hash(&plan),
        layout: format!("{:?}", o.spec.layout).to_lowercase(),
        data,
    };
    let mut root_tags = tags::work_tags(&o.run_id, &o.source, Role::Root, hash);
    root_tags.extend(root.tags());
    let new = NewSnapshot {
        parent: None,
        encrypt: (snap_info.encrypted || o.kms_key_id.is_some())
            .then(|| o.kms_key_id.clone().or_else(|| snap_info.kms_key_id.clone())),
        size_gib,
        description: format!("pv2hvm: HVM root of {}", o.source),
        tags: root_tags,
        // Per attempt: a run that resumes after a crash starts a new snapshot rather than
        // getting back the one the crash left pending (and which resume removed).
        client_token: ec2::token(&[&o.run_id, &o.source, &uuid::Uuid::new_v4().to_string()]),
    };
    let uploads;
    let converted;
    let id = if o.spec.layout == LayoutKind::InPlace {
        let new = NewSnapshot { parent: Some(snap.to_string()), encrypt: None, ..new };
        let sink = ChildSnapshotSink::new(aws, Arc::clone(&source), new, o.concurrency);
        uploads = Arc::clone(&sink.uploads);
        obs.transfers(&fetches, &uploads);
        let result = Arc::clone(&sink.result);
        converted = convert::convert(Arc::clone(&source), Box::new(sink), &o.spec, &env, obs.progress())?;
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
                    "--layout {} needs {} MiB free in {} (found {} MiB)",
                    format!("{:?}", o.spec.layout).to_lowercase(),
                    need >> 20,
                    o.work_dir.display(),
                    free >> 20
                ),
            });
        }
        obs.progress().note("downloading every allocated block of the source");
        let t = Arc::new(Transfer::default());
        obs.transfers(&fetches, &t);
        source
            .prefetch(&source.data_ranges().map_err(|e| AwsError::Other(e.to_string()))?)
            .map_err(|e| AwsError::Other(e.to_string()))?;
        let staged = o.work_dir.join(format!("pv2hvm-{}-{}.img", o.run_id, o.source));
        let disk_size = o.spec.disk_size(source.len());
        let sink = LocalFileSink::create(&staged, disk_size)
            .map_err(|e| AwsError::Other(format!("creating {}: {e}", staged.display())))?;
        let sink: Box<dyn BlockSink> = Box::new(sink);
        converted = convert::convert(Arc::clone(&source), sink, &o.spec, &env, obs.progress())?;
        obs.stage_done(Stage::Convert, &format!("{} block(s) fetched", fetches.blocks()));
        obs.stage_started(Stage::Upload);
        obs.progress().note("uploading the converted disk");
        let new = NewSnapshot { size_gib: disk_size.div_ceil(GIB) as i64, ..new };
        let id = ebs::upload_image(aws, &staged, &new, o.concurrency, &t);
        let _ = std::fs::remove_file(&staged);
        uploads = t;
        id?
    };
    made.snapshots.push(id.clone());
    obs.created("snapshot", &id, &aws.region, Role::Root);
    if o.spec.layout == LayoutKind::InPlace {
        obs.stage_done(Stage::Convert, &format!("{} block(s) fetched", fetches.blocks()));
        obs.stage_started(Stage::Upload);
    }
    report.delta_blocks = converted.delta.as_ref().map(|d| d.changed_blocks);
    ec2::wait_snapshot(aws, &id, WAIT)?;
    report.blocks_fetched = fetches.blocks();
    report.blocks_uploaded = uploads.blocks();
    obs.stage_done(Stage::Upload, &format!("{id}: {} block(s) uploaded", uploads.blocks()));
    report.plan = Some(converted.plan);
    root.id = id;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ec2::SourceInfo;
    use register::hvm_device_names;

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
