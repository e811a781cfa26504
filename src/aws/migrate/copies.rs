//! The copies of the new AMI to other regions (CopyImage, called in each destination). Each
//! copy and the snapshots CopyImage makes behind it are tagged in the call (TagSpecifications
//! is the only way to tag those snapshots), so that a later run finds the copy instead of
//! making another, and `cleanup --run-id … --regions …` removes both in every region. KMS keys
//! are regional: an encrypted AMI's copy is encrypted with the destination's default EBS key
//! unless `--copy-kms-key-id REGION=KEY` names one there, and the report says which.

use aws_sdk_ec2::types::ResourceType;

use super::{MigrateError, MigrateOptions, MigrateReport, Observer, Stage, WAIT, register};
use crate::aws::ec2::{self, ImageInfo, tag_filter, tag_spec};
use crate::aws::retry::{Policy, with_policy};
use crate::aws::tags::{self, Role};
use crate::aws::{Aws, AwsError};

/// One CopyImage call.
struct CopyRequest<'a> {
    image: &'a str,
    name: &'a str,
    region: &'a str,
    token: String,
    image_tags: &'a [(String, String)],
    snapshot_tags: Vec<(String, String)>,
    kms_key_id: Option<&'a str>,
}

/// The key `--copy-kms-key-id` names for `region`.
fn key_for<'a>(o: &'a MigrateOptions, region: &str) -> Option<&'a str> {
    o.copy_kms_keys.iter().find(|(r, _)| r == region).map(|(_, k)| k.as_str())
}

/// The tag on the AMI that counts the copies to `region` that failed.
fn failures_tag(region: &str) -> String {
    format!("pv2hvm:copy-failures:{region}")
}

/// Copies `image` to each region asked, unless a copy is already there.
pub fn copies(
    aws: &Aws,
    o: &MigrateOptions,
    image: &ImageInfo,
    hash: &str,
    report: &mut MigrateReport,
    obs: &dyn Observer,
) -> Result<(), MigrateError> {
    if o.copy_to_regions.is_empty() {
        return Ok(());
    }
    let root = image.snapshots.first().map(|s| ec2::describe_snapshot(aws, s)).transpose()?;
    let encrypted = root.as_ref().is_some_and(|s| s.encrypted);
    for region in &o.copy_to_regions {
        obs.stage_started(Stage::Copy);
        let client = aws.ec2_in(region);
        let there = ec2::find_images(aws, &client, register::image_filters(o, hash))?;
        if let Some(c) = there.iter().find(|i| i.state == "available" || i.state == "pending") {
            ec2::wait_image(aws, &client, &c.id, WAIT)?;
            report.reused.push(format!("the copy {} in {region}", c.id));
            report.copies.push((region.clone(), c.id.clone()));
            obs.stage_done(Stage::Copy, &format!("{region} {} (found)", c.id));
            continue;
        }
        let key = key_for(o, region);
        match (encrypted, key) {
            (true, None) => report.notes.push(format!(
                "the copy in {region} is encrypted with {region}'s default EBS key, not {}: KMS keys are regional \
                 (--copy-kms-key-id {region}=KEY names one there)",
                root.as_ref().and_then(|s| s.kms_key_id.as_deref()).unwrap_or("the source's key")
            )),
            (_, Some(k)) => report.notes.push(format!("the copy in {region} is encrypted with {k}")),
            (false, None) => {}
        }
        // The token follows from the image, the region, the key and the copies that failed there
        // before (counted in the AMI's tags), so that a call repeated after a crash returns the
        // same copy and a new attempt after a failure is a new copy.
        let failures = tags::get(&image.tags, &failures_tag(region)).unwrap_or("0").to_string();
        let mut parts = vec![image.id.as_str(), region.as_str(), "copy"];
        parts.extend(key);
        if failures != "0" {
            parts.push(&failures);
        }
        obs.progress().note(&format!("copying {} to {region}", image.id));
        let name = image.name.clone().unwrap_or_else(|| format!("{}-hvm", o.source));
        let req = CopyRequest {
            image: &image.id,
            name: &name,
            region,
            token: ec2::token(&parts),
            image_tags: &image.tags,
            snapshot_tags: tags::work_tags(&o.run_id, &o.source, Role::Copy, hash),
            kms_key_id: key,
        };
        let id = copy_image(aws, &req)?;
        obs.created("image", &id, region, Role::Image);
        if let Err(e) = ec2::wait_image(aws, &client, &id, WAIT) {
            // Nothing of a failed copy stays: the AMI goes first (EC2 deletes no snapshot an AMI
            // holds), then its snapshots; the count in the AMI's tags makes the next token new.
            ec2::deregister_image(aws, &client, &id)?;
            let removed = remove_copy_snapshots(aws, &client, o, hash)?;
            let n = failures.parse::<u32>().unwrap_or(0).saturating_add(1);
            ec2::create_tags(aws, &aws.ec2, &image.id, &[(failures_tag(region), n.to_string())])?;
            return Err(AwsError::Other(format!(
                "{e}; the failed copy {id} was deregistered and its {removed} snapshot(s) in {region} were removed"
            ))
            .into());
        }
        report.copies.push((region.clone(), id.clone()));
        obs.stage_done(Stage::Copy, &format!("{region} {id}"));
    }
    Ok(())
}

/// CopyImage in the destination region, the copy and its snapshots tagged in the call.
fn copy_image(aws: &Aws, r: &CopyRequest) -> Result<String, AwsError> {
    let client = aws.ec2_in(r.region);
    let mut req = client
        .copy_image()
        .source_image_id(r.image)
        .source_region(&aws.region)
        .name(r.name)
        .client_token(&r.token)
        .tag_specifications(tag_spec(ResourceType::Image, r.image_tags))
        .tag_specifications(tag_spec(ResourceType::Snapshot, &r.snapshot_tags));
    if let Some(k) = r.kms_key_id {
        req = req.encrypted(true).kms_key_id(k);
    }
    let what = || format!("copying {} to {}", r.image, r.region);
    let out = aws.block_on(with_policy(Policy::DEFAULT, what, || req.clone().send()))?;
    out.image_id().map(str::to_string).ok_or_else(|| AwsError::Other("CopyImage returned no id".into()))
}

/// Deletes the snapshots this work's copies made in `client`'s region; returns how many.
fn remove_copy_snapshots(
    aws: &Aws,
    client: &aws_sdk_ec2::Client,
    o: &MigrateOptions,
    hash: &str,
) -> Result<usize, AwsError> {
    let filters = vec![
        tag_filter(tags::SOURCE, &o.source),
        tag_filter(tags::SPEC_HASH, hash),
        tag_filter(tags::ROLE, Role::Copy.as_str()),
    ];
    let found = ec2::find_snapshots_in(aws, client, filters)?;
    for s in &found {
        ec2::delete_snapshot_in(aws, client, &s.id)?;
    }
    Ok(found.len())
}
