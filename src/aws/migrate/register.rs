//! After the root snapshot: RegisterImage (with the instance's other volumes and instance-store
//! mappings) and the replacement instance, each found by its tags first so that no run makes
//! one twice. The copies to other regions are in `copies`.

use super::{MigrateError, MigrateOptions, MigrateReport, Observer, Stage, WAIT};
use crate::aws::ec2::{self, ImageInfo, Mapping, SnapshotInfo, SourceInfo, tag_filter};
use crate::aws::tags::{self, Role};
use crate::aws::{Aws, AwsError};

/// The new AMI's root snapshot and what registering it needs (all of it also in its tags).
#[derive(Clone, Debug)]
pub struct RootSnapshot {
    pub id: String,
    pub size_gib: i32,
    pub architecture: String,
    pub ena: bool,
    pub sriov: bool,
    pub nitro: bool,
    pub plan_hash: String,
    pub layout: String,
    /// The instance's other volumes: (device, snapshot).
    pub data: Vec<(String, String)>,
}

impl RootSnapshot {
    /// The tags that let a later run register from this snapshot without planning.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![
            (tags::ARCH.into(), self.architecture.clone()),
            (tags::ENA.into(), self.ena.to_string()),
            (tags::SRIOV.into(), self.sriov.to_string()),
            (tags::NITRO.into(), self.nitro.to_string()),
            (tags::PLAN_HASH.into(), self.plan_hash.clone()),
            (tags::LAYOUT.into(), self.layout.clone()),
        ]
    }

    /// Reads back what [`RootSnapshot::tags`] wrote.
    pub fn from_tags(s: &SnapshotInfo, data: Vec<(String, String)>) -> Result<RootSnapshot, AwsError> {
        let get = |k: &str| {
            tags::get(&s.tags, k)
                .map(str::to_string)
                .ok_or_else(|| AwsError::Other(format!("{}: the root snapshot has no {k} tag", s.id)))
        };
        Ok(RootSnapshot {
            id: s.id.clone(),
            size_gib: s.size_gib,
            architecture: get(tags::ARCH)?,
            ena: get(tags::ENA)? == "true",
            sriov: get(tags::SRIOV)? == "true",
            nitro: get(tags::NITRO)? == "true",
            plan_hash: get(tags::PLAN_HASH)?,
            layout: get(tags::LAYOUT)?,
            data,
        })
    }
}

/// Device names for the other volumes: PV partition names (`/dev/sda2`) are not valid HVM
/// devices, so they move to the next free `/dev/sdb`, `/dev/sdc`, …
pub fn hvm_device_names(devices: &[String]) -> Vec<(String, String)> {
    let is_partition = |d: &str| {
        (d.starts_with("/dev/sd") || d.starts_with("/dev/xvd")) && d.chars().last().is_some_and(|c| c.is_ascii_digit())
    };
    let mut used: Vec<String> = devices.iter().filter(|d| !is_partition(d)).cloned().collect();
    let mut next = b'b';
    devices
        .iter()
        .map(|d| {
            if !is_partition(d) {
                return (d.clone(), d.clone());
            }
            loop {
                let cand = format!("/dev/sd{}", next as char);
                next += 1;
                if !used.contains(&cand) && !used.contains(&cand.replace("/dev/sd", "/dev/xvd")) {
                    used.push(cand.clone());
                    return (d.clone(), cand);
                }
            }
        })
        .collect()
}

/// RegisterImage from `root`; waits until the AMI is available.
pub fn register(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    root: &RootSnapshot,
    hash: &str,
    report: &mut MigrateReport,
    obs: &dyn Observer,
) -> Result<ImageInfo, MigrateError> {
    obs.stage_started(Stage::Register);
    // An instance keeps its AMI's instance-store (ephemeral, swap) mappings.
    let mut other_mappings = src.other_mappings.clone();
    if let Some(img) = &src.image_id
        && let Ok(launched_from) = ec2::describe_source(aws, img)
    {
        other_mappings.extend(launched_from.other_mappings.into_iter().filter(|m| m.virtual_name.is_some()));
    }
    let mut others: Vec<Mapping> = Vec::new();
    let devices: Vec<String> =
        root.data.iter().map(|(d, _)| d.clone()).chain(other_mappings.iter().map(|m| m.device.clone())).collect();
    let renamed = hvm_device_names(&devices);
    for ((old, new_dev), i) in renamed.iter().zip(0..) {
        if old != new_dev {
            report.notes.push(format!("{old} is a PV partition name: mapped to {new_dev}; its fstab line gets nofail"));
        }
        if let Some((_, s)) = root.data.get(i) {
            others.push(Mapping {
                device: new_dev.clone(),
                snapshot: Some(s.clone()),
                virtual_name: None,
                size_gib: None,
                volume_type: Some("gp3".into()),
                delete_on_termination: true,
            });
        } else if let Some(m) = other_mappings.get(i - root.data.len()) {
            others.push(Mapping { device: new_dev.clone(), ..m.clone() });
        }
    }
    let mut own = tags::work_tags(&o.run_id, &o.source, Role::Image, hash);
    own.extend(root.tags());
    let (image_tags, dropped) = tags::fit(own, &src.tags);
    report.notes.extend(dropped);
    // The name follows from the source and the options, and EC2 keeps AMI names unique: a
    // RegisterImage still in flight when its run died and the resumed run's, or those of two
    // runs of one source at once (a replacement pod beside the old one), make one AMI between
    // them, which the second adopts.
    let name = match &o.name {
        Some(n) => n.clone(),
        None => {
            let base = src.name.clone().unwrap_or_else(|| o.source.clone());
            let work = crate::util::sha256_hex(format!("{}\n{hash}", o.source).as_bytes());
            let name = tags::ami_name(&base, &format!("-hvm-{}", &work[..8]));
            if !name.starts_with(&base) {
                report.notes.push(format!("the AMI is named {name:?}: EC2 takes no {base:?} in an AMI name"));
            }
            name
        }
    };
    let reg = ec2::Registration {
        name: name.clone(),
        description: src.description.clone().unwrap_or_else(|| format!("HVM migration of {} by pv2hvm", o.source)),
        architecture: root.architecture.clone(),
        root_snapshot: root.id.clone(),
        root_size_gib: root.size_gib,
        other: others,
        ena: root.ena,
        sriov: root.sriov,
        tags: image_tags.clone(),
    };
    obs.progress().note("registering the HVM AMI");
    let image = match ec2::register_image(aws, &reg) {
        Ok(id) => {
            obs.created("image", &id, &aws.region, Role::Image);
            id
        }
        Err(AwsError::Call { detail, .. }) if detail.starts_with("InvalidAMIName.Duplicate") => {
            let id = same_name(aws, o, hash, &name).ok_or_else(|| MigrateError::Refused {
                source_id: o.source.clone(),
                reason: format!("the AMI name {name:?} is taken by an AMI that is not this migration's ({detail})"),
            })?;
            report.reused.push(format!("the AMI {id}, registered by another run of this work (one that died during the call, or one at the same time)"));
            id
        }
        Err(e) => return Err(e.into()),
    };
    report.image = Some(image.clone());
    ec2::wait_image(aws, &aws.ec2, &image, WAIT)?;
    obs.stage_done(Stage::Register, &image);
    let mut snapshots = vec![root.id.clone()];
    snapshots.extend(root.data.iter().map(|(_, s)| s.clone()));
    Ok(ImageInfo { id: image, state: "available".into(), name: Some(name), snapshots, tags: image_tags })
}

