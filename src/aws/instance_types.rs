//! The replacement's instance type, from what EC2 says exists: DescribeInstanceTypes for the
//! source's vCPUs and memory and for the candidates (HVM, the hypervisor the guest is ready
//! for, ENA where the type requires it), DescribeInstanceTypeOfferings for what the zone
//! offers. The family follows the source's (m1 → m5 on Nitro, m4 on Xen, …) and the size is
//! the smallest of that family with at least the source's vCPUs and memory; when the family
//! has none, the smallest fitting type of any current family.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, LocationType};

use super::retry::{Policy, with_policy};
use super::{Aws, AwsError};

/// What pv2hvm needs of an instance type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeInfo {
    pub name: String,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub hypervisor: String,
    /// "required", "supported" or "unsupported".
    pub ena: String,
    pub hvm: bool,
    pub current: bool,
}

/// The family a PV family moves to.
pub fn successor_family(family: &str, nitro: bool) -> &str {
    match (family, nitro) {
        ("t1", true) => "t3",
        ("m1" | "m3", true) => "m5",
        ("m2", true) => "r5",
        ("c1" | "c3", true) => "c5",
        ("t1", false) => "t2",
        ("m1" | "m3", false) => "m4",
        ("m2", false) => "r4",
        ("c1" | "c3", false) => "c4",
        (f, _) => f,
    }
}

/// Picks the replacement for `old` among `types` (already narrowed to what the zone offers):
/// HVM, on the hypervisor asked, ENA-required types only when the AMI has ENA, at least the
/// source's vCPUs and memory; the successor family first, then any current family.
pub fn choose(old: &TypeInfo, types: &[TypeInfo], nitro: bool, ena: bool) -> Result<String, String> {
    let hypervisor = if nitro { "nitro" } else { "xen" };
    let family = old.name.split('.').next().unwrap_or_default();
    let wanted = successor_family(family, nitro);
    let fits = |t: &&TypeInfo| {
        t.hvm
            && t.hypervisor == hypervisor
            && (ena || t.ena != "required")
            && t.vcpus >= old.vcpus
            && t.memory_mib >= old.memory_mib
    };
    let smallest = |it: Vec<&TypeInfo>| {
        it.into_iter().min_by_key(|t| (t.vcpus, t.memory_mib, t.name.clone())).map(|t| t.name.clone())
    };
    let same: Vec<&TypeInfo> = types.iter().filter(fits).filter(|t| t.name.split('.').next() == Some(wanted)).collect();
    if let Some(t) = smallest(same) {
        return Ok(t);
    }
    let any: Vec<&TypeInfo> = types.iter().filter(fits).filter(|t| t.current).collect();
    smallest(any).ok_or_else(|| {
        format!(
            "no {hypervisor} instance type{} with at least {} vCPUs and {} MiB is offered here; pass --instance-type",
            if ena { "" } else { " without required ENA (the AMI has no EnaSupport)" },
            old.vcpus,
            old.memory_mib
        )
    })
}

fn info(t: &aws_sdk_ec2::types::InstanceTypeInfo) -> TypeInfo {
    TypeInfo {
        name: t.instance_type().map(|x| x.as_str().to_string()).unwrap_or_default(),
        vcpus: t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0),
        memory_mib: t.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0),
        hypervisor: t.hypervisor().map(|h| h.as_str().to_string()).unwrap_or_default(),
        ena: t.network_info().and_then(|n| n.ena_support()).map(|e| e.as_str().to_string()).unwrap_or_default(),
        hvm: t.supported_virtualization_types().iter().any(|v| v.as_str() == "hvm"),
        current: t.current_generation().unwrap_or(false),
    }
}

