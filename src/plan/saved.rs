//! Saved plans (`pv2hvm plan -o`): loading one into typed values, and checking a plan made
//! now against it. Drift is a comparison of typed values: the filesystem UUID first, then
//! the SHA-256 of every file the plan read, then everything else a review sees.

use std::path::Path;

use super::{Plan, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("reading the saved plan {path}")]
    Read {
        path: String,
        #[source]
        err: std::io::Error,
    },
    #[error("{path}: not a pv2hvm plan: {why}")]
    Invalid { path: String, why: String },
    #[error("{path}: plan schema_version {found} is not supported (this pv2hvm reads {SCHEMA_VERSION})")]
    Version { path: String, found: u64 },
}

/// Loads a saved plan. The version is checked before the rest is read, so a plan of another
/// version is refused as such rather than as malformed.
pub fn load(path: &Path) -> Result<Plan, SavedPlanError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| SavedPlanError::Read { path: shown.clone(), err })?;
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<u64>,
    }
    let invalid = |why: String| SavedPlanError::Invalid { path: shown.clone(), why };
    let v: Version = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    match v.schema_version {
        None => return Err(invalid("no schema_version".into())),
        Some(found) if found != u64::from(SCHEMA_VERSION) => {
            return Err(SavedPlanError::Version { path: shown, found });
        }
        Some(_) => {}
    }
    serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))
}

/// Refuses a plan made now that drifted from the saved one, saying what drifted.
pub fn check(saved: &Plan, now: &Plan) -> Result<(), crate::Error> {
    drift(saved, now).map_err(crate::Error::Drift)
}

/// Compares a plan made now with a saved one; `Err` says what drifted.
pub fn drift(saved: &Plan, now: &Plan) -> Result<(), String> {
    let (was, is) = (&saved.source_layout.fs.uuid, &now.source_layout.fs.uuid);
    if was != is {
        return Err(format!("the filesystem UUID is {is}, the plan was made for {was}"));
    }
    let now_files: Vec<(&str, &str)> = now.hashed_files().collect();
    for (path, hash) in saved.hashed_files() {
        match now_files.iter().find(|(p, _)| *p == path) {
            Some((_, h)) if *h == hash => {}
            Some(_) => return Err(format!("{path} changed since the plan was made")),
            None => return Err(format!("{path} is no longer edited the same way")),
        }
    }
    if saved.options != now.options {
        return Err(format!(
            "the options differ: the plan has {}, now {}",
            serde_json::to_string(&saved.options).unwrap_or_default(),
            serde_json::to_string(&now.options).unwrap_or_default()
        ));
    }
    // Where the plan was made from and for, and the notes on how it was read (which snapshot,
    // how many blocks) do not matter; nor does the free block count, which every write to a
    // live volume changes (a plan made from an older snapshot of it is applied to a fresh one;
    // the conversion checks the room it needs itself). Everything else does.
    let mut source_layout = saved.source_layout.clone();
    source_layout.fs.free_blocks = now.source_layout.fs.free_blocks;
    let same_place = Plan {
        source: now.source.clone(),
        destination: now.destination.clone(),
        source_reads: now.source_reads,
        files_read: now.files_read.clone(),
        notes: now.notes.clone(),
        source_layout,
        ..saved.clone()
    };
    if same_place != *now {
        return Err(format!("the plan made now differs in `{}`", first_difference(&same_place, now)));
    }
    Ok(())
}

/// The first top-level field in which two plans differ, by its JSON name.
fn first_difference(a: &Plan, b: &Plan) -> &'static str {
    let fields: [(&'static str, bool); 17] = [
        ("schema_version", a.schema_version == b.schema_version),
        ("ami", a.ami == b.ami),
        ("playbook", a.playbook == b.playbook),
        ("os", a.os == b.os),
        ("source_layout", a.source_layout == b.source_layout),
        ("disk", a.disk == b.disk),
        ("device_map", a.device_map == b.device_map),
        ("bootloader", a.bootloader == b.bootloader),
        ("default_kernel", a.default_kernel == b.default_kernel),
        ("kernels", a.kernels == b.kernels),
        ("edits", a.edits == b.edits),
        ("initramfs", a.initramfs == b.initramfs),
        ("target", a.target == b.target),
        ("journal_replay", a.journal_replay == b.journal_replay),
        ("warnings", a.warnings == b.warnings),
        ("options", a.options == b.options),
        ("source", a.source == b.source),
    ];
    fields.iter().find(|(_, same)| !same).map_or("destination", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        std::fs::write(&p, r#"{"schema_version": 9}"#).unwrap();
        assert!(matches!(load(&p), Err(SavedPlanError::Version { found: 9, .. })));
        std::fs::write(&p, r#"{"schema_version": 1}"#).unwrap();
        assert!(matches!(load(&p), Err(SavedPlanError::Invalid { .. })));
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(load(&p), Err(SavedPlanError::Invalid { .. })));
    }
}
