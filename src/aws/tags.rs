//! The `pv2hvm:*` tags: the state of record. Every resource a run makes carries its run id,
//! so `cleanup --run-id` finds it from any machine; finished AMIs carry the source and the
//! options hash, so a second `migrate` finds them instead of making another.

pub const RUN_ID: &str = "pv2hvm:run-id";
pub const SOURCE: &str = "pv2hvm:source";
pub const ROLE: &str = "pv2hvm:role";
pub const SPEC_HASH: &str = "pv2hvm:spec-hash";
pub const PLAN_HASH: &str = "pv2hvm:plan-hash";
pub const VERSION: &str = "pv2hvm:version";
pub const LAYOUT: &str = "pv2hvm:layout";
pub const CREATED: &str = "pv2hvm:created";
/// On a root snapshot: what registering an AMI from it needs, so a resumed run can register
/// without planning again.
pub const ARCH: &str = "pv2hvm:arch";
pub const ENA: &str = "pv2hvm:ena";
pub const SRIOV: &str = "pv2hvm:sriov";
pub const NITRO: &str = "pv2hvm:nitro";
/// On a data snapshot: the device it maps to.
pub const DEVICE: &str = "pv2hvm:device";
/// On an instance `--stop` stopped: the run that stopped it, so a resumed run starts it again.
pub const STOPPED_BY: &str = "pv2hvm:stopped-by";

/// What a tagged resource is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A snapshot taken only to read the source; removed on success unless --keep-temp.
    Temporary,
    /// The new AMI's root snapshot.
    Root,
    /// Another volume of the instance, snapshotted for the new AMI.
    Data,
    /// The registered HVM AMI (and its copies).
    Image,
    /// A replacement instance (--launch).
    Instance,
    /// A temporary snapshot kept on purpose (--keep-temp): no later run removes it.
    Kept,
    /// A snapshot CopyImage made behind a copy of the AMI in another region.
    Copy,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Temporary => "temporary",
            Role::Root => "root",
            Role::Data => "data",
            Role::Image => "image",
            Role::Instance => "instance",
            Role::Kept => "kept",
            Role::Copy => "copy",
        }
    }
}

/// The tags of one resource of a run.
pub fn run_tags(run_id: &str, source: &str, role: Role) -> Vec<(String, String)> {
    vec![
        (RUN_ID.into(), run_id.into()),
        (SOURCE.into(), source.into()),
        (ROLE.into(), role.as_str().into()),
        (VERSION.into(), env!("CARGO_PKG_VERSION").into()),
        (CREATED.into(), now_rfc3339()),
    ]
}

/// The tags of one resource of a run's work on `source` with the options hashed as `spec_hash`:
/// the run's tags and the hash, by which later runs find it.
pub fn work_tags(run_id: &str, source: &str, role: Role, spec_hash: &str) -> Vec<(String, String)> {
    let mut t = run_tags(run_id, source, role);
    t.push((SPEC_HASH.into(), spec_hash.into()));
    t
}

