//! The conversion pipeline: inspect → plan → (stop on dry run) → copy → journal replay →
//! edit → verify → bootloader → commit. Nothing appears at the destination until the last
//! step, and the source is only ever read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::blockdev::{BlockSink, BlockSource, LocalFileSink, LocalFileSource};
use crate::disk::layout::{LayoutError, LayoutKind};
use crate::disk::superblock::Superblock;
use crate::drivers::{self, DriverError, InitramfsPlan, Target};
use crate::ext2fs::{BACKUP_SUFFIX, Ext2Error, Ext2Fs};
use crate::fsck::{self, FsckError};
use crate::grub::{self, GrubError, GrubPc};
use crate::inspect::{self, InspectError};
use crate::plan::{self, EditAction, Plan, PlanOptions};

use crate::progress::Progress;

const COPY_CHUNK: usize = 4 << 20;

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub layout: LayoutKind,
    pub size_gib: Option<u64>,
    pub grub_dir: Option<PathBuf>,
    /// Replace an existing destination.
    pub force: bool,
    pub quiet: bool,
    pub target: Target,
    pub all_kernels: bool,
    pub keep_initramfs: bool,
    pub playbooks: Option<PathBuf>,
    /// A saved plan the source must still match (`convert --plan`).
    pub expected_plan: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Grub(#[from] GrubError),
    #[error("editing the converted filesystem")]
    Edit(#[from] Ext2Error),
    #[error("checking the converted filesystem")]
    Fsck(#[from] FsckError),
    #[error("{path}: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{path} already exists (pass --force to replace it)")]
    DestExists { path: PathBuf },
    #[error("the destination {0} is the source")]
    DestIsSource(PathBuf),
    #[error("{context} {target} at offset {offset}: {err}")]
    Io { context: &'static str, target: String, offset: u64, err: std::io::Error },
    #[error("injecting drivers")]
    Drivers(#[from] DriverError),
    #[error("loading playbooks")]
    Playbook(#[from] crate::playbook::PlaybookError),
    #[error("the source has drifted from the saved plan: {0}; make a new plan")]
    Drift(String),
    #[error("the journal of the copy still needs recovery after e2fsck replayed it")]
    JournalNotReplayed,
}

/// What a finished conversion did.
#[derive(Debug, Serialize)]
pub struct ConvertReport {
    pub plan: Plan,
    pub bytes_copied: u64,
    pub seconds: f64,
}

/// Opens the source and computes the plan, writing nothing.
pub fn plan_only(source: &Path, opts: &PlanOptions) -> Result<Plan, ConvertError> {
    let src: Arc<dyn BlockSource> = Arc::new(open_source(source)?);
    let (layout, fs) = inspect::open(&src)?;
    plan_from_fs(src.as_ref(), layout, &fs, opts)
}

/// Inspection, driver analysis and the plan, over an open filesystem.
fn plan_from_fs(
    src: &dyn BlockSource,
    layout: crate::disk::detect::SourceLayout,
    fs: &Ext2Fs,
    opts: &PlanOptions,
) -> Result<Plan, ConvertError> {
    let guest = inspect::inspect_fs(&src.describe(), layout, fs)?;
    guest.check_convertible()?;
    let books = crate::playbook::load(opts.playbooks.as_deref())?;
    let exists = |p: &str| matches!(fs.try_resolve(p), Ok(Some(_)));
    let playbook = crate::playbook::select(&books, &guest.os, &exists);
    let move_aside: Vec<String> = playbook
        .files
        .move_aside
        .iter()
        .filter(|p| matches!(fs.try_resolve(p), Ok(Some(r)) if r.stat.kind == crate::ext2fs::Kind::File))
        .cloned()
        .collect();
    let mut initramfs: Vec<InitramfsPlan> = Vec::new();
    let mut warnings = Vec::new();
    if !opts.keep_initramfs {
        let kernels: Vec<&inspect::Kernel> = if opts.all_kernels {
            guest
                .kernels
                .iter()
                .filter(|k| guest.boot.text.contains(k.image.rsplit('/').next().unwrap_or(&k.image)))
                .collect()
        } else {
            guest.default_kernel.iter().collect()
        };
        if kernels.is_empty() {
            warnings.push("no kernel of the bootloader config was found in /boot: no drivers are injected".to_string());
        }
        for k in kernels {
            let is_default = guest.default_kernel.as_ref().is_some_and(|d| d.version == k.version);
            match drivers::analyze(fs, k, opts.target, &playbook.initramfs) {
                Ok(p) => initramfs.push(p),
                Err(e) if !is_default => warnings.push(format!("kernel {} is left as it is: {e}", k.version)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let arch =
        crate::guestos::architecture(fs).map_err(|err| InspectError::Filesystem { image: src.describe(), err })?;
    let mut plan = plan::build(&guest, src.len(), opts, playbook, &move_aside, arch, initramfs)?;
    plan.warnings.extend(warnings);
    Ok(plan)
}

fn open_source(source: &Path) -> Result<LocalFileSource, ConvertError> {
    LocalFileSource::open(source).map_err(|err| ConvertError::Open { path: source.to_path_buf(), err })
}

/// Runs the whole conversion.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let src: Arc<dyn BlockSource> = Arc::new(open_source(&opts.source)?);
    check_destination(opts)?;
    let plan_opts = PlanOptions {
        layout: opts.layout,
        size_gib: opts.size_gib,
        destination: Some(opts.dest.display().to_string()),
        target: opts.target,
        all_kernels: opts.all_kernels,
        keep_initramfs: opts.keep_initramfs,
        playbooks: opts.playbooks.clone(),
    };
    // The whole plan, driver verdicts included, comes before anything is written: a
    // refusal leaves no output.
    let first_plan = {
        let (layout, fs) = inspect::open(&src)?;
        plan_from_fs(src.as_ref(), layout, &fs, &plan_opts)?
    };
    if let Some(saved) = &opts.expected_plan {
        crate::plan_render::check_drift(saved, &first_plan).map_err(ConvertError::Drift)?;
    }
    let source = first_plan.source_layout.clone();
    tracing::info!(source = %src.describe(), shape = source.shape, uuid = %source.fs.uuid, "inspected");

    let grub = GrubPc::locate(opts.grub_dir.as_deref())?;
    let images = grub.build(&source.fs.uuid, &first_plan.bootloader.guest_config, first_plan.bootloader.dialect)?;

    let disk = first_plan.disk.clone();
    let mut sink: Box<dyn BlockSink> = Box::new(
        LocalFileSink::create(&opts.dest, disk.disk_size)
            .map_err(|err| ConvertError::Open { path: opts.dest.clone(), err })?,
    );
    let fs_len = source.fs.size_bytes();
    let copied = if source.fs.needs_recovery {
        // e2fsck loses `?offset=` when it re-opens the filesystem after a replay, so the
        // journal is replayed in a filesystem-only scratch copy next to DST first.
        let mut scratch_name = opts.dest.as_os_str().to_owned();
        scratch_name.push(".journal");
        let mut scratch = LocalFileSink::create(Path::new(&scratch_name), fs_len)
            .map_err(|err| ConvertError::Open { path: scratch_name.clone().into(), err })?;
        copy_filesystem(src.as_ref(), source.fs_offset, fs_len, &mut scratch, 0, opts.quiet)?;
        let scratch_path = scratch.staging_path().to_path_buf();
        tracing::info!("replaying the journal on the copy");
        fsck::replay_journal(&scratch_path, 0)?;
        let replayed = LocalFileSource::open(&scratch_path)
            .map_err(|err| ConvertError::Open { path: scratch_path.clone(), err })?;
        let sb = Superblock::read(&replayed, 0).map_err(|err| ConvertError::Io {
            context: "reading the superblock of",
            target: scratch_path.display().to_string(),
            offset: 0,
            err,
        })?;
        if sb.is_none_or(|s| s.needs_recovery) {
            return Err(ConvertError::JournalNotReplayed);
        }
        copy_filesystem(&replayed, 0, fs_len, sink.as_mut(), disk.root_start, true)?
        // `scratch` is dropped here, removing the scratch copy.
    } else {
        copy_filesystem(src.as_ref(), source.fs_offset, fs_len, sink.as_mut(), disk.root_start, opts.quiet)?
    };
    tracing::info!(bytes = copied, "copied the root filesystem");
    let staging = sink.staging_path().to_path_buf();

    // Plan the edits again from the copy: after a replay, its files are the ones to edit.
    let mut fs = Ext2Fs::open(&staging, disk.root_start, true)?;
    let mut layout = source.clone();
    layout.fs.needs_recovery = false;
    let mut final_plan = plan_from_fs(src.as_ref(), layout, &fs, &plan_opts)?;
    final_plan.journal_replay = first_plan.journal_replay;
    final_plan.warnings = first_plan.warnings.clone();
    apply_edits(&mut fs, &final_plan)?;
    for ird in &final_plan.initramfs {
        let bytes = drivers::rebuild(&fs, ird)?;
        let free = fs.free_bytes();
        // The original stays as the backup, so the new one needs room of its own.
        let need = bytes.len() as u64 + (4 << 20);
        if free < need {
            return Err(DriverError::NoRoom { path: ird.path.clone(), need, free }.into());
        }
        fs.replace_file(&ird.path, &bytes)?;
        tracing::info!(path = %ird.path, bytes = bytes.len(), added = ird.add.len(), "rebuilt the initramfs");
    }
    fs.close()?;
    fsck::check_clean(&staging, disk.root_start)?;

    // The first MiB goes last: until then the image has no bootable MBR.
    let boot_sector = grub::patch_boot_img(&images.boot_img, disk.core_lba);
    let disk_id = u32::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..4].try_into().expect("4 bytes"));
    for (offset, bytes) in disk.boot_regions(&boot_sector, &images.core_img, disk_id, uuid::Uuid::new_v4())? {
        sink.write_all_at(offset, &bytes).map_err(|err| ConvertError::Io {
            context: "writing",
            target: staging.display().to_string(),
            offset,
            err,
        })?;
    }
    let dest = sink.describe();
    sink.commit().map_err(|err| ConvertError::Io { context: "committing", target: dest, offset: 0, err })?;
    Ok(ConvertReport { plan: final_plan, bytes_copied: copied, seconds: started.elapsed().as_secs_f64() })
}

fn check_destination(opts: &ConvertOptions) -> Result<(), ConvertError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dest_meta) = std::fs::metadata(&opts.dest) else { return Ok(()) };
    let src_meta =
        std::fs::metadata(&opts.source).map_err(|err| ConvertError::Open { path: opts.source.clone(), err })?;
    if dest_meta.dev() == src_meta.dev() && dest_meta.ino() == src_meta.ino() {
        return Err(ConvertError::DestIsSource(opts.dest.clone()));
    }
    if !opts.force {
        return Err(ConvertError::DestExists { path: opts.dest.clone() });
    }
    Ok(())
}

/// Copies `len` bytes of filesystem from `src_off` to `dst_off`, skipping holes and zeros.
fn copy_filesystem(
    src: &dyn BlockSource,
    src_off: u64,
    len: u64,
    sink: &mut dyn BlockSink,
    dst_off: u64,
    quiet: bool,
) -> Result<u64, ConvertError> {
    let end = src_off + len;
    let ranges: Vec<(u64, u64)> = src
        .data_ranges()
        .map_err(|err| ConvertError::Io { context: "mapping the data of", target: src.describe(), offset: 0, err })?
        .into_iter()
        .map(|r| (r.start.max(src_off), r.end.min(end)))
        .filter(|(s, e)| s < e)
        .collect();
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let mut progress = Progress::new("copying", total, quiet);
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut written = 0u64;
    for (start, stop) in ranges {
        let mut pos = start;
        while pos < stop {
            let n = ((stop - pos) as usize).min(COPY_CHUNK);
            let chunk = &mut buf[..n];
            src.read_exact_at(pos, chunk).map_err(|err| ConvertError::Io {
                context: "reading",
                target: src.describe(),
                offset: pos,
                err,
            })?;
            if chunk.iter().any(|&b| b != 0) {
                let at = dst_off + (pos - src_off);
                sink.write_all_at(at, chunk).map_err(|err| ConvertError::Io {
                    context: "writing",
                    target: sink.staging_path().display().to_string(),
                    offset: at,
                    err,
                })?;
                written += n as u64;
            }
            progress.add(n as u64);
            pos += n as u64;
        }
    }
    progress.finish();
    Ok(written)
}

fn apply_edits(fs: &mut Ext2Fs, plan: &Plan) -> Result<(), ConvertError> {
    for e in &plan.edits {
        match e.action {
            EditAction::Rewrite => {
                let text = e.new_text.as_deref().expect("a rewrite has new text");
                fs.replace_file(&e.path, text.as_bytes())?;
            }
            EditAction::Create => {
                let text = e.new_text.as_deref().expect("a create has text");
                let (dir, name) = e.path.rsplit_once('/').expect("absolute path");
                let like = e.like.as_deref().unwrap_or(dir);
                fs.create_file_like(if dir.is_empty() { "/" } else { dir }, name, like, 0o644, text.as_bytes())?;
            }
            EditAction::MoveAside => {
                let name = e.path.rsplit('/').next().expect("a name");
                fs.rename(&e.path, &format!("{name}{BACKUP_SUFFIX}"))?;
            }
        }
        tracing::info!(path = %e.path, action = ?e.action, "edited");
    }
    Ok(())
}
