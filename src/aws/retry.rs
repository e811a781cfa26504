//! Retries of the EBS data-plane calls, on top of the SDK's own: a throttled or failed block
//! is tried again with exponential backoff and jitter, independently of the SDK's retry quota,
//! which a burst of throttling across 64 requests in flight would otherwise use up at once.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};

use super::AwsError;

/// Attempts per block, the first included.
pub const ATTEMPTS: u32 = 10;
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

const THROTTLING: [&str; 6] = [
    "RequestThrottledException",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

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
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let spread = d.as_millis() as u64 / 2;
    Duration::from_millis(spread + u64::from(nanos) % (spread + 1))
}

/// Runs `call` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times.
pub async fn with_retries<T, E, F, Fut>(what: impl Fn() -> String, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tracing::debug!(call = %what(), attempt, "retrying after a transient error");
                tokio::time::sleep(jittered(delay)).await;
                delay = (delay * 2).min(MAX_DELAY);
                attempt += 1;
            }
            Err(e) => {
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
}
