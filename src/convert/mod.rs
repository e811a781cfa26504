//! The conversion pipeline, over the block traits: inspect → plan (once) → stop on a dry run
//! → build the bootloader → replay the journal (on a scratch copy) → edit the filesystem
//! through a copy-on-write overlay → copy the source and then the edits into the sink →
//! verify → write the first MiB → commit. Nothing appears at the destination until the
//! commit, and the source is only ever read. [`scratch`] holds the metadata images e2fsck
//! works on.

mod scratch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::Error;
use crate::boot::check::{self, BootOutcome, DiskBus};
use crate::boot::grub::{self, GrubPc};
use crate::disk::detect::{self, SourceLayout};
use crate::disk::layout::{CorePlacement, DiskLayout, LayoutError, SECTOR};
use crate::ext2fs::{BACKUP_SUFFIX, Ext2Fs};
use crate::guest::drivers::{self, DriverError};
use crate::guest::inspect::InspectError;
use crate::guest::playbook::Playbook;
use crate::host::fsck;
use crate::io::delta::{Delta, DeltaReport};
use crate::io::wrappers::{CopyError, data_bytes};
use crate::io::{BlockSink, BlockSource, CountingSource, Overlay};
use crate::plan::{self, EditAction, Plan, PlanInput, ReadStats};
use crate::progress::Progress;
use crate::spec::{ConvertSpec, LayoutKind};

/// What a conversion needs besides the source, the sink and the spec.
pub struct Environment {
    /// GRUB's i386-pc directory (default: the host's).
    pub grub_dir: Option<PathBuf>,
    /// Where scratch files go: the metadata images e2fsck works on.
    pub work_dir: PathBuf,
    /// The playbooks to choose from, most specific first.
    pub playbooks: Vec<Playbook>,
    /// A saved plan the source must still match (`convert --plan`).
    pub expected_plan: Option<Plan>,
    /// Boot the staged result before it is committed; a boot that falls short fails the run.
    pub boot_check: Option<BootRequest>,
}

/// A boot check of the staged result, on each bus in turn.
pub struct BootRequest {
    pub buses: Vec<DiskBus>,
    pub timeout: std::time::Duration,
    /// Commit the result even when a boot falls short (the run still fails).
    pub keep_failed: bool,
}

/// What a finished conversion did.
#[derive(Debug, Serialize)]
pub struct ConvertReport {
    pub plan: Plan,
    /// What the conversion read from the source (inspection, plan, edits, delta), besides the
    /// copy into the sink.
    pub source_reads: ReadStats,
    /// Bytes of source data written to the destination (zeros are skipped).
    pub bytes_copied: u64,
    /// Bytes the edits changed in the root filesystem, in whole 4 KiB chunks.
    pub bytes_edited: u64,
    /// In place: how the result differs from the source, in EBS's 512 KiB blocks.
    pub delta: Option<DeltaReport>,
    /// The sector boot.img loads core.img's first sector from.
    pub core_lba: u64,
    /// Boots of the staged result, when asked for.
    pub boot_checks: Vec<BootOutcome>,
    pub seconds: f64,
}

/// Recognises the source and makes its plan; writes nothing. The plan says what it read.
pub fn plan_only(
    source: Arc<dyn BlockSource>,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    destination: Option<String>,
) -> Result<Plan, Error> {
    let counted = Arc::new(CountingSource::new(source));
    let source: Arc<dyn BlockSource> = counted.clone();
    let layout = detect::detect(source.as_ref()).map_err(InspectError::from)?;
    let fs_offset = layout.fs_offset;
    let mut plan = plan_at(&source, fs_offset, source.as_ref(), layout, spec, playbooks, destination)?;
    plan.source_reads = ReadStats { bytes: counted.bytes_read(), requests: counted.reads() };
    Ok(plan)
}

/// Plans the filesystem found in `fs_bytes` at `fs_offset` (the source's own, or the source
/// after a journal replay), for the source `source` as `layout` describes it.
fn plan_at(
    fs_bytes: &Arc<dyn BlockSource>,
    fs_offset: u64,
    source: &dyn BlockSource,
    layout: SourceLayout,
    spec: &ConvertSpec,
    playbooks: &[Playbook],
    destination: Option<String>,
) -> Result<Plan, Error> {
    let fs = Ext2Fs::open_source(Arc::clone(fs_bytes), fs_offset)
        .map_err(|err| InspectError::Filesystem { image: source.describe(), err })?;
    let input = PlanInput { name: source.describe(), len: source.len(), layout, fs: &fs };
    plan::make(&input, spec, playbooks, destination)
}

