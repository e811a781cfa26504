//! Playbooks: what differs per distro family, as data. Each is a TOML file with detection
//! rules, the initramfs generator and its config, the console mechanism, files to move aside
//! and extra kernel arguments. The shipped ones are compiled in; `--playbooks DIR` adds the
//! user's own, which are tried first. `generic` matches anything and is tried last.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::os::OsInfo;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub detect: Detect,
    #[serde(default)]
    pub initramfs: InitramfsRules,
    #[serde(default)]
    pub console: ConsoleRules,
    #[serde(default)]
    pub files: FileRules,
    #[serde(default)]
    pub kernel_args: KernelArgs,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// os-release IDs (or the ids derived from release files); empty matches any.
    #[serde(default)]
    pub distro: Vec<String>,
    /// Version prefixes: "6" matches "6", "6.10"; empty matches any.
    #[serde(default)]
    pub version_prefix: Vec<String>,
    /// Guest paths that must all exist.
    #[serde(default)]
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitramfsRules {
    /// initramfs-tools, dracut or mkinitrd.
    pub generator: Option<String>,
    /// The generator config that keeps injected drivers in future rebuilds.
    pub config: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleRules {
    /// systemd, upstart or inittab.
    #[serde(default)]
    pub mechanism: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileRules {
    #[serde(default)]
    pub move_aside: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KernelArgs {
    #[serde(default)]
    pub always: Vec<String>,
    /// Added when the target includes Nitro.
    #[serde(default)]
    pub nitro: Vec<String>,
    /// Added when the target includes Xen HVM.
    #[serde(default)]
    pub xen: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("{path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: {err}")]
    Parse { path: String, err: toml::de::Error },
}

/// The shipped playbooks, in the order they are tried.
const SHIPPED: &[(&str, &str)] = &[
    ("amazon-linux-1.toml", include_str!("../../playbooks/amazon-linux-1.toml")),
    ("rhel-5.toml", include_str!("../../playbooks/rhel-5.toml")),
    ("rhel-6.toml", include_str!("../../playbooks/rhel-6.toml")),
    ("rhel-7.toml", include_str!("../../playbooks/rhel-7.toml")),
    ("ubuntu-12.04-14.04.toml", include_str!("../../playbooks/ubuntu-12.04-14.04.toml")),
    ("ubuntu-16.04.toml", include_str!("../../playbooks/ubuntu-16.04.toml")),
    ("debian-7.toml", include_str!("../../playbooks/debian-7.toml")),
    ("debian-8-12.toml", include_str!("../../playbooks/debian-8-12.toml")),
    ("generic.toml", include_str!("../../playbooks/generic.toml")),
];

pub fn parse(path: &str, text: &str) -> Result<Playbook, PlaybookError> {
    toml::from_str(text).map_err(|err| PlaybookError::Parse { path: path.to_string(), err })
}

/// The user's playbooks from `dir` (sorted by file name) followed by the shipped ones.
pub fn load(dir: Option<&Path>) -> Result<Vec<Playbook>, PlaybookError> {
    let mut out = Vec::new();
    if let Some(dir) = dir {
        let err = |err| PlaybookError::Read { path: dir.display().to_string(), err };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let shown = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|err| PlaybookError::Read { path: shown.clone(), err })?;
            out.push(parse(&shown, &text)?);
        }
    }
    for (name, text) in SHIPPED {
        out.push(parse(name, text).expect("shipped playbooks parse (checked by tests)"));
    }
    Ok(out)
}

