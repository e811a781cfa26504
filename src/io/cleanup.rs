//! What a run must not leave behind if it is interrupted: staged outputs (`DST.partial`) and
//! scratch copies register here while they exist, long-running children (QEMU) while they
//! run, and an interrupt handler removes and kills them all with [`remove_all`]. A guard
//! unregisters on drop.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

static FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NOTE: Mutex<Option<String>> = Mutex::new(None);

/// Keeps a note for the interrupt message until dropped.
pub struct InterruptNote;

/// What an interrupt should tell the user besides removing files (an image edited in place).
pub fn note_on_interrupt(note: String) -> InterruptNote {
    *NOTE.lock().unwrap_or_else(PoisonError::into_inner) = Some(note);
    InterruptNote
}

impl Drop for InterruptNote {
    fn drop(&mut self) {
        *NOTE.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The note an interrupt handler prints, if any.
pub fn interrupt_note() -> Option<String> {
    NOTE.lock().unwrap_or_else(PoisonError::into_inner).clone()
}
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Keeps a child process registered until dropped.
pub struct RegisteredChild(u32);

/// Registers a child process to kill if the run is interrupted.
pub fn register_child(pid: u32) -> RegisteredChild {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner).push(pid);
    RegisteredChild(pid)
}

impl Drop for RegisteredChild {
    fn drop(&mut self) {
        CHILDREN.lock().unwrap_or_else(PoisonError::into_inner).retain(|&p| p != self.0);
    }
}

fn files() -> MutexGuard<'static, Vec<PathBuf>> {
    FILES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `path` registered until dropped.
pub struct Registered(PathBuf);

/// Registers a file to remove if the run is interrupted.
pub fn register(path: &Path) -> Registered {
    files().push(path.to_path_buf());
    Registered(path.to_path_buf())
}

impl Registered {
    /// Runs `f` (a rename into place, say) and unregisters, with no interrupt handler able to
    /// run in between.
    pub fn settle<T>(self, f: impl FnOnce() -> T) -> T {
        let mut list = files();
        let out = f();
        list.retain(|p| p != &self.0);
        drop(list);
        std::mem::forget(self);
        out
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        files().retain(|p| p != &self.0);
    }
}

/// Kills every registered child and removes every registered file; returns the paths
/// removed. Holds the registry until the process exits, so nothing registers or settles
/// afterwards.
pub fn remove_all() -> Vec<PathBuf> {
    let children = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
    for &pid in children.iter() {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) only sends a signal; the pid is a child this process started and
            // has not reaped (its guard is still alive).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    std::mem::forget(children);
    let list = files();
    let mut removed = Vec::new();
    for p in list.iter() {
        if std::fs::remove_file(p).is_ok() {
            removed.push(p.clone());
        }
    }
    // Keep the lock: the process is about to exit, and no other thread may commit now.
    std::mem::forget(list);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_files_are_known_until_settled_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.partial");
        let b = dir.path().join("b.partial");
        let ga = register(&a);
        let gb = register(&b);
        assert!(files().contains(&a) && files().contains(&b));
        drop(ga);
        assert!(!files().contains(&a));
        let n = gb.settle(|| 7);
        assert_eq!(n, 7);
        assert!(!files().contains(&b));
    }
}
