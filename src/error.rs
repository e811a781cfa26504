//! Every failure pv2hvm reports, classified: an [`ErrorKind`] says whose fault it was and
//! maps to the exit code documented in the README. Module errors carry paths and offsets;
//! the command line adds context and prints the whole chain.

use crate::boot::check::BootCheckError;
use crate::boot::grub::GrubError;
use crate::disk::detect::DetectError;
use crate::disk::layout::LayoutError;
use crate::ext2fs::Ext2Error;
use crate::guest::drivers::DriverError;
use crate::guest::inspect::InspectError;
use crate::guest::playbook::PlaybookError;
use crate::host::fsck::FsckError;
use crate::io::OpenError;
use crate::io::wrappers::CopyError;
use crate::plan::saved::SavedPlanError;

/// Whose fault a failure was, and so the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bug or an unexpected state in pv2hvm itself.
    Internal,
    /// The input is not something pv2hvm can or will convert (also: drift, an existing
    /// destination, a disk too small).
    Refused,
    /// Reading the source failed.
    Source,
    /// Writing the destination failed.
    Destination,
    /// A host tool is missing or failed (grub-mkimage, e2fsck, QEMU).
    HostTool,
    /// The result failed verification: e2fsck found it unclean, or it did not boot.
    Verify,
    /// An AWS call failed or timed out (after its retries).
    Cloud,
}

impl ErrorKind {
    /// Every kind, for the tests that keep exit codes distinct and documented.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Internal,
        ErrorKind::Refused,
        ErrorKind::Source,
        ErrorKind::Destination,
        ErrorKind::HostTool,
        ErrorKind::Verify,
        ErrorKind::Cloud,
    ];

    /// The process exit code for this kind (README, "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Refused => 3,
            ErrorKind::Source => 4,
            ErrorKind::Destination => 5,
            ErrorKind::HostTool => 6,
            ErrorKind::Cloud => 7,
            ErrorKind::Verify => 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Grub(#[from] GrubError),
    #[error("editing the converted filesystem")]
    Edit(#[source] Ext2Error),
    #[error(transparent)]
    Fsck(#[from] FsckError),
    #[error("copying {what}")]
    Copy {
        what: String,
        #[source]
        err: CopyError,
    },
    #[error("writing {target} at offset {offset}")]
    Write {
        target: String,
        offset: u64,
        #[source]
        err: std::io::Error,
    },
    #[error("committing {target}")]
    Commit {
        target: String,
        #[source]
        err: std::io::Error,
    },
    #[error("the journal of {0} still needs recovery after e2fsck replayed it")]
    JournalNotReplayed(String),
    #[error("injecting drivers")]
    Drivers(#[from] DriverError),
    #[error("loading playbooks")]
    Playbook(#[from] PlaybookError),
    #[error(transparent)]
    SavedPlan(#[from] SavedPlanError),
    #[error("the source has drifted from the saved plan: {0}; make a new plan")]
    Drift(String),
    #[error(transparent)]
    BootCheck(#[from] BootCheckError),
    #[error("the converted image did not boot to userspace with root mounted read-write: {0}")]
    BootFailed(String),
    #[error("{0}")]
    Refused(String),
    #[cfg(feature = "aws")]
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        #[cfg(feature = "aws")]
        if let Some(kind) = aws_kind(self) {
            return kind;
        }
        match self {
            Error::Open(e) => match e {
                OpenError::Source { .. } => ErrorKind::Source,
                OpenError::Destination { .. } => ErrorKind::Destination,
                OpenError::Cloud { .. } | OpenError::DestExists(_) | OpenError::DestIsSource(_) => ErrorKind::Refused,
            },
            Error::Inspect(e) => match e {
                InspectError::Detect(DetectError::Io { .. }) => ErrorKind::Source,
                InspectError::Filesystem { err, .. } => ext2_kind(err),
                _ => ErrorKind::Refused,
            },
            Error::Layout(_) | Error::Drift(_) | Error::SavedPlan(_) => ErrorKind::Refused,
            Error::Grub(_) | Error::BootCheck(_) => ErrorKind::HostTool,
            Error::Edit(e) => ext2_kind(e),
            Error::Fsck(FsckError::Failed { .. }) => ErrorKind::Verify,
            Error::Fsck(_) => ErrorKind::HostTool,
            Error::Copy { err: CopyError::Read { .. }, .. } => ErrorKind::Source,
            // Only ever asked for after another error, which is the one reported.
            Error::Copy { err: CopyError::Stopped, .. } => ErrorKind::Internal,
            Error::Copy { err: CopyError::Write { .. }, .. } | Error::Write { .. } | Error::Commit { .. } => {
                ErrorKind::Destination
            }
            Error::JournalNotReplayed(_) => ErrorKind::Verify,
            Error::Drivers(DriverError::Ext2(e)) => ext2_kind(e),
            Error::Drivers(_) => ErrorKind::Refused,
            Error::Playbook(_) => ErrorKind::Refused,
            Error::BootFailed(_) => ErrorKind::Verify,
            Error::Refused(_) => ErrorKind::Refused,
            #[cfg(feature = "aws")]
            Error::Aws(crate::aws::AwsError::Refused(_)) => ErrorKind::Refused,
            #[cfg(feature = "aws")]
            Error::Aws(_) => ErrorKind::Cloud,
        }
    }
}

/// An AWS call under an I/O error (an EBS block that could not be fetched or put) is AWS's
/// failure, whichever side of the copy it was on.
#[cfg(feature = "aws")]
fn aws_kind(e: &Error) -> Option<ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(aws) = c.downcast_ref::<crate::aws::AwsError>() {
            return Some(match aws {
                crate::aws::AwsError::Refused(_) => ErrorKind::Refused,
                _ => ErrorKind::Cloud,
            });
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<crate::aws::AwsError>())
        {
            return Some(ErrorKind::Cloud);
        }
        cause = c.source();
    }
    None
}

/// A libext2fs failure under an I/O error is the source's; otherwise the filesystem itself
/// refused (damaged, full, or a feature libext2fs cannot handle).
fn ext2_kind(e: &Ext2Error) -> ErrorKind {
    if e.io.is_some() { ErrorKind::Source } else { ErrorKind::Refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let kinds = ErrorKind::ALL;
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        let readme = include_str!("../README.md");
        for k in kinds {
            assert!(
                readme.contains(&format!("| {} |", k.exit_code())),
                "README's table lacks exit code {}",
                k.exit_code()
            );
        }
    }

    #[test]
    fn copy_sides_are_told_apart() {
        let read =
            Error::Copy { what: "x".into(), err: CopyError::Read { offset: 0, err: std::io::Error::other("eio") } };
        let write =
            Error::Copy { what: "x".into(), err: CopyError::Write { offset: 0, err: std::io::Error::other("enospc") } };
        assert_eq!(read.kind(), ErrorKind::Source);
        assert_eq!(write.kind(), ErrorKind::Destination);
    }
}
