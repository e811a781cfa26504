//! Which OS a guest runs, from its release files, and how it boots userspace: init system
//! and SELinux mode. Read only; nothing from the guest is executed.

use serde::{Deserialize, Serialize};

use crate::ext2fs::{Ext2Error, Ext2Fs};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OsInfo {
    /// Short id: debian, ubuntu, amzn, rhel, centos, fedora, sles, … or "unknown".
    pub distro: String,
    pub version: String,
    /// debian, rhel, suse or unknown.
    pub family: String,
    pub pretty_name: String,
    /// Which file said so.
    pub source: String,
    /// systemd, upstart or sysvinit.
    pub init_system: String,
    /// enforcing, permissive, disabled, or absent.
    pub selinux: String,
}

/// KEY=value pairs of an os-release / lsb-release style file, quotes removed.
pub fn parse_kv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

fn family_of(id: &str, like: &str) -> &'static str {
    let all = format!("{id} {like}");
    if all.split_whitespace().any(|w| ["debian", "ubuntu"].contains(&w)) {
        "debian"
    } else if all
        .split_whitespace()
        .any(|w| ["rhel", "centos", "fedora", "amzn", "ol", "rocky", "almalinux"].contains(&w))
    {
        "rhel"
    } else if all.split_whitespace().any(|w| ["suse", "sles", "opensuse"].contains(&w)) {
        "suse"
    } else {
        "unknown"
    }
}

/// Parses a `redhat-release` / `system-release` line such as
/// "CentOS release 6.10 (Final)" or "Amazon Linux AMI release 2018.03".
pub fn parse_release_line(line: &str) -> (String, String) {
    let lower = line.to_lowercase();
    let distro = if lower.starts_with("amazon linux") {
        "amzn"
    } else if lower.starts_with("centos") {
        "centos"
    } else if lower.starts_with("red hat") {
        "rhel"
    } else if lower.starts_with("fedora") {
        "fedora"
    } else if lower.starts_with("oracle") {
        "ol"
    } else {
        "unknown"
    };
    let version =
        line.split_whitespace().skip_while(|w| !w.eq_ignore_ascii_case("release")).nth(1).unwrap_or("").to_string();
    (distro.to_string(), version)
}

fn read(fs: &Ext2Fs, path: &str) -> Result<Option<String>, Ext2Error> {
    Ok(fs.try_read_file(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

pub fn detect(fs: &Ext2Fs) -> Result<OsInfo, Ext2Error> {
    let mut os = OsInfo { distro: "unknown".into(), family: "unknown".into(), ..Default::default() };
    let os_release = match read(fs, "/etc/os-release")? {
        Some(text) => Some(text),
        None => read(fs, "/usr/lib/os-release")?,
    };
    if let Some(text) = os_release {
        let kv = parse_kv(&text);
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        os.distro = get("ID");
        os.version = get("VERSION_ID");
        os.pretty_name = get("PRETTY_NAME");
        os.family = family_of(&os.distro, &get("ID_LIKE")).into();
        os.source = "/etc/os-release".into();
    } else {
        for f in ["/etc/system-release", "/etc/redhat-release"] {
            if let Some(text) = read(fs, f)? {
                let line = text.lines().next().unwrap_or("").trim().to_string();
                let (distro, version) = parse_release_line(&line);
                os = OsInfo {
                    family: family_of(&distro, "").into(),
                    distro,
                    version,
                    pretty_name: line,
                    source: f.into(),
                    ..os
                };
                break;
            }
        }
        if os.source.is_empty()
            && let Some(text) = read(fs, "/etc/lsb-release")?
        {
            let kv = parse_kv(&text);
            let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
            os.distro = get("DISTRIB_ID").to_lowercase();
            os.version = get("DISTRIB_RELEASE");
            os.pretty_name = get("DISTRIB_DESCRIPTION");
            os.family = family_of(&os.distro, "").into();
            os.source = "/etc/lsb-release".into();
        }
        if os.source.is_empty()
            && let Some(text) = read(fs, "/etc/debian_version")?
        {
            os.distro = "debian".into();
            os.version = text.trim().to_string();
            os.family = "debian".into();
            os.pretty_name = format!("Debian {}", os.version);
            os.source = "/etc/debian_version".into();
        }
        if os.source.is_empty()
            && let Some(text) = read(fs, "/etc/issue")?
        {
            os.pretty_name = text.lines().next().unwrap_or("").replace("\\n", "").replace("\\l", "").trim().to_string();
            os.source = "/etc/issue".into();
        }
    }
    os.init_system = init_system(fs)?.into();
    os.selinux = selinux(fs)?;
    Ok(os)
}

/// The guest's architecture from the ELF header of its init or shell: x86_64 or i386.
/// The programs whose ELF header tells the architecture, in the order tried.
pub const ARCHITECTURE_PROBES: [&str; 4] = ["/sbin/init", "/bin/sh", "/bin/bash", "/usr/bin/env"];

pub fn architecture(fs: &Ext2Fs) -> Result<Option<&'static str>, Ext2Error> {
    for p in ARCHITECTURE_PROBES {
        if let Some(b) = fs.try_read_head(p, 64)?
            && b.len() >= 20
            && b.starts_with(b"\x7fELF")
        {
            return Ok(match u16::from_le_bytes([b[18], b[19]]) {
                62 => Some("x86_64"),
                3 => Some("i386"),
                183 => Some("arm64"),
                _ => None,
            });
        }
    }
    Ok(None)
}

fn init_system(fs: &Ext2Fs) -> Result<&'static str, Ext2Error> {
    if let Some(r) = fs.try_resolve("/sbin/init")?
        && r.path.contains("systemd")
    {
        return Ok("systemd");
    }
    if fs.try_resolve("/sbin/initctl")?.is_some() && fs.try_resolve("/etc/init")?.is_some() {
        return Ok("upstart");
    }
    if fs.try_resolve("/lib/systemd/systemd")?.is_some() && fs.try_resolve("/etc/inittab")?.is_none() {
        return Ok("systemd");
    }
    Ok("sysvinit")
}

fn selinux(fs: &Ext2Fs) -> Result<String, Ext2Error> {
    let Some(text) = read(fs, "/etc/selinux/config")? else { return Ok("absent".into()) };
    Ok(parse_kv(&text)
        .into_iter()
        .find(|(k, _)| k == "SELINUX")
        .map_or_else(|| "absent".into(), |(_, v)| v.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_lines() {
        assert_eq!(parse_release_line("CentOS release 6.10 (Final)"), ("centos".into(), "6.10".into()));
        assert_eq!(parse_release_line("Amazon Linux AMI release 2018.03"), ("amzn".into(), "2018.03".into()));
        assert_eq!(
            parse_release_line("Red Hat Enterprise Linux Server release 5.11 (Tikanga)"),
            ("rhel".into(), "5.11".into())
        );
        assert_eq!(family_of("amzn", ""), "rhel");
        assert_eq!(family_of("linuxmint", "ubuntu debian"), "debian");
    }

    #[test]
    fn key_values() {
        let kv = parse_kv("ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\n");
        assert_eq!(kv[1], ("VERSION_ID".into(), "12".into()));
        assert_eq!(kv[2].1, "Debian GNU/Linux 12 (bookworm)");
    }
}