/// Runs the whole conversion of `source` into `sink`.
pub fn convert(
    source: Arc<dyn BlockSource>,
    mut sink: Box<dyn BlockSink>,
    spec: &ConvertSpec,
    env: &Environment,
    progress: &dyn Progress,
) -> Result<ConvertReport, Error> {
    let started = Instant::now();
    // Everything pv2hvm reads from the source is counted, except the copy into the sink (which
    // `bytes_copied` reports): in place on a remote source, that is what crosses the network.
    let raw = source;
    let counted = Arc::new(CountingSource::new(Arc::clone(&raw)));
    let source: Arc<dyn BlockSource> = counted.clone();
    // The whole plan, driver verdicts included, comes before anything is written: a refusal
    // leaves no output.
    let mut plan = plan_only(Arc::clone(&source), spec, &env.playbooks, Some(sink.describe()))?;
    if let Some(saved) = &env.expected_plan {
        plan::saved::check(saved, &plan)?;
    }
    let layout = plan.source_layout.clone();
    tracing::info!(source = %source.describe(), shape = %layout.shape, uuid = %layout.fs.uuid, "planned");
    let grub = GrubPc::locate(env.grub_dir.as_deref())?;
    let images = grub.build(&layout.fs.uuid, &plan.bootloader.guest_config, plan.bootloader.dialect)?;

    // The bytes the edits apply to: the source's filesystem, with what a journal replay wrote
    // laid over it. The replay runs on a metadata image: no file data is read for it.
    let fs_len = layout.fs.size_bytes();
    let replay = if layout.fs.needs_recovery {
        progress.note("replaying the journal on a metadata image of the filesystem");
        let (replayed, blocks) = scratch::replay_journal(&source, layout.fs_offset, fs_len, &env.work_dir)?;
        tracing::info!(blocks, "the journal replay changed blocks");
        let as_source: Arc<dyn BlockSource> = replayed.clone();
        plan =
            replan_if_replay_changed(plan, &as_source, source.as_ref(), &layout, spec, env, sink.describe(), progress)?;
        Some(replayed)
    } else {
        None
    };
    let (base, base_offset): (Arc<dyn BlockSource>, u64) = match &replay {
        Some(r) => (r.clone(), 0),
        None => (Arc::clone(&source), layout.fs_offset),
    };
    let overlay = Arc::new(Overlay::new(Arc::clone(&base), base_offset, fs_len));
    let in_fs = plan.disk.core_placement == CorePlacement::BootLoaderInode;
    let edited = edit(&overlay, &plan, in_fs.then_some(images.core_img.as_slice()))?;
    let disk = plan.disk.clone();
    let (core, core_lba) = match edited.core_blocks {
        Some(blocks) => place_core_in_filesystem(&overlay, &images.core_img, &blocks, &disk, layout.fs.block_size)?,
        None => (images.core_img.clone(), disk.core_lba),
    };

    // The source's bytes first: in place, everything the filesystem does not cover as it is
    // in the source; then the filesystem as the edits found it; then the edits.
    let in_place = disk.kind == LayoutKind::InPlace;
    let mut delta = Delta::new(source.as_ref());
    let mut outside: Vec<(u64, u64)> = Vec::new();
    if in_place {
        outside.push((0, layout.fs_offset));
        outside.push((layout.fs_offset + fs_len, source.len().saturating_sub(layout.fs_offset + fs_len)));
    }
    let data = |src: &dyn BlockSource, off, len| {
        data_bytes(src, off, len)
            .map_err(|err| Error::Copy { what: src.describe(), err: CopyError::Read { offset: off, err } })
    };
    // A moved filesystem takes only the blocks it uses (after the edits): deleted data stays
    // behind. In place, the source's bytes are the base of the delta, all of them.
    let fs_ranges: Vec<(u64, u64)> = if in_place {
        vec![(0, fs_len)]
    } else {
        edited.used.iter().map(|r| (r.start, r.end.min(fs_len) - r.start.min(fs_len))).filter(|r| r.1 > 0).collect()
    };
    let mut total = 0;
    for &(off, len) in &fs_ranges {
        total += data(raw.as_ref(), layout.fs_offset + off, len)?;
    }
    for &(off, len) in &outside {
        total += data(source.as_ref(), off, len)?;
    }
    progress.start("copying", total);
    let mut copied = 0;
    for &(off, len) in outside.iter().filter(|r| r.1 > 0) {
        copied += sink
            .copy_from(raw.as_ref(), off, len, off, progress)
            .map_err(|err| Error::Copy { what: raw.describe(), err })?;
    }
    // The filesystem's own bytes from the source itself (uncounted: the copy is reported as
    // `bytes_copied`), then what a journal replay changed.
    for &(off, len) in &fs_ranges {
        copied += sink
            .copy_from(raw.as_ref(), layout.fs_offset + off, len, disk.root_start + off, progress)
            .map_err(|err| Error::Copy { what: raw.describe(), err })?;
    }
    for (offset, bytes) in replay.as_ref().map(|r| r.changed_runs()).unwrap_or_default() {
        write(sink.as_mut(), disk.root_start + offset, &bytes, in_place.then_some(&mut delta))?;
    }
    progress.finish();
    for (offset, bytes) in overlay.changed_runs() {
        write(sink.as_mut(), disk.root_start + offset, &bytes, in_place.then_some(&mut delta))?;
    }
    tracing::info!(bytes = copied, edited = overlay.changed_bytes(), "wrote the root filesystem");

    // e2fsck needs a file: the sink's staged image, else a metadata image of the result.
    progress.note("checking the converted filesystem");
    match sink.local_image() {
        Some(staged) => fsck::check_clean(staged, disk.root_start)?,
        None => scratch::check_edited(&overlay, &env.work_dir)?,
    }

    // The first MiB goes last: until then the image has no bootable boot sector.
    let boot_sector = grub::patch_boot_img(&images.boot_img, core_lba);
    let mut source_mbr = [0u8; 512];
    if source.len() >= 512 {
        source
            .read_exact_at(0, &mut source_mbr)
            .map_err(|err| Error::Copy { what: source.describe(), err: CopyError::Read { offset: 0, err } })?;
    }
    let disk_id = u32::from_le_bytes(*uuid::Uuid::new_v4().as_bytes().first_chunk::<4>().unwrap_or(&[0; 4]));
    for (offset, bytes) in disk.boot_regions(&boot_sector, &core, disk_id, uuid::Uuid::new_v4(), &source_mbr)? {
        write(sink.as_mut(), offset, &bytes, in_place.then_some(&mut delta))?;
    }
    // Proof is a boot: of the staged disk, before anything appears at the destination.
    let boots = match &env.boot_check {
        Some(req) => {
            let staged = sink.local_image().map(std::path::Path::to_path_buf).ok_or_else(|| {
                Error::Refused(format!("{} is not staged in a local file that QEMU could boot", sink.describe()))
            })?;
            progress.note("booting the converted disk in QEMU");
            check::run_each(&staged, &req.buses, req.timeout, None)?
        }
        None => Vec::new(),
    };
    let failed = boots.iter().find(|b| !b.ok()).map(|b| {
        let why =
            b.failure.clone().unwrap_or_else(|| if b.timed_out { "timed out".into() } else { "no marker".into() });
        format!("{} boot stopped at stage {:?} ({why})", b.bus, b.stage)
    });
    if let Some(why) = &failed
        && !env.boot_check.as_ref().is_some_and(|r| r.keep_failed)
    {
        return Err(Error::BootFailed(format!("{why}; nothing was written to {}", sink.describe())));
    }
    let target = sink.describe();
    sink.commit().map_err(|err| Error::Commit { target: target.clone(), err })?;
    if let Some(why) = failed {
        return Err(Error::BootFailed(format!("{why}; kept at {target} (--keep-failed)")));
    }
    Ok(ConvertReport {
        plan,
        source_reads: ReadStats { bytes: counted.bytes_read(), requests: counted.reads() },
        bytes_copied: copied,
        bytes_edited: overlay.changed_bytes(),
        delta: in_place.then(|| delta.report()),
        core_lba,
        boot_checks: boots,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes core.img into the boot-loader inode's blocks (through the overlay) with its
/// blocklist pointing at them; returns core.img as written and the LBA of its first sector.
fn place_core_in_filesystem(
    overlay: &Overlay,
    core: &[u8],
    blocks: &[(u64, u64)],
    disk: &DiskLayout,
    block_size: u64,
) -> Result<(Vec<u8>, u64), Error> {
    let runs: Vec<(u64, u64)> =
        blocks.iter().map(|&(b, n)| ((disk.root_start + b * block_size) / SECTOR, n * block_size / SECTOR)).collect();
    let mut core = core.to_vec();
    grub::set_blocklist(&mut core, &runs).map_err(LayoutError::from)?;
    let mut padded = core.clone();
    padded.resize((core.len() as u64).div_ceil(block_size) as usize * block_size as usize, 0);
    let mut done = 0usize;
    for &(b, n) in blocks {
        let len = (n * block_size) as usize;
        let end = (done + len).min(padded.len());
        overlay.write_all_at(b * block_size, &padded[done..end]).map_err(|err| Error::Write {
            target: overlay.describe(),
            offset: b * block_size,
            err,
        })?;
        done = end;
    }
    tracing::info!(runs = ?runs, "core.img in the boot-loader inode");
    Ok((core, runs.first().map_or(0, |r| r.0)))
}

/// Writes into the sink, first noting the write in the delta when there is one.
fn write(sink: &mut dyn BlockSink, offset: u64, bytes: &[u8], delta: Option<&mut Delta<'_>>) -> Result<(), Error> {
    if let Some(d) = delta {
        d.note(offset, bytes)
            .map_err(|err| Error::Copy { what: "the source".into(), err: CopyError::Read { offset, err } })?;
    }
    sink.write_all_at(offset, bytes).map_err(|err| Error::Write { target: sink.describe(), offset, err })
}

/// After a replay, re-reads only the files the plan read and hashed. When none changed the
/// plan stands; otherwise it is made again from the replayed filesystem. Either way the plan
/// says which.
#[allow(clippy::too_many_arguments)]
fn replan_if_replay_changed(
    mut plan: Plan,
    replayed: &Arc<dyn BlockSource>,
    source: &dyn BlockSource,
    layout: &SourceLayout,
    spec: &ConvertSpec,
    env: &Environment,
    destination: String,
    progress: &dyn Progress,
) -> Result<Plan, Error> {
    let fs = Ext2Fs::open_source(Arc::clone(replayed), 0)
        .map_err(|err| InspectError::Filesystem { image: replayed.describe(), err })?;
    let mut changed = Vec::new();
    let mut read = 0;
    for (path, hash) in plan.hashed_files() {
        read += 1;
        let now = fs.try_read_file(path).map_err(Error::Edit)?.map(|b| crate::util::sha256_hex(&b));
        if now.as_deref() != Some(hash) {
            changed.push(path.to_string());
        }
    }
    drop(fs);
    if changed.is_empty() {
        plan.warnings
            .push(format!("journal replayed: the {read} file(s) the plan read are unchanged, so the plan stands"));
        return Ok(plan);
    }
    progress.note("the journal replay changed files the plan read: planning again");
    let mut replayed_layout = layout.clone();
    replayed_layout.fs.needs_recovery = false;
    let mut again = plan_at(replayed, 0, source, replayed_layout, spec, &env.playbooks, Some(destination))?;
    // The plan describes the source as it is; only its edits come from the replayed filesystem.
    again.source_layout = layout.clone();
    again.journal_replay = true;
    again.warnings.push(format!(
        "journal replayed: it changed {}, so the plan was made again from the replayed filesystem",
        changed.join(", ")
    ));
    Ok(again)
}

/// What the edits left: core.img's blocks when it went into the filesystem, and the byte
/// ranges the filesystem uses afterwards.
struct Edited {
    core_blocks: Option<Vec<(u64, u64)>>,
    used: Vec<std::ops::Range<u64>>,
}

/// Applies the plan's edits and driver injection through the overlay, and stores `core` in
/// the boot-loader inode when given.
fn edit(overlay: &Arc<Overlay>, plan: &Plan, core: Option<&[u8]>) -> Result<Edited, Error> {
    let mut fs = Ext2Fs::open_overlay(Arc::clone(overlay)).map_err(Error::Edit)?;
    // core.img first: the fewest runs come from the emptiest filesystem.
    let blocks = match core {
        Some(core) => {
            let free = fs.free_bytes();
            let need = core.len() as u64 + plan::CORE_RESERVE / 4;
            if free < need {
                return Err(LayoutError::NoRoomForCore { need, free }.into());
            }
            Some(fs.write_boot_loader(core).map_err(Error::Edit)?)
        }
        None => None,
    };
    for e in &plan.edits {
        let text = || e.new_text.as_deref().unwrap_or_default().as_bytes();
        match e.action {
            EditAction::Rewrite => {
                fs.replace_file(&e.path, text()).map_err(Error::Edit)?;
            }
            EditAction::Create => {
                let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
                let dir = if dir.is_empty() { "/" } else { dir };
                let like = e.like.as_deref().unwrap_or(dir);
                fs.create_file_like(dir, name, like, 0o644, text()).map_err(Error::Edit)?;
            }
            EditAction::MoveAside => {
                let name = e.path.rsplit('/').next().unwrap_or(&e.path);
                fs.rename(&e.path, &format!("{name}{BACKUP_SUFFIX}")).map_err(Error::Edit)?;
            }
        }
        tracing::info!(path = %e.path, action = e.action.verb(), "edited");
    }
    for ird in &plan.initramfs {
        let bytes = drivers::rebuild(&fs, ird)?;
        let free = fs.free_bytes();
        // The original stays as the backup, so the new one needs room of its own.
        let need = bytes.len() as u64 + (4 << 20);
        if free < need {
            return Err(DriverError::NoRoom { path: ird.path.clone(), need, free }.into());
        }
        fs.replace_file(&ird.path, &bytes).map_err(Error::Edit)?;
        tracing::info!(path = %ird.path, bytes = bytes.len(), added = ird.add.len(), "rebuilt the initramfs");
    }
    let used = fs.used_ranges().map_err(Error::Edit)?;
    fs.close().map_err(Error::Edit)?;
    Ok(Edited { core_blocks: blocks, used })
}