/// DescribeInstanceTypes, every page: the types named, or those matching `filters`.
pub fn describe(aws: &Aws, names: &[String], filters: Vec<Filter>) -> Result<Vec<TypeInfo>, AwsError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let token = next.take();
        let page = aws.block_on(with_policy(
            Policy::FRESH_ID,
            || "describing instance types".to_string(),
            || {
                let mut r = aws.ec2.describe_instance_types().set_next_token(token.clone());
                if names.is_empty() {
                    r = r.set_filters(Some(filters.clone())).max_results(100);
                }
                for n in names {
                    r = r.instance_types(aws_sdk_ec2::types::InstanceType::from(n.as_str()));
                }
                r.send()
            },
        ))?;
        out.extend(page.instance_types().iter().map(info));
        match page.next_token() {
            Some(t) if !t.is_empty() && Some(t) != token.as_deref() => next = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The types offered in `zone` (every page).
pub fn offered_in(aws: &Aws, zone: &str) -> Result<BTreeSet<String>, AwsError> {
    let mut out = BTreeSet::new();
    let mut next: Option<String> = None;
    loop {
        let token = next.take();
        let page = aws.block_on(with_policy(
            Policy::FRESH_ID,
            || format!("listing the instance types {zone} offers"),
            || {
                aws.ec2
                    .describe_instance_type_offerings()
                    .location_type(LocationType::AvailabilityZone)
                    .filters(Filter::builder().name("location").values(zone).build())
                    .set_next_token(token.clone())
                    .send()
            },
        ))?;
        out.extend(
            page.instance_type_offerings().iter().filter_map(|o| o.instance_type()).map(|t| t.as_str().to_string()),
        );
        match page.next_token() {
            Some(t) if !t.is_empty() && Some(t) != token.as_deref() => next = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The replacement for an instance of type `old` in `zone`, for an AMI with or without ENA.
pub fn replacement(
    aws: &Aws,
    old: &str,
    zone: Option<&str>,
    arch: &str,
    nitro: bool,
    ena: bool,
) -> Result<String, String> {
    let err = |e: AwsError| e.to_string();
    let src = describe(aws, &[old.to_string()], Vec::new()).map_err(err)?;
    let src = src.into_iter().next().ok_or_else(|| format!("EC2 does not describe the instance type {old}"))?;
    let filters = vec![
        Filter::builder().name("hypervisor").values(if nitro { "nitro" } else { "xen" }).build(),
        Filter::builder().name("supported-virtualization-type").values("hvm").build(),
        Filter::builder().name("processor-info.supported-architecture").values(arch).build(),
    ];
    let mut types = describe(aws, &[], filters).map_err(err)?;
    if let Some(z) = zone {
        let offered = offered_in(aws, z).map_err(err)?;
        types.retain(|t| offered.contains(&t.name));
    }
    choose(&src, &types, nitro, ena)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, vcpus: i32, memory_mib: i64, hypervisor: &str, ena: &str, current: bool) -> TypeInfo {
        TypeInfo {
            name: name.into(),
            vcpus,
            memory_mib,
            hypervisor: hypervisor.into(),
            ena: ena.into(),
            hvm: true,
            current,
        }
    }

    #[test]
    fn the_replacement_exists_and_fits() {
        let types = vec![
            t("m5.large", 2, 8192, "nitro", "required", false),
            t("m5.xlarge", 4, 16384, "nitro", "required", false),
            t("c5.large", 2, 4096, "nitro", "required", false),
            t("c5.9xlarge", 36, 73728, "nitro", "required", false),
            t("c5.12xlarge", 48, 98304, "nitro", "required", false),
            t("t3.small", 2, 2048, "nitro", "required", true),
            t("m4.large", 2, 8192, "xen", "unsupported", false),
            t("t2.small", 1, 2048, "xen", "unsupported", true),
        ];
        // m1.small has no m5 counterpart of its size: the smallest m5 that fits.
        let m1_small = t("m1.small", 1, 1740, "xen", "unsupported", false);
        assert_eq!(choose(&m1_small, &types, true, true).unwrap(), "m5.large");
        // c5 has 9xlarge, not 8xlarge.
        let c3 = t("c3.8xlarge", 32, 61440, "xen", "unsupported", false);
        assert_eq!(choose(&c3, &types, true, true).unwrap(), "c5.9xlarge");
        assert_eq!(choose(&m1_small, &types, false, false).unwrap(), "m4.large");
        // Without ENA, no Nitro type that requires it.
        let e = choose(&m1_small, &types, true, false).unwrap_err();
        assert!(e.contains("EnaSupport"), "{e}");
        // A family with nothing offered: the smallest current type that fits.
        let only: Vec<TypeInfo> = types.iter().filter(|x| !x.name.starts_with("m5")).cloned().collect();
        assert_eq!(choose(&m1_small, &only, true, true).unwrap(), "t3.small");
    }
}
