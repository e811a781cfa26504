//! The EC2 control calls pv2hvm makes: describing the source, snapshots, registering and
//! copying the AMI, launching its replacement, and finding what a run made by its tags.
//! Waits poll with a bounded deadline.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter, ResourceType, Tag,
    TagSpecification, VolumeType,
};

use super::retry::{Policy, with_policy};
use super::{Aws, AwsError, ResourceKind};

/// How long a fresh id may stay invisible to Describe calls before a wait gives up on it
/// (EC2 developer guide, "Eventual consistency").
pub const FRESH_ID_GRACE: Duration = Duration::from_secs(120);

/// Whether `e` says that the resource does not exist (yet).
pub fn is_not_found(e: &AwsError) -> bool {
    match e {
        AwsError::Call { detail, .. } => detail.split(':').next().is_some_and(|c| c.ends_with(".NotFound")),
        AwsError::Refused(m) => m.contains(": no such "),
        _ => false,
    }
}

/// A block device mapping of an AMI or of the new one.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mapping {
    pub device: String,
    /// An EBS snapshot, or an instance-store `ephemeralN` name.
    pub snapshot: Option<String>,
    pub virtual_name: Option<String>,
    pub size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub delete_on_termination: bool,
}

/// What pv2hvm needs to know of the instance, AMI or snapshot it migrates.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceInfo {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The source's own tags (not `aws:*`, not `pv2hvm:*`).
    pub tags: Vec<(String, String)>,
    pub virtualization: Option<String>,
    pub architecture: Option<String>,
    pub platform: Option<String>,
    /// Product codes with their type (`marketplace`, `devpay`).
    pub product_codes: Vec<(String, String)>,
    pub root_device_type: Option<String>,
    pub root_device_name: Option<String>,
    pub kernel_id: Option<String>,
    /// An instance's root volume.
    pub root_volume: Option<String>,
    /// An AMI's (or the snapshot source's) root snapshot.
    pub root_snapshot: Option<String>,
    /// An instance's other EBS volumes: (device, volume id).
    pub other_volumes: Vec<(String, String)>,
    /// An AMI's other mappings: EBS snapshots, ephemeral and swap devices.
    pub other_mappings: Vec<Mapping>,
    /// An instance's AMI.
    pub image_id: Option<String>,
    pub state: Option<String>,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub security_groups: Vec<String>,
    pub iam_profile_arn: Option<String>,
    pub key_name: Option<String>,
    /// An instance's availability zone.
    pub zone: Option<String>,
    /// The run that stopped this instance for its snapshot and has not started it again.
    pub stopped_by: Option<String>,
}

/// A snapshot's state and shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub state: String,
    pub size_gib: i32,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub volume_id: Option<String>,
    pub owner_id: Option<String>,
    pub state_message: Option<String>,
    /// Seconds since the epoch.
    pub started: i64,
    pub tags: Vec<(String, String)>,
}

/// A registered AMI, as far as pv2hvm looks at it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub state: String,
    pub name: Option<String>,
    pub snapshots: Vec<String>,
    pub tags: Vec<(String, String)>,
}

fn own_tags<'a>(tags: impl Iterator<Item = &'a aws_sdk_ec2::types::Tag>) -> Vec<(String, String)> {
    tags.filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn user_tags(tags: &[(String, String)]) -> Vec<(String, String)> {
    tags.iter().filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("pv2hvm:")).cloned().collect()
}

