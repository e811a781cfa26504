//! Retries of the EBS data-plane calls and of the EC2 calls on fresh ids, on top of the SDK's
//! own: a throttled or failed call is tried again with exponential backoff and jitter,
//! independently of the SDK's retry quota, which a burst of throttling across 64 requests in
//! flight would otherwise use up at once.
//!
//! What is transient follows the AWS references: throttling, 5xx, timeouts and failed
//! connections for every call; and per call, the errors AWS documents as passing
//! ([`Policy`]): `ResourceNotFoundException` on PutSnapshotBlock just after StartSnapshot,
//! `ValidationException` "Failed to read block data", `ConcurrentLimitExceededException` on
//! StartSnapshot, and `*.NotFound` for an id EC2 made a moment ago (eventual consistency).

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};

use super::AwsError;

/// Attempts per block, the first included.
pub const ATTEMPTS: u32 = 10;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

const THROTTLING: [&str; 7] = [
    "RequestThrottledException",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "InternalServerException",
];

/// Which calls get which extra retries, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub attempts: u32,
    /// Keep trying errors this policy calls transient until this much time has passed
    /// (counted from the first attempt), even past `attempts`.
    pub patience: Duration,
    pub extra: fn(code: &str, message: &str) -> bool,
    /// The client retries throttling and 5xx itself (EC2, with the SDK's standard retries):
    /// only the extra errors are retried here, so attempts do not multiply.
    pub client_retries: bool,
}

fn none(_: &str, _: &str) -> bool {
    false
}

/// PutSnapshotBlock: the snapshot may not be visible yet right after StartSnapshot
/// (the EBS team's advice in awslabs/coldsnap issue 43: wait and retry), and "Failed to read
/// block data" is retryable (EC2 API reference, error retries).
fn put_block(code: &str, message: &str) -> bool {
    code == "ResourceNotFoundException"
        || (code == "ValidationException" && message.contains("Failed to read block data"))
}

/// StartSnapshot: too many snapshots in progress at once.
fn start(code: &str, _: &str) -> bool {
    code == "ConcurrentLimitExceededException"
}

/// EC2 on an id it just made (EC2 developer guide, "Eventual consistency").
fn not_found(code: &str, _: &str) -> bool {
    code.ends_with(".NotFound")
}

impl Policy {
    /// Throttling, 5xx, timeouts: [`ATTEMPTS`] tries.
    pub const DEFAULT: Policy =
        Policy { attempts: ATTEMPTS, patience: Duration::ZERO, extra: none, client_retries: false };
    /// PutSnapshotBlock: about two minutes of patience, as coldsnap has.
    pub const PUT_BLOCK: Policy =
        Policy { attempts: ATTEMPTS, patience: Duration::from_secs(120), extra: put_block, client_retries: false };
    pub const START_SNAPSHOT: Policy =
        Policy { attempts: ATTEMPTS, patience: Duration::from_secs(300), extra: start, client_retries: false };
    /// A Describe of an id the user gave, which may have been made a moment ago: a short
    /// patience, so that a mistyped id still fails fast.
    pub const LOOKUP: Policy =
        Policy { attempts: ATTEMPTS, patience: Duration::from_secs(10), extra: not_found, client_retries: true };
    /// EC2 calls naming an id made moments ago.
    pub const FRESH_ID: Policy =
        Policy { attempts: ATTEMPTS, patience: Duration::from_secs(120), extra: not_found, client_retries: true };
}

fn code_message<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<(String, String)> {
    match e {
        SdkError::ServiceError(ctx) => Some((
            ctx.err().code().unwrap_or_default().to_string(),
            ctx.err().message().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

/// Throttling, a 5xx, a timeout or a failed connection: worth another attempt.
pub fn transient<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(ctx) => {
            ctx.err().code().is_some_and(|c| THROTTLING.contains(&c)) || ctx.raw().status().as_u16() >= 500
        }
        _ => false,
    }
}

/// A delay between `d / 2` and `d`, so that many requests throttled together spread out.
pub(crate) fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let spread = d.as_millis() as u64 / 2;
    Duration::from_millis(spread + u64::from(nanos) % (spread + 1))
}

/// Runs `call` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
pub async fn with_retries<T, E, F, Fut>(what: impl Fn() -> String, call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    with_policy(Policy::DEFAULT, what, call).await
}

/// As [`with_retries`], with the extra transient errors and patience of `policy`.
pub async fn with_policy<T, E, F, Fut>(policy: Policy, what: impl Fn() -> String, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    let began = Instant::now();
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let extra = code_message(&e).is_some_and(|(c, m)| (policy.extra)(&c, &m));
                let retried = extra || (transient(&e) && !policy.client_retries);
                let again = (attempt < policy.attempts && retried) || (extra && began.elapsed() < policy.patience);
                if again {
                    tracing::debug!(call = %what(), attempt, "retrying after a transient error");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                    continue;
                }
                let err = AwsError::call(what(), e);
                return Err(match err {
                    AwsError::Call { what, detail } if attempt > 1 => {
                        AwsError::Call { what, detail: format!("{detail} (after {attempt} attempts)") }
                    }
                    other => other,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        for ms in [100u64, 800, 5000] {
            let d = jittered(Duration::from_millis(ms));
            assert!(d >= Duration::from_millis(ms / 2) && d <= Duration::from_millis(ms), "{d:?}");
        }
    }

    #[test]
    fn each_call_retries_what_aws_documents_as_passing_for_it() {
        assert!((Policy::PUT_BLOCK.extra)("ResourceNotFoundException", "The snapshot does not exist"));
        assert!((Policy::PUT_BLOCK.extra)("ValidationException", "Failed to read block data"));
        assert!(!(Policy::PUT_BLOCK.extra)("ValidationException", "the checksum does not match"));
        assert!((Policy::START_SNAPSHOT.extra)("ConcurrentLimitExceededException", ""));
        assert!((Policy::FRESH_ID.extra)("InvalidAMIID.NotFound", ""));
        assert!(!(Policy::DEFAULT.extra)("ResourceNotFoundException", ""));
    }
}