impl Playbook {
    /// Whether the guest matches; `exists` tells whether a guest path exists, and its
    /// errors (a failed read) are passed on, never taken for "absent".
    pub fn matches<E>(&self, os: &OsInfo, exists: &dyn Fn(&str) -> Result<bool, E>) -> Result<bool, E> {
        let d = &self.detect;
        if !(d.distro.is_empty() || d.distro.contains(&os.distro))
            || !(d.version_prefix.is_empty()
                || d.version_prefix.iter().any(|p| os.version == *p || os.version.starts_with(&format!("{p}."))))
        {
            return Ok(false);
        }
        for f in &d.files {
            if !exists(f)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The first playbook that matches; the last one (the generic fallback, always loaded last)
/// when none does.
pub fn select<'a, E>(
    books: &'a [Playbook],
    os: &OsInfo,
    exists: &dyn Fn(&str) -> Result<bool, E>,
) -> Result<&'a Playbook, E> {
    for b in books {
        if b.matches(os, exists)? {
            return Ok(b);
        }
    }
    Ok(&books[books.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(distro: &str, version: &str) -> OsInfo {
        OsInfo { distro: distro.into(), version: version.into(), ..Default::default() }
    }

    fn pick(distro: &str, version: &str) -> String {
        let books = load(None).unwrap();
        select::<()>(&books, &os(distro, version), &|_| Ok(false)).unwrap().name.clone()
    }

    #[test]
    fn every_shipped_playbook_parses_and_is_selected_for_its_family() {
        assert_eq!(load(None).unwrap().len(), SHIPPED.len());
        assert_eq!(pick("amzn", "2018.03"), "amazon-linux-1");
        assert_eq!(pick("amzn", "2014.09"), "amazon-linux-1");
        assert_eq!(pick("amzn", "2"), "generic", "Amazon Linux 2 is not Amazon Linux 1");
        assert_eq!(pick("centos", "5.11"), "rhel-5");
        assert_eq!(pick("rhel", "6.0"), "rhel-6");
        assert_eq!(pick("centos", "6.10"), "rhel-6");
        assert_eq!(pick("centos", "7"), "rhel-7");
        assert_eq!(pick("rhel", "7.9"), "rhel-7");
        assert_eq!(pick("ubuntu", "12.04"), "ubuntu-12.04-14.04");
        assert_eq!(pick("ubuntu", "14.04"), "ubuntu-12.04-14.04");
        assert_eq!(pick("ubuntu", "16.04"), "ubuntu-16.04");
        assert_eq!(pick("debian", "7"), "debian-7");
        assert_eq!(pick("debian", "7.11"), "debian-7");
        assert_eq!(pick("debian", "12"), "debian-8-12");
        assert_eq!(pick("debian", "8"), "debian-8-12");
        assert_eq!(pick("debian", "70"), "generic", "a prefix is a whole version component");
        assert_eq!(pick("arch", ""), "generic");
    }

    #[test]
    fn playbook_data() {
        let books = load(None).unwrap();
        let rhel6 = books.iter().find(|b| b.name == "rhel-6").unwrap();
        assert_eq!(rhel6.kernel_args.xen, ["xen_pv_hvm=enable"]);
        assert_eq!(rhel6.console.mechanism, "upstart");
        let debian = books.iter().find(|b| b.name == "debian-8-12").unwrap();
        assert_eq!(debian.kernel_args.nitro, ["nvme_core.io_timeout=4294967295"]);
        assert_eq!(debian.initramfs.config.as_deref(), Some("/etc/initramfs-tools/modules"));
    }

    #[test]
    fn user_playbooks_come_first_and_file_rules_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("site.toml"),
            "name = \"site-debian\"\n[detect]\ndistro = [\"debian\"]\nfiles = [\"/etc/site-release\"]\n",
        )
        .unwrap();
        let books = load(Some(dir.path())).unwrap();
        assert_eq!(books[0].name, "site-debian");
        assert_eq!(
            select::<()>(&books, &os("debian", "12"), &|p| Ok(p == "/etc/site-release")).unwrap().name,
            "site-debian"
        );
        assert_eq!(select::<()>(&books, &os("debian", "12"), &|_| Ok(false)).unwrap().name, "debian-8-12");
        std::fs::write(dir.path().join("bad.toml"), "name = \"x\"\nbogus = 1\n").unwrap();
        assert!(matches!(load(Some(dir.path())), Err(PlaybookError::Parse { .. })));
    }
}