/// Now, as an RFC 3339 UTC timestamp.
pub fn now_rfc3339() -> String {
    rfc3339(now_secs() as u64)
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The value of `key` among `(key, value)` pairs.
pub fn get<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// At most this many tags on one EC2 resource, keys and values at most this long (EC2 user
/// guide, "Tag restrictions").
pub const MAX_TAGS: usize = 50;
pub const MAX_KEY: usize = 128;
pub const MAX_VALUE: usize = 256;

/// pv2hvm's own tags first, then the source's as far as EC2 takes them: no `aws:` keys, values
/// cut to 256 characters, keys over 128 dropped, no more than 50 in all. Returns the tags and a
/// note of what was dropped or cut.
pub fn fit(own: Vec<(String, String)>, user: &[(String, String)]) -> (Vec<(String, String)>, Vec<String>) {
    let mut out = own;
    let mut notes = Vec::new();
    for (k, v) in user {
        if out.iter().any(|(o, _)| o == k) {
            continue;
        }
        if k.to_ascii_lowercase().starts_with("aws:") || k.chars().count() > MAX_KEY {
            notes.push(format!(
                "the tag {k:?} was not copied: EC2 takes no aws: keys or keys over {MAX_KEY} characters"
            ));
            continue;
        }
        if out.len() >= MAX_TAGS {
            notes.push(format!("the tag {k:?} was not copied: a resource holds at most {MAX_TAGS} tags"));
            continue;
        }
        let value: String = v.chars().take(MAX_VALUE).collect();
        if value.len() < v.len() {
            notes.push(format!("the tag {k:?} was cut to {MAX_VALUE} characters"));
        }
        out.push((k.clone(), value));
    }
    (out, notes)
}

/// Whether EC2 takes `name` as an AMI name: 3 to 128 characters of letters, digits, spaces
/// and `( ) [ ] . / - ' @ _` (EC2 API reference, RegisterImage `Name`).
pub fn valid_ami_name(name: &str) -> bool {
    (3..=128).contains(&name.chars().count()) && name.chars().all(ami_name_char)
}

fn ami_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ()[]./-'@_".contains(c)
}

/// An AMI name made of `base` (a source's Name tag, say) and `suffix`: characters EC2 refuses
/// become `-`, runs of them one, and the base is cut so that the whole fits 128 characters
/// with the suffix, which keeps it unique.
pub fn ami_name(base: &str, suffix: &str) -> String {
    let mut clean = String::new();
    let mut after_dash = false;
    for c in base.chars() {
        if !ami_name_char(c) || c == '-' {
            // A refused character, with the spaces around it, becomes one dash.
            clean.truncate(clean.trim_end_matches(' ').len());
            if !clean.ends_with('-') {
                clean.push('-');
            }
            after_dash = true;
        } else if !(after_dash && c == ' ') {
            clean.push(c);
            after_dash = false;
        }
    }
    let clean = clean.trim_matches(|c| c == '-' || c == ' ');
    let room = 128usize.saturating_sub(suffix.chars().count());
    let mut name: String = clean.chars().take(room).collect();
    if name.chars().count() + suffix.chars().count() < 3 {
        name = format!("pv2hvm-{name}");
    }
    format!("{name}{suffix}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_868_000), "2026-11-28T12:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ami_names_keep_to_what_ec2_takes() {
        assert_eq!(super::ami_name("db, primary", "-hvm-1a2b3c4d"), "db-primary-hvm-1a2b3c4d");
        assert_eq!(super::ami_name("web (eu) [2]", "-hvm"), "web (eu) [2]-hvm");
        assert_eq!(super::ami_name("☃", ""), "pv2hvm-");
        let long = super::ami_name(&"x".repeat(300), "-hvm-12345678");
        assert_eq!(long.len(), 128);
        assert!(long.ends_with("-hvm-12345678"));
        for n in ["db-primary-hvm-1a2b3c4d", "web (eu) [2]-hvm", long.as_str()] {
            assert!(super::valid_ami_name(n), "{n}");
        }
        assert!(!super::valid_ami_name("db, primary") && !super::valid_ami_name("ab"));
    }

    #[test]
    fn tags_fit_what_ec2_takes_and_pv2hvm_s_own_come_first() {
        let own: Vec<(String, String)> = (0..10).map(|i| (format!("pv2hvm:{i}"), "x".into())).collect();
        let mut user: Vec<(String, String)> = (0..45).map(|i| (format!("k{i:02}"), "v".into())).collect();
        user.push(("aws:cloudformation:stack-name".into(), "s".into()));
        user.insert(0, ("long".into(), "y".repeat(300)));
        let (tags, notes) = super::fit(own, &user);
        assert_eq!(tags.len(), 50);
        assert!(tags[..10].iter().all(|(k, _)| k.starts_with("pv2hvm:")));
        assert_eq!(tags[10].1.len(), 256);
        assert!(notes.iter().any(|n| n.contains("aws: keys")), "{notes:?}");
        assert_eq!(notes.iter().filter(|n| n.contains("at most 50")).count(), 6, "{notes:?}");
    }
}
