//! How the library reports progress: it calls a [`Progress`] observer and never prints. The
//! command line draws bars or log lines from these calls; library users may ignore them.

/// Receives progress of the long stages of a conversion.
pub trait Progress: Send + Sync {
    /// A stage with `total` units (bytes) of work begins.
    fn start(&self, stage: &str, total: u64);
    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);
    /// The current stage is over.
    fn finish(&self);
    /// A one-line note on what the pipeline does next ("replaying the journal …").
    fn note(&self, _message: &str) {}
    /// Whether the work being reported is no longer wanted: a copy asks between chunks and
    /// stops with [`crate::io::wrappers::CopyError::Stopped`].
    fn stop_requested(&self) -> bool {
        false
    }
}

/// Discards all progress.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