/// The AMI named `name`, when it is this work's (same source and options): registered by a run
/// that died while the call was in flight.
fn same_name(aws: &Aws, o: &MigrateOptions, hash: &str, name: &str) -> Option<String> {
    let mut filters = image_filters(o, hash);
    filters.push(aws_sdk_ec2::types::Filter::builder().name("name").values(name).build());
    let found = ec2::find_images(aws, &aws.ec2, filters).ok()?;
    found.into_iter().next().map(|i| i.id)
}

/// The tags that find this work's AMI (and, in another region, its copy).
pub(super) fn image_filters(o: &MigrateOptions, hash: &str) -> Vec<aws_sdk_ec2::types::Filter> {
    vec![
        tag_filter(tags::SOURCE, &o.source),
        tag_filter(tags::SPEC_HASH, hash),
        tag_filter(tags::ROLE, Role::Image.as_str()),
    ]
}

/// Launches the stopped replacement, unless one launched from this work exists.
pub fn launch(
    aws: &Aws,
    o: &MigrateOptions,
    src: &SourceInfo,
    image: &ImageInfo,
    hash: &str,
    report: &mut MigrateReport,
    obs: &dyn Observer,
) -> Result<(), MigrateError> {
    obs.stage_started(Stage::Launch);
    let existing = ec2::find_instances(
        aws,
        vec![
            tag_filter(tags::SOURCE, &o.source),
            tag_filter(tags::SPEC_HASH, hash),
            tag_filter(tags::ROLE, Role::Instance.as_str()),
        ],
    )?;
    if let Some((id, _)) = existing.first() {
        report.reused.push(format!("the replacement instance {id}"));
        report.instance = Some(id.clone());
        obs.stage_done(Stage::Launch, &format!("{id} (found)"));
        return Ok(());
    }
    let nitro = tags::get(&image.tags, tags::NITRO) != Some("false");
    let ena = tags::get(&image.tags, tags::ENA) == Some("true");
    let ty = match o.instance_type.clone().filter(|t| t != "auto") {
        Some(t) => {
            // A type that requires ENA does not start from an AMI without it: say so now.
            let known = crate::aws::instance_types::describe(aws, std::slice::from_ref(&t), Vec::new())?;
            if !ena && known.iter().any(|k| k.ena == "required") {
                return Err(MigrateError::Refused {
                    source_id: o.source.clone(),
                    reason: format!(
                        "--instance-type {t} requires ENA, and {} has no EnaSupport (the guest has no ena driver)",
                        image.id
                    ),
                });
            }
            t
        }
        None => {
            let old = src.instance_type.as_deref().unwrap_or("m1.large");
            let arch = tags::get(&image.tags, tags::ARCH).unwrap_or("x86_64");
            crate::aws::instance_types::replacement(aws, old, src.zone.as_deref(), arch, nitro, ena)
                .map_err(|reason| MigrateError::Refused { source_id: o.source.clone(), reason })?
        }
    };
    let (t, dropped) = tags::fit(tags::work_tags(&o.run_id, &o.source, Role::Instance, hash), &src.tags);
    report.notes.extend(dropped);
    // The token covers every parameter of the call: a retry with other parameters would be
    // IdempotentParameterMismatch.
    let params =
        format!("{ty} {:?} {:?} {:?} {:?}", src.subnet_id, src.security_groups, src.key_name, src.iam_profile_arn);
    let token = ec2::token(&[&image.id, "launch", &params]);
    let id = ec2::launch(aws, src, &image.id, &ty, &token, &t)?;
    obs.created("instance", &id, &aws.region, Role::Instance);
    report.notes.push(format!("{id} ({ty}) launched from {} and left stopped", image.id));
    report.instance = Some(id.clone());
    obs.stage_done(Stage::Launch, &id);
    Ok(())
}
