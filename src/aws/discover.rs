//! Finding the PV fleet: every PV instance and every PV AMI the account owns, region by region
//! (DescribeRegions for `all`), the regions queried in parallel and every Describe call
//! paginated. Items stream to the caller as pages arrive; nothing holds the whole fleet.

use std::sync::mpsc;

use aws_sdk_ec2::types::Filter;
use serde::{Deserialize, Serialize};

use super::ec2::{self, SourceInfo};
use super::migrate::{MigrateError, preflight};
use super::{Aws, AwsError};

/// One PV instance or AMI, with the verdict its description alone gives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// "instance" or "image".
    pub kind: String,
    pub region: String,
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub state: Option<String>,
    pub root_device_type: Option<String>,
    pub root_device: Option<String>,
    pub kernel_id: Option<String>,
    /// An instance's launch time or an AMI's creation date (RFC 3339).
    pub launched: Option<String>,
    /// "candidate" (a plan reads the volume to say more) or "refused".
    pub verdict: String,
    pub reason: Option<String>,
}

impl Item {
    fn of(src: &SourceInfo, kind: &str, region: &str, launched: Option<String>) -> Item {
        let (verdict, reason) = match preflight(src) {
            Ok(_) => ("candidate".to_string(), None),
            Err(MigrateError::Refused { reason, .. }) => ("refused".to_string(), Some(reason)),
            Err(e) => ("refused".to_string(), Some(e.to_string())),
        };
        Item {
            id: src.id.clone(),
            kind: kind.into(),
            region: region.into(),
            name: src.name.clone(),
            instance_type: src.instance_type.clone(),
            state: src.state.clone(),
            root_device_type: src.root_device_type.clone(),
            root_device: src.root_device_name.clone(),
            kernel_id: src.kernel_id.clone(),
            launched,
            verdict,
            reason,
        }
    }
}

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// `tag:Key=Value` (or any DescribeInstances/DescribeImages filter `name=value`).
    pub filters: Vec<(String, String)>,
    pub instances: bool,
    pub images: bool,
}

/// Parses `tag:K=V` / `name=value`.
pub fn parse_filter(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("--filter {s}: expected NAME=VALUE, e.g. tag:team=web"))?;
    if k.is_empty() {
        return Err(format!("--filter {s}: empty filter name"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The regions `spec` names: `all` (every region enabled for the account), a comma list, or
/// none (the home region).
pub fn regions(aws: &Aws, spec: &[String]) -> Result<Vec<String>, AwsError> {
    if spec.is_empty() {
        return Ok(vec![aws.region.clone()]);
    }
    if spec.iter().any(|r| r == "all") {
        let out = aws
            .block_on(aws.ec2.describe_regions().send())
            .map_err(|e| AwsError::call("listing the account's regions", e))?;
        let mut names: Vec<String> = out.regions().iter().filter_map(|r| r.region_name().map(str::to_string)).collect();
        names.sort();
        return Ok(names);
    }
    Ok(spec.to_vec())
}

fn filters(q: &Query, extra: Vec<Filter>) -> Vec<Filter> {
    let mut f: Vec<Filter> = q.filters.iter().map(|(k, v)| Filter::builder().name(k).values(v).build()).collect();
    f.extend(extra);
    f
}

fn rfc3339(t: Option<&aws_sdk_ec2::primitives::DateTime>) -> Option<String> {
    t.map(|t| super::tags::rfc3339(t.secs().max(0) as u64))
}

/// Lists one region, page by page, into `out`. PV only: HVM items are skipped here (a
/// server-side filter where the API has one, and a check on every item).
fn list_region(
    aws: &Aws,
    region: &str,
    q: &Query,
    out: &mpsc::SyncSender<Result<Item, AwsError>>,
) -> Result<(), AwsError> {
    let client = aws.ec2_in(region);
    if q.instances {
        let mut next = None;
        loop {
            let live = Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build();
            let page = aws
                .block_on(
                    client
                        .describe_instances()
                        .set_filters(Some(filters(q, vec![live])))
                        .max_results(1000)
                        .set_next_token(next.take())
                        .send(),
                )
                .map_err(|e| AwsError::call(format!("listing instances in {region}"), e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let src = ec2::instance_info(i);
                if src.virtualization.as_deref() == Some("paravirtual") {
                    let item = Item::of(&src, "instance", region, rfc3339(i.launch_time()));
                    if out.send(Ok(item)).is_err() {
                        return Ok(());
                    }
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
    }
    if q.images {
        let mut next = None;
        loop {
            let pv = Filter::builder().name("virtualization-type").values("paravirtual").build();
            let page = aws
                .block_on(
                    client
                        .describe_images()
                        .owners("self")
                        .set_filters(Some(filters(q, vec![pv])))
                        .max_results(1000)
                        .set_next_token(next.take())
                        .send(),
                )
                .map_err(|e| AwsError::call(format!("listing AMIs in {region}"), e))?;
            for img in page.images() {
                let src = ec2::image_info(img);
                if src.virtualization.as_deref() == Some("paravirtual") {
                    let item = Item::of(&src, "image", region, img.creation_date().map(str::to_string));
                    if out.send(Ok(item)).is_err() {
                        return Ok(());
                    }
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(())
}

/// Lists the PV instances and AMIs of `regions` in parallel and hands each to `each` as it
/// comes (in no fixed order across regions). Stops at the first error of `each` or of a region.
pub fn discover(
    aws: &Aws,
    regions: &[String],
    q: &Query,
    each: &mut dyn FnMut(Item) -> Result<(), AwsError>,
) -> Result<(), AwsError> {
    let (tx, rx) = mpsc::sync_channel::<Result<Item, AwsError>>(256);
    std::thread::scope(|scope| {
        for region in regions {
            let tx = tx.clone();
            scope.spawn(move || {
                if let Err(e) = list_region(aws, region, q, &tx) {
                    let _ = tx.send(Err(e));
                }
            });
        }
        drop(tx);
        // On an error the receiver goes away, so the region threads' next send fails and they end.
        for item in rx {
            each(item?)?;
        }
        Ok(())
    })
}
