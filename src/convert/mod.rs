//! The conversion pipeline, over the block traits: inspect → plan (once; a caller that planned
//! already passes its plan) → stop on a dry run
//! → build the bootloader → replay the journal (on a scratch copy) → edit the filesystem
//! through a copy-on-write overlay → copy the source and then the edits into the sink →
//! verify → write the first MiB → commit. Nothing appears at the destination until the
//! commit, and the source is only ever read. [`scratch`] holds the metadata images e2fsck
//! works on.

mod scratch;

use std::io::Seek;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The plan this process already made from this very source (with the same spec and
    /// playbooks): used as it is instead of planning again.
    pub planned: Option<Plan>,
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
    plan.source_reads = counted.stats();
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
    let mut plan = plan::make(&input, spec, playbooks, destination)?;
    plan.files_read = plan::files_read(&plan, fs.files_read());
    Ok(plan)
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
    let sink_name = sink.describe();
    // In place, the HVM disk is the source plus the edits: the whole source is copied, and made
    // durable, on a second thread while the plan, the bootloader and the edits are made (a
    // failure there stops it, and the sink, never committed, leaves nothing). Otherwise the
    // copy waits for the edits, which decide the blocks the moved filesystem uses.
    let in_place = spec.layout == LayoutKind::InPlace;
    let stop = AtomicBool::new(false);
    let copy_progress = Stoppable { inner: progress, stop: &stop };
    let (prepared, copied) = std::thread::scope(|scope| -> Result<_, Error> {
        let sink: &mut dyn BlockSink = &mut *sink;
        let copier = if in_place {
            let (raw, copy_progress) = (raw.as_ref(), &copy_progress);
            Copier::Early(scope.spawn(move || {
                let copied = copy_source(raw, sink, &[(0, raw.len())], 0, 0, copy_progress)?;
                sink.flush_data().map_err(|err| Error::Write { target: sink.describe(), offset: 0, err })?;
                Ok::<u64, Error>(copied)
            }))
        } else {
            Copier::AfterEdits(sink)
        };
        let prepared = match prepare(&source, spec, env, sink_name.clone(), progress) {
            Ok(p) => p,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                if let Copier::Early(thread) = copier {
                    let _ = thread.join();
                }
                return Err(e);
            }
        };
        let copied = match copier {
            Copier::Early(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            Copier::AfterEdits(sink) => {
                let (from, to) = (prepared.plan.source_layout.fs_offset, prepared.plan.disk.root_start);
                copy_source(raw.as_ref(), sink, &prepared.used, from, to, progress)?
            }
        };
        Ok((prepared, copied))
    })?;
    let Prepared { plan, overlay, replay, core, core_lba, boot_img, .. } = prepared;
    let disk = plan.disk.clone();

    // Then what a journal replay changed, then the edits.
    let mut delta = Delta::new(source.as_ref());
    for changes in replay.iter().chain([&overlay]) {
        // In runs of at most 4 MiB: the changes may be larger than memory holds.
        for run in changes.changed_runs_of(4 << 20) {
            let (offset, bytes) =
                run.map_err(|err| Error::Copy { what: changes.describe(), err: CopyError::Read { offset: 0, err } })?;
            write(sink.as_mut(), disk.root_start + offset, &bytes, in_place.then_some(&mut delta))?;
        }
    }
    tracing::info!(bytes = copied, edited = overlay.changed_bytes(), "wrote the root filesystem");

    // e2fsck needs a file: the sink's staged image, else a metadata image of the result.
    progress.note("checking the converted filesystem");
    match sink.local_image() {
        Some(staged) => fsck::check_clean(staged, disk.root_start)?,
        None => scratch::check_edited(&overlay, &env.work_dir)?,
    }

    // The first MiB goes last: until then the image has no bootable boot sector.
    let boot_sector = grub::patch_boot_img(&boot_img, core_lba);
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
        source_reads: counted.stats(),
        bytes_copied: copied,
        bytes_edited: overlay.changed_bytes(),
        delta: in_place.then(|| delta.report()),
        core_lba,
        boot_checks: boots,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Who copies the source's bytes: a thread started before the plan, or the caller after the
/// edits (with the sink).
enum Copier<'scope, 'sink> {
    Early(std::thread::ScopedJoinHandle<'scope, Result<u64, Error>>),
    AfterEdits(&'sink mut dyn BlockSink),
}

/// Passes progress on, and asks a copy to stop once `stop` is set.
struct Stoppable<'a> {
    inner: &'a dyn Progress,
    stop: &'a AtomicBool,
}

impl Progress for Stoppable<'_> {
    fn start(&self, stage: &str, total: u64) {
        self.inner.start(stage, total);
    }
    fn advance(&self, n: u64) {
        self.inner.advance(n);
    }
    fn finish(&self) {
        self.inner.finish();
    }
    fn note(&self, message: &str) {
        self.inner.note(message);
    }
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.inner.stop_requested()
    }
}

