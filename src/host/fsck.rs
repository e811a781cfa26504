//! e2fsck, the one host tool that needs a local file: journal replay on a filesystem-only
//! scratch copy before editing, and a forced read-only check of the staged disk after. The
//! filesystem is addressed inside a disk image as `image?offset=N`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error("e2fsck was not found: install the e2fsprogs package")]
    Missing,
    #[error("running e2fsck: {0}")]
    Spawn(std::io::Error),
    #[error("e2fsck {args} on {target} exited with {code}: {output}")]
    Failed { args: String, target: String, code: i32, output: String },
}

fn e2fsck() -> Result<PathBuf, FsckError> {
    super::find_on_path("e2fsck").ok_or(FsckError::Missing)
}

fn run(image: &Path, offset: u64, args: &[&str], ok: &[i32]) -> Result<String, FsckError> {
    let target = if offset == 0 { image.display().to_string() } else { format!("{}?offset={offset}", image.display()) };
    let out = Command::new(e2fsck()?).args(args).arg(&target).output().map_err(FsckError::Spawn)?;
    let code = out.status.code().unwrap_or(-1);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if ok.contains(&code) {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        let output = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
        Err(FsckError::Failed { args: args.join(" "), target, code, output })
    }
}

/// Replays the journal of the filesystem at `offset` (exit 0 or 1 is success). e2fsck drops
/// `?offset=` when it re-opens the filesystem after a replay: pass a filesystem-only image.
pub fn replay_journal(image: &Path, offset: u64) -> Result<(), FsckError> {
    run(image, offset, &["-E", "journal_only", "-y"], &[0, 1]).map(|_| ())
}

/// `e2fsck -fn`: a forced, read-only check that must find nothing.
pub fn check_clean(image: &Path, offset: u64) -> Result<(), FsckError> {
    run(image, offset, &["-f", "-n"], &[0]).map(|_| ())
}