/// Product codes with their type (`marketplace`, `devpay`).
fn codes(codes: &[aws_sdk_ec2::types::ProductCode]) -> Vec<(String, String)> {
    codes
        .iter()
        .map(|p| {
            (
                p.product_code_id().unwrap_or_default().to_string(),
                p.product_code_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn name_of(tags: &[(String, String)]) -> Option<String> {
    tags.iter().find(|(k, _)| k == "Name").map(|(_, v)| v.clone())
}

pub fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

pub fn tag_spec(kind: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(kind);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}

/// Describes the instance, AMI or snapshot `id`.
pub fn describe_source(aws: &Aws, id: &str) -> Result<SourceInfo, AwsError> {
    match ResourceKind::of(id) {
        Some(ResourceKind::Instance) => describe_instance(aws, id),
        Some(ResourceKind::Image) => describe_image_source(aws, id),
        Some(ResourceKind::Snapshot) => {
            let s = describe_snapshot(aws, id)?;
            Ok(SourceInfo {
                id: id.to_string(),
                name: name_of(&s.tags),
                tags: user_tags(&s.tags),
                root_device_type: Some("ebs".into()),
                root_snapshot: Some(s.id),
                ..SourceInfo::default()
            })
        }
        None => Err(AwsError::Refused(format!("{id}: not an instance (i-…), AMI (ami-…) or snapshot (snap-…) id"))),
    }
}

fn describe_instance(aws: &Aws, id: &str) -> Result<SourceInfo, AwsError> {
    let out = aws.block_on(with_policy(
        Policy::LOOKUP,
        || format!("describing {id}"),
        || aws.ec2.describe_instances().instance_ids(id).send(),
    ))?;
    let i = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or_else(|| AwsError::Refused(format!("{id}: no such instance")))?;
    Ok(instance_info(i))
}

/// What DescribeInstances says of one instance.
pub fn instance_info(i: &aws_sdk_ec2::types::Instance) -> SourceInfo {
    let id = i.instance_id().unwrap_or_default();
    let tags = own_tags(i.tags().iter());
    let root_name = i.root_device_name().map(str::to_string);
    let mut root_volume = None;
    let mut others = Vec::new();
    for m in i.block_device_mappings() {
        let (Some(dev), Some(vol)) = (m.device_name(), m.ebs().and_then(|e| e.volume_id())) else { continue };
        if Some(dev) == root_name.as_deref() {
            root_volume = Some(vol.to_string());
        } else {
            others.push((dev.to_string(), vol.to_string()));
        }
    }
    SourceInfo {
        id: id.to_string(),
        name: name_of(&tags),
        description: None,
        virtualization: i.virtualization_type().map(|v| v.as_str().to_string()),
        architecture: i.architecture().map(|a| a.as_str().to_string()),
        platform: i.platform().map(|p| p.as_str().to_string()),
        product_codes: codes(i.product_codes()),
        root_device_type: i.root_device_type().map(|t| t.as_str().to_string()),
        root_device_name: root_name,
        kernel_id: i.kernel_id().map(str::to_string),
        root_volume,
        other_volumes: others,
        image_id: i.image_id().map(str::to_string),
        state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        subnet_id: i.subnet_id().map(str::to_string),
        security_groups: i.security_groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect(),
        iam_profile_arn: i.iam_instance_profile().and_then(|p| p.arn()).map(str::to_string),
        key_name: i.key_name().map(str::to_string),
        zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
        stopped_by: super::tags::get(&tags, super::tags::STOPPED_BY).map(str::to_string),
        tags: user_tags(&tags),
        ..SourceInfo::default()
    }
}

fn describe_image_source(aws: &Aws, id: &str) -> Result<SourceInfo, AwsError> {
    let out = aws.block_on(with_policy(
        Policy::LOOKUP,
        || format!("describing {id}"),
        || aws.ec2.describe_images().image_ids(id).send(),
    ))?;
    let img = out.images().first().ok_or_else(|| AwsError::Refused(format!("{id}: no such AMI")))?;
    Ok(image_info(img))
}

/// What DescribeImages says of one AMI.
pub fn image_info(img: &aws_sdk_ec2::types::Image) -> SourceInfo {
    let id = img.image_id().unwrap_or_default();
    let tags = own_tags(img.tags().iter());
    let root_name = img.root_device_name().map(str::to_string);
    let mut root_snapshot = None;
    let mut others = Vec::new();
    for m in img.block_device_mappings() {
        let dev = m.device_name().unwrap_or_default().to_string();
        let snap = m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string);
        if Some(dev.as_str()) == root_name.as_deref() {
            root_snapshot = snap;
            continue;
        }
        if m.no_device().is_some() {
            continue;
        }
        others.push(Mapping {
            device: dev,
            snapshot: snap,
            virtual_name: m.virtual_name().map(str::to_string),
            size_gib: m.ebs().and_then(|e| e.volume_size()),
            volume_type: m.ebs().and_then(|e| e.volume_type()).map(|t| t.as_str().to_string()),
            delete_on_termination: m.ebs().and_then(|e| e.delete_on_termination()).unwrap_or(true),
        });
    }
    SourceInfo {
        id: id.to_string(),
        name: img.name().map(str::to_string),
        description: img.description().map(str::to_string),
        virtualization: img.virtualization_type().map(|v| v.as_str().to_string()),
        architecture: img.architecture().map(|a| a.as_str().to_string()),
        platform: img.platform().map(|p| p.as_str().to_string()),
        product_codes: codes(img.product_codes()),
        root_device_type: img.root_device_type().map(|t| t.as_str().to_string()),
        root_device_name: root_name,
        kernel_id: img.kernel_id().map(str::to_string),
        root_snapshot,
        other_mappings: others,
        tags: user_tags(&tags),
        ..SourceInfo::default()
    }
}

fn snapshot_info(s: &aws_sdk_ec2::types::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        id: s.snapshot_id().unwrap_or_default().to_string(),
        state: s.state().map(|x| x.as_str().to_string()).unwrap_or_default(),
        size_gib: s.volume_size().unwrap_or(0),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_id: s.kms_key_id().map(str::to_string),
        volume_id: s.volume_id().map(str::to_string),
        owner_id: s.owner_id().map(str::to_string),
        state_message: s.state_message().filter(|m| !m.is_empty()).map(str::to_string),
        started: s.start_time().map_or(0, |t| t.secs()),
        tags: own_tags(s.tags().iter()),
    }
}

pub fn describe_snapshot(aws: &Aws, id: &str) -> Result<SnapshotInfo, AwsError> {
    let out = aws.block_on(with_policy(
        Policy::LOOKUP,
        || format!("describing {id}"),
        || aws.ec2.describe_snapshots().snapshot_ids(id).send(),
    ))?;
    out.snapshots().first().map(snapshot_info).ok_or_else(|| AwsError::Refused(format!("{id}: no such snapshot")))
}

/// This account's snapshots matching `filters` (all pages).
pub fn find_snapshots(aws: &Aws, filters: Vec<Filter>) -> Result<Vec<SnapshotInfo>, AwsError> {
    find_snapshots_in(aws, &aws.ec2, filters)
}

/// This account's snapshots matching `filters`, in `client`'s region.
pub fn find_snapshots_in(
    aws: &Aws,
    client: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> Result<Vec<SnapshotInfo>, AwsError> {
    every_page(|next| {
        let page = aws
            .block_on(
                client
                    .describe_snapshots()
                    .owner_ids("self")
                    .set_filters(Some(filters.clone()))
                    .set_next_token(next)
                    .send(),
            )
            .map_err(|e| AwsError::call("listing snapshots", e))?;
        Ok((page.snapshots().iter().map(snapshot_info).collect(), page.next_token().map(str::to_string)))
    })
}

/// Calls `page` with each NextToken (none at first) until a page comes without one, and
/// returns the items of every page. A token given back as it was sent is an error, not a loop.
fn every_page<T>(
    mut page: impl FnMut(Option<String>) -> Result<(Vec<T>, Option<String>), AwsError>,
) -> Result<Vec<T>, AwsError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let sent = next.clone();
        let (items, token) = page(next.take())?;
        out.extend(items);
        match token {
            Some(t) if !t.is_empty() && sent.as_deref() == Some(t.as_str()) => {
                return Err(AwsError::Other(format!("an EC2 listing gave back the NextToken it was sent ({t})")));
            }
            Some(t) if !t.is_empty() => next = Some(t),
            _ => return Ok(out),
        }
    }
}

/// This account's AMIs matching `filters`, in `client`'s region, every page.
pub fn find_images(aws: &Aws, client: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<ImageInfo>, AwsError> {
    every_page(|next| {
        let page = aws
            .block_on(
                client
                    .describe_images()
                    .owners("self")
                    .set_filters(Some(filters.clone()))
                    .max_results(1000)
                    .set_next_token(next)
                    .send(),
            )
            .map_err(|e| AwsError::call("listing AMIs", e))?;
        Ok((page.images().iter().map(image_summary).collect(), page.next_token().map(str::to_string)))
    })
}

fn image_summary(i: &aws_sdk_ec2::types::Image) -> ImageInfo {
    ImageInfo {
        id: i.image_id().unwrap_or_default().to_string(),
        state: i.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        name: i.name().map(str::to_string),
        snapshots: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect(),
        tags: own_tags(i.tags().iter()),
    }
}

pub fn create_snapshot(
    aws: &Aws,
    volume: &str,
    description: &str,
    tags: &[(String, String)],
) -> Result<String, AwsError> {
    let out = aws
        .block_on(
            aws.ec2
                .create_snapshot()
                .volume_id(volume)
                .description(description)
                .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
                .send(),
        )
        .map_err(|e| AwsError::call(format!("snapshotting {volume}"), e))?;
    out.snapshot_id().map(str::to_string).ok_or_else(|| AwsError::Other("CreateSnapshot returned no id".into()))
}

/// Whether the account encrypts new EBS volumes and snapshots by default in this region.
pub fn encryption_by_default(aws: &Aws) -> Result<bool, AwsError> {
    let out = aws.block_on(with_retries_ec2("reading EBS encryption by default", || {
        aws.ec2.get_ebs_encryption_by_default().send()
    }))?;
    Ok(out.ebs_encryption_by_default().unwrap_or(false))
}

/// Why the EBS direct APIs cannot read `s` or take it as a parent, if they cannot: it belongs
/// to another account, or it is public ("EBS direct APIs does not support public snapshots",
/// EBS user guide). Either way a copy in this account can.
pub fn foreign_or_public(aws: &Aws, s: &SnapshotInfo) -> Result<Option<String>, AwsError> {
    let own = aws.block_on(with_retries_ec2(&format!("checking the owner of {}", s.id), || {
        aws.ec2.describe_snapshots().owner_ids("self").snapshot_ids(&s.id).send()
    }));
    let own = match own {
        Ok(out) => !out.snapshots().is_empty(),
        Err(e) if is_not_found(&e) => false,
        Err(e) => return Err(e),
    };
    if !own {
        let owner = s.owner_id.as_deref().unwrap_or("another account");
        return Ok(Some(format!("{} belongs to {owner}, not to this account", s.id)));
    }
    let out = aws.block_on(with_retries_ec2(&format!("reading who may use {}", s.id), || {
        aws.ec2
            .describe_snapshot_attribute()
            .snapshot_id(&s.id)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
    }))?;
    let public = out
        .create_volume_permissions()
        .iter()
        .any(|p| p.group().is_some_and(|g| *g == aws_sdk_ec2::types::PermissionGroup::All));
    Ok(public.then(|| format!("{} is public", s.id)))
}

/// What CopySnapshot gets.
pub struct SnapshotCopy<'a> {
    pub source: &'a str,
    pub description: String,
    /// Encrypt the copy (with `kms_key_id`, else the account's default key).
    pub encrypt: bool,
    pub kms_key_id: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Copies a snapshot into this account and region, tagged in the call; returns the copy's id.
pub fn copy_snapshot(aws: &Aws, c: &SnapshotCopy) -> Result<String, AwsError> {
    let mut req = aws
        .ec2
        .copy_snapshot()
        .source_snapshot_id(c.source)
        .source_region(&aws.region)
        .description(&c.description)
        .tag_specifications(tag_spec(ResourceType::Snapshot, &c.tags));
    if c.encrypt {
        req = req.encrypted(true).set_kms_key_id(c.kms_key_id.clone());
    }
    let out = aws.block_on(with_retries_ec2(&format!("copying {}", c.source), || req.clone().send()))?;
    out.snapshot_id().map(str::to_string).ok_or_else(|| AwsError::Other("CopySnapshot returned no id".into()))
}

/// An EC2 call that may name an id made moments ago: NotFound is retried for a while.
async fn with_retries_ec2<T, E, F, Fut>(what: &str, call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
            Output = Result<T, aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
        >,
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    with_policy(Policy::FRESH_ID, || what.to_string(), call).await
}

/// Polls until `check` says done (`Ok(true)`), failing after `timeout`.
fn poll<F>(what: &str, timeout: Duration, mut check: F) -> Result<(), AwsError>
where
    F: FnMut() -> Result<(bool, String), AwsError>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        // A resource made a moment ago may not be visible yet: that is "not yet", for a while.
        let (done, state) = match check() {
            Err(e) if is_not_found(&e) && started.elapsed() < FRESH_ID_GRACE.min(timeout) => {
                (false, "not visible yet".to_string())
            }
            other => other?,
        };
        if done {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(AwsError::Timeout { what: what.to_string(), seconds: timeout.as_secs(), state });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

pub fn wait_snapshot(aws: &Aws, id: &str, timeout: Duration) -> Result<SnapshotInfo, AwsError> {
    let mut last = None;
    poll(&format!("waiting for {id} to complete"), timeout, || {
        let s = describe_snapshot(aws, id)?;
        if s.state == "error" {
            let why = s.state_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            return Err(AwsError::Other(format!("the snapshot {id} failed (state error{why})")));
        }
        let done = s.state == "completed";
        let state = s.state.clone();
        last = Some(s);
        Ok((done, state))
    })?;
    last.ok_or_else(|| AwsError::Other(format!("{id}: no state")))
}

pub fn wait_image(aws: &Aws, client: &aws_sdk_ec2::Client, id: &str, timeout: Duration) -> Result<(), AwsError> {
    poll(&format!("waiting for {id} to become available"), timeout, || {
        let out = aws
            .block_on(client.describe_images().image_ids(id).send())
            .map_err(|e| AwsError::call(format!("describing {id}"), e))?;
        let state = out.images().first().and_then(|i| i.state()).map(|s| s.as_str().to_string()).unwrap_or_default();
        if state == "failed" || state == "error" {
            return Err(AwsError::Other(format!("{id} failed to register (state {state})")));
        }
        Ok((state == "available", state))
    })
}

pub fn wait_instance(aws: &Aws, id: &str, want: &str, timeout: Duration) -> Result<(), AwsError> {
    poll(&format!("waiting for {id} to be {want}"), timeout, || {
        let s = describe_instance(aws, id)?.state.unwrap_or_default();
        if s != want && matches!(s.as_str(), "terminated" | "shutting-down") {
            return Err(AwsError::Other(format!("{id} is {s}, not {want}")));
        }
        Ok((s == want, s))
    })
}

pub fn stop_instance(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.block_on(aws.ec2.stop_instances().instance_ids(id).send())
        .map_err(|e| AwsError::call(format!("stopping {id}"), e))?;
    wait_instance(aws, id, "stopped", Duration::from_secs(1800))
}

pub fn start_instance(aws: &Aws, id: &str) -> Result<(), AwsError> {
    aws.block_on(aws.ec2.start_instances().instance_ids(id).send())
        .map_err(|e| AwsError::call(format!("starting {id}"), e))?;
    Ok(())
}

/// What RegisterImage gets.
pub struct Registration {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub root_snapshot: String,
    pub root_size_gib: i32,
    pub other: Vec<Mapping>,
    pub ena: bool,
    pub sriov: bool,
    pub tags: Vec<(String, String)>,
}

/// The root device of every AMI pv2hvm registers.
pub const ROOT_DEVICE: &str = "/dev/xvda";

pub fn register_image(aws: &Aws, r: &Registration) -> Result<String, AwsError> {
    let root = BlockDeviceMapping::builder()
        .device_name(ROOT_DEVICE)
        .ebs(
            EbsBlockDevice::builder()
                .snapshot_id(&r.root_snapshot)
                .volume_size(r.root_size_gib)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .build(),
        )
        .build();
    let mut req = aws
        .ec2
        .register_image()
        .name(&r.name)
        .description(&r.description)
        .architecture(ArchitectureValues::from(r.architecture.as_str()))
        .virtualization_type("hvm")
        .root_device_name(ROOT_DEVICE)
        .boot_mode(BootModeValues::LegacyBios)
        .block_device_mappings(root)
        .tag_specifications(tag_spec(ResourceType::Image, &r.tags));
    for m in &r.other {
        let mut b = BlockDeviceMapping::builder().device_name(&m.device);
        if let Some(v) = &m.virtual_name {
            b = b.virtual_name(v);
        } else {
            let mut e = EbsBlockDevice::builder().delete_on_termination(m.delete_on_termination);
            if let Some(s) = &m.snapshot {
                e = e.snapshot_id(s);
            }
            if let Some(g) = m.size_gib {
                e = e.volume_size(g);
            }
            if let Some(t) = &m.volume_type {
                e = e.volume_type(VolumeType::from(t.as_str()));
            }
            b = b.ebs(e.build());
        }
        req = req.block_device_mappings(b.build());
    }
    if r.ena {
        req = req.ena_support(true);
    }
    if r.sriov {
        req = req.sriov_net_support("simple");
    }
    let out =
        aws.block_on(with_policy(Policy::FRESH_ID, || format!("registering {}", r.name), || req.clone().send()))?;
    out.image_id().map(str::to_string).ok_or_else(|| AwsError::Other("RegisterImage returned no id".into()))
}

/// Adds (or overwrites) tags on a resource in `client`'s region.
pub fn create_tags(
    aws: &Aws,
    client: &aws_sdk_ec2::Client,
    id: &str,
    tags: &[(String, String)],
) -> Result<(), AwsError> {
    let mut t = client.create_tags().resources(id);
    for (k, v) in tags {
        t = t.tags(Tag::builder().key(k).value(v).build());
    }
    aws.block_on(with_policy(Policy::FRESH_ID, || format!("tagging {id}"), || t.clone().send()))?;
    Ok(())
}

pub fn delete_tag(aws: &Aws, id: &str, key: &str) -> Result<(), AwsError> {
    aws.block_on(aws.ec2.delete_tags().resources(id).tags(Tag::builder().key(key).build()).send())
        .map_err(|e| AwsError::call(format!("untagging {id}"), e))?;
    Ok(())
}

/// Instances matching `filters` that are not terminated (or shutting down): (id, state).
pub fn find_instances(aws: &Aws, filters: Vec<Filter>) -> Result<Vec<(String, String)>, AwsError> {
    every_page(|next| {
        let page = aws
            .block_on(
                aws.ec2
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(1000)
                    .set_next_token(next)
                    .send(),
            )
            .map_err(|e| AwsError::call("listing instances", e))?;
        let mut live = Vec::new();
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let state = i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default();
            if let (Some(id), false) = (i.instance_id(), matches!(state.as_str(), "terminated" | "shutting-down")) {
                live.push((id.to_string(), state));
            }
        }
        Ok((live, page.next_token().map(str::to_string)))
    })
}

/// An idempotency token (ClientToken) for one call of one run on one source: the same
/// inputs give the same token, so a retried request makes nothing twice.
pub fn token(parts: &[&str]) -> String {
    format!("pv2hvm-{}", &crate::util::sha256_hex(parts.join("\n").as_bytes())[..40])
}

pub fn delete_snapshot(aws: &Aws, id: &str) -> Result<(), AwsError> {
    delete_snapshot_in(aws, &aws.ec2, id)
}

pub fn delete_snapshot_in(aws: &Aws, client: &aws_sdk_ec2::Client, id: &str) -> Result<(), AwsError> {
    aws.block_on(client.delete_snapshot().snapshot_id(id).send())
        .map_err(|e| AwsError::call(format!("deleting {id}"), e))?;
    Ok(())
}

pub fn deregister_image(aws: &Aws, client: &aws_sdk_ec2::Client, id: &str) -> Result<(), AwsError> {
    aws.block_on(client.deregister_image().image_id(id).send())
        .map_err(|e| AwsError::call(format!("deregistering {id}"), e))?;
    Ok(())
}

/// Launches a stopped replacement of `src` from `image`.
pub fn launch(
    aws: &Aws,
    src: &SourceInfo,
    image: &str,
    instance_type: &str,
    token: &str,
    tags: &[(String, String)],
) -> Result<String, AwsError> {
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
        .min_count(1)
        .max_count(1)
        .client_token(token)
        .tag_specifications(tag_spec(ResourceType::Instance, tags));
    if let Some(s) = &src.subnet_id {
        req = req.subnet_id(s);
    }
    for g in &src.security_groups {
        req = req.security_group_ids(g);
    }
    if let Some(k) = &src.key_name {
        req = req.key_name(k);
    }
    if let Some(arn) = &src.iam_profile_arn {
        req = req.iam_instance_profile(aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().arn(arn).build());
    }
    let out = aws.block_on(with_retries_ec2(&format!("launching from {image}"), || req.clone().send()))?;
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Other("RunInstances returned no instance".into()))?;
    // StopInstances before the instance is running is IncorrectInstanceState.
    wait_instance(aws, &id, "running", Duration::from_secs(1800))?;
    aws.block_on(with_retries_ec2(&format!("stopping the new {id}"), || {
        aws.ec2.stop_instances().instance_ids(&id).send()
    }))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_follows_tokens_to_the_end_and_refuses_a_repeated_one() {
        let pages = [(vec![1], Some("a")), (vec![], Some("b")), (vec![2, 3], None)];
        let mut calls = Vec::new();
        let got = every_page(|next| {
            calls.push(next.clone());
            let (items, token) = pages[calls.len() - 1].clone();
            Ok((items, token.map(str::to_string)))
        })
        .unwrap();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(calls, [None, Some("a".to_string()), Some("b".to_string())]);
        let mut n = 0;
        let stuck = every_page(|_| {
            n += 1;
            assert!(n < 5, "looped");
            Ok((Vec::<u8>::new(), Some("same".to_string())))
        });
        assert!(stuck.is_err());
    }
}