/// Copies the source's own bytes into the sink: each `(offset, len)` of `ranges`, counted
/// from `from` in the source and placed from `to` in the sink, with one progress stage for
/// all of them. Returns the bytes written. The copy reads `raw`, the source itself: it is
/// reported as `bytes_copied`, not counted as a read.
fn copy_source(
    raw: &dyn BlockSource,
    sink: &mut dyn BlockSink,
    ranges: &[(u64, u64)],
    from: u64,
    to: u64,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    let mut total = 0;
    for &(off, len) in ranges {
        total += data_bytes(raw, from + off, len)
            .map_err(|err| Error::Copy { what: raw.describe(), err: CopyError::Read { offset: from + off, err } })?;
    }
    progress.start("copying", total);
    let mut copied = 0;
    for &(off, len) in ranges.iter().filter(|r| r.1 > 0) {
        copied += sink
            .copy_from(raw, from + off, len, to + off, progress)
            .map_err(|err| Error::Copy { what: raw.describe(), err })?;
    }
    progress.finish();
    Ok(copied)
}

/// What the conversion writes besides the source's own bytes.
struct Prepared {
    plan: Plan,
    /// The filesystem as the edits left it.
    overlay: Arc<Overlay>,
    /// What a journal replay changed, when one ran.
    replay: Option<Arc<Overlay>>,
    core: Vec<u8>,
    core_lba: u64,
    boot_img: [u8; 512],
    /// The filesystem's used byte ranges after the edits, as (offset, len).
    used: Vec<(u64, u64)>,
}

/// Plans (or takes the plan already made), builds the bootloader, replays the journal on a
/// metadata image when it needs recovery, and makes the edits in a copy-on-write overlay.
/// Nothing is written to the sink. The whole plan, driver verdicts included, comes first: a
/// refusal leaves no output.
fn prepare(
    source: &Arc<dyn BlockSource>,
    spec: &ConvertSpec,
    env: &Environment,
    sink_name: String,
    progress: &dyn Progress,
) -> Result<Prepared, Error> {
    let mut plan = match &env.planned {
        Some(p) => p.clone(),
        None => plan_only(Arc::clone(source), spec, &env.playbooks, Some(sink_name.clone()))?,
    };
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
        let (replayed, blocks) = scratch::replay_journal(source, layout.fs_offset, fs_len, &env.work_dir)?;
        tracing::info!(blocks, "the journal replay changed blocks");
        let as_source: Arc<dyn BlockSource> = replayed.clone();
        plan = replan_if_replay_changed(plan, &as_source, source.as_ref(), &layout, spec, env, sink_name, progress)?;
        Some(replayed)
    } else {
        None
    };
    let (base, base_offset): (Arc<dyn BlockSource>, u64) = match &replay {
        Some(r) => (r.clone(), 0),
        None => (Arc::clone(source), layout.fs_offset),
    };
    let overlay = Arc::new(Overlay::with_spill(base, base_offset, fs_len, Some(&env.work_dir)));
    let in_fs = plan.disk.core_placement == CorePlacement::BootLoaderInode;
    let edited = edit(&overlay, &plan, in_fs.then_some(images.core_img.as_slice()), &env.work_dir)?;
    let (core, core_lba) = match edited.core_blocks {
        Some(blocks) => {
            place_core_in_filesystem(&overlay, &images.core_img, &blocks, &plan.disk, layout.fs.block_size)?
        }
        None => (images.core_img.clone(), plan.disk.core_lba),
    };
    // A moved filesystem takes only the blocks it uses: deleted data stays behind.
    let used =
        edited.used.iter().map(|r| (r.start, r.end.min(fs_len) - r.start.min(fs_len))).filter(|r| r.1 > 0).collect();
    Ok(Prepared { plan, overlay, replay, core, core_lba, boot_img: images.boot_img, used })
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
        let now = fs.try_sha256_file(path).map_err(Error::Edit)?;
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
fn edit(overlay: &Arc<Overlay>, plan: &Plan, core: Option<&[u8]>, work_dir: &std::path::Path) -> Result<Edited, Error> {
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
        // The new initramfs goes to a file in the work directory first (an unnamed one, gone
        // with the process): it is as large as the original, which is never held whole.
        let shown = work_dir.display().to_string();
        let werr = |err| Error::Write { target: shown.clone(), offset: 0, err };
        let mut spill = std::io::BufWriter::new(tempfile::tempfile_in(work_dir).map_err(werr)?);
        let mut out = RecordingWriter { inner: &mut spill, failed: None };
        let built = drivers::rebuild(&fs, ird, &mut out);
        if let Some(err) = out.failed.take() {
            return Err(werr(err));
        }
        let len = built?;
        let mut spill = spill.into_inner().map_err(|e| werr(e.into_error()))?;
        spill.seek(std::io::SeekFrom::Start(0)).map_err(werr)?;
        let free = fs.free_bytes();
        // The original stays as the backup, so the new one needs room of its own.
        let need = len + (4 << 20);
        if free < need {
            return Err(DriverError::NoRoom { path: ird.path.clone(), need, free }.into());
        }
        fs.replace_file_from(&ird.path, &mut std::io::BufReader::new(spill)).map_err(Error::Edit)?;
        tracing::info!(path = %ird.path, bytes = len, added = ird.add.len(), "rebuilt the initramfs");
    }
    let used = fs.used_ranges().map_err(Error::Edit)?;
    fs.close().map_err(Error::Edit)?;
    Ok(Edited { core_blocks: blocks, used })
}

/// A writer that keeps its first error, to tell a failure of the work directory apart from
/// one of what is written.
struct RecordingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    failed: Option<std::io::Error>,
}

impl std::io::Write for RecordingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.keep(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.keep(e))
    }
}

impl RecordingWriter<'_> {
    fn keep(&mut self, e: std::io::Error) -> std::io::Error {
        let shown = std::io::Error::new(e.kind(), e.to_string());
        self.failed.get_or_insert(e);
        shown
    }
}
