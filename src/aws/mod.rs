//! AWS: the EBS direct APIs as a [`crate::io::BlockSource`] and [`crate::io::BlockSink`]
//! ([`ebs`]), the EC2 control calls ([`ec2`]), and the `migrate` / `plan` / `cleanup` flows
//! over them ([`migrate`], [`cleanup`]). The conversion engine never sees this module: it gets
//! block traits.
//!
//! Configuration is the standard chain (environment, profile, SSO, instance role) through
//! `aws-config`; `AWS_ENDPOINT_URL` is honoured. Every call has bounded timeouts and the SDK's
//! standard retries with backoff on throttling and 5xx; block transfers add their own
//! ([`retry`]).

pub mod cleanup;
pub mod discover;
pub mod ebs;
pub mod ec2;
pub mod instance_types;
pub mod migrate;
pub mod retry;
pub mod tags;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// Why an AWS step failed. `what` says which call on which resource; `detail` is the service's
/// own message (or the transport's), on one line.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{what}: {detail}")]
    Call { what: String, detail: String },
    #[error("{0}")]
    Refused(String),
    #[error("{what}: gave up waiting after {seconds} s (last state: {state})")]
    Timeout { what: String, seconds: u64, state: String },
    #[error("{0}")]
    Other(String),
}

impl AwsError {
    /// Wraps an SDK error with the call it came from, as one line: the service's code and
    /// message when it answered, else the transport's own words.
    pub fn call<E>(what: impl Into<String>, err: E) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = match (err.code(), err.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            _ => {
                // The outermost words ("dispatch failure", "timeout") and the innermost cause
                // ("Connection refused (os error 111)").
                let full = aws_sdk_ec2::error::DisplayErrorContext(&err).to_string();
                let top = full.split(": ").next().unwrap_or_default().trim().to_string();
                let mut deepest: &(dyn std::error::Error + 'static) = &err;
                while let Some(next) = deepest.source() {
                    deepest = next;
                }
                let inner = deepest.to_string();
                if inner.is_empty() || inner == top { top } else { format!("{top}: {inner}") }
            }
        };
        AwsError::Call { what: what.into(), detail }
    }
}

/// Where and how to reach AWS.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// The SDK's adaptive retry mode (client-side rate limiting that backs off as the service
    /// throttles): for fleets, where many migrations share one account's request rate.
    pub adaptive_retry: bool,
}

/// An async runtime and clients for one region. Synchronous code (the engine, libext2fs's
/// callbacks) calls in through [`Aws::block_on`]; it must not be called from the runtime's own
/// threads.
pub struct Aws {
    rt: tokio::runtime::Runtime,
    pub conf: aws_config::SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub ebs: aws_sdk_ebs::Client,
    pub region: String,
}

impl Aws {
    pub fn connect(c: &Connection) -> Result<Aws, AwsError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .thread_name("pv2hvm-aws")
            .build()
            .map_err(|e| AwsError::Other(format!("starting the AWS runtime: {e}")))?;
        // Upper bound on one API call, retries included.
        let call = Duration::from_secs(120);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(60).min(call))
            .operation_timeout(call)
            .build();
        let retry = if c.adaptive_retry { RetryConfig::adaptive() } else { RetryConfig::standard() };
        let retry = retry
            .with_max_attempts(8)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).retry_config(retry);
        if let Some(r) = &c.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(p) = &c.profile {
            loader = loader.profile_name(p);
        }
        let conf = rt.block_on(loader.load());
        let region = conf.region().map(|r| r.to_string()).ok_or_else(|| {
            AwsError::Refused("no AWS region: pass --region or set AWS_REGION (or a profile's region)".into())
        })?;
        // Credentials are resolved now, once: a missing or broken chain is one clear line here
        // rather than a failure inside the first call.
        use aws_credential_types::provider::ProvideCredentials;
        let provider = conf
            .credentials_provider()
            .ok_or_else(|| AwsError::Refused("no AWS credentials provider could be configured".into()))?;
        let resolved =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), provider.provide_credentials()).await });
        match resolved {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let mut inner: &(dyn std::error::Error + 'static) = &e;
                while let Some(next) = inner.source() {
                    inner = next;
                }
                return Err(AwsError::Call {
                    what: "loading AWS credentials (environment, profile, SSO, instance role)".into(),
                    detail: format!("none provided any: {inner}"),
                });
            }
            Err(_) => {
                return Err(AwsError::Call {
                    what: "loading AWS credentials".into(),
                    detail: "no answer within 20 s".into(),
                });
            }
        }
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        // EBS calls retry in [`retry`] only: the SDK's retry quota would stop retrying a burst
        // of throttled blocks all at once.
        let ebs_conf = aws_sdk_ebs::config::Builder::from(&conf).retry_config(RetryConfig::disabled());
        let ebs = aws_sdk_ebs::Client::from_conf(ebs_conf.build());
        Ok(Aws { rt, conf, ec2, ebs, region })
    }

    /// An EC2 client for another region (CopyImage is called in the destination region).
    pub fn ec2_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::config::Builder::from(&self.conf).region(aws_config::Region::new(region.to_string()));
        aws_sdk_ec2::Client::from_conf(conf.build())
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }
}

/// The AWS resource kind of an id such as `i-0abc…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Instance,
    Image,
    Snapshot,
}

impl ResourceKind {
    pub fn of(id: &str) -> Option<ResourceKind> {
        match crate::io::cloud_kind(id)? {
            "instance" => Some(ResourceKind::Instance),
            "AMI" => Some(ResourceKind::Image),
            "snapshot" => Some(ResourceKind::Snapshot),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The AWS operations the code calls, as IAM actions: `ec2.describe_images()`,
    /// `client.copy_image()`, `ebs.put_snapshot_block()` and the like.
    fn actions_called() -> std::collections::BTreeSet<String> {
        let sources = [
            include_str!("ebs.rs"),
            include_str!("ec2.rs"),
            include_str!("instance_types.rs"),
            include_str!("migrate/copies.rs"),
            include_str!("migrate/parent.rs"),
            include_str!("discover.rs"),
            include_str!("migrate/mod.rs"),
            include_str!("migrate/plan.rs"),
            include_str!("migrate/register.rs"),
            include_str!("migrate/resume.rs"),
            include_str!("cleanup.rs"),
        ];
        let mut out = std::collections::BTreeSet::new();
        for src in sources {
            let flat: String = src.split_whitespace().collect::<Vec<_>>().join("");
            for (service, receivers) in [("ec2", ["ec2.", "client."]), ("ebs", ["ebs.", "ebs."])] {
                for recv in receivers {
                    for (at, _) in flat.match_indices(recv) {
                        let rest = &flat[at + recv.len()..];
                        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                        if name.is_empty() || !rest[name.len()..].starts_with("()") || name == "clone" {
                            continue;
                        }
                        let pascal: String = name.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect();
                        out.insert(format!("{service}:{pascal}"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_readme_policy_lists_exactly_the_calls_made() {
        let readme = include_str!("../../README.md");
        let start = readme.find("<!-- iam-policy -->").expect("policy start marker");
        let end = readme.find("<!-- /iam-policy -->").expect("policy end marker");
        let listed: std::collections::BTreeSet<String> = readme[start..end]
            .lines()
            .filter_map(|l| l.trim().trim_end_matches(',').strip_prefix('"')?.strip_suffix('"').map(str::to_string))
            .filter(|a| a.starts_with("ec2:") || a.starts_with("ebs:"))
            .collect();
        assert_eq!(listed, actions_called());
    }
}
