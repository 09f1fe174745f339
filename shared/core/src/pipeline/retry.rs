//! Retries of transient storage and queue errors: exponential backoff with full jitter, a few
//! attempts, then the error surfaces (still transient, so the caller's retry — Lambda, Step
//! Functions, the next cron run — takes over).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::queue::QueueError;
use super::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, including the first (1 = no retry).
    pub attempts: u32,
    /// Backoff cap before the first retry; doubles each retry.
    pub base: Duration,
    /// Largest single wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// No waiting, one try: for tests that inject errors.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            base: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    /// Wait before retry number `retry` (1-based): uniform in [0, min(max, base * 2^(retry-1))].
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(jitter() % (nanos + 1))
    }
}

/// Errors that may go away on retry.
pub trait Retryable {
    fn is_transient(&self) -> bool;
}

impl Retryable for StoreError {
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

impl Retryable for QueueError {
    fn is_transient(&self) -> bool {
        matches!(self, QueueError::Transient(_))
    }
}

/// Runs `op` until it succeeds, fails permanently, or `policy.attempts` tries are used up.
pub fn retry<T, E, F>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Result<T, E>,
{
    let first = op();
    retry_after(policy, what, first, op)
}

/// [`retry`] when the first try already happened elsewhere (e.g. in a concurrent
/// [`get_many`](super::store::ObjectStore::get_many)): `first` counts as attempt 1, so the
/// attempts and backoff are exactly those of [`retry`].
pub fn retry_after<T, E, F>(
    policy: &RetryPolicy,
    what: &str,
    first: Result<T, E>,
    mut op: F,
) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Result<T, E>,
{
    let mut attempt = 1;
    let mut result = first;
    loop {
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < policy.attempts.max(1) => {
                let wait = policy.backoff(attempt);
                tracing::warn!(%e, attempt, ?wait, "{what}: transient error, retrying");
                std::thread::sleep(wait);
                attempt += 1;
                result = op();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Cheap jitter source (no RNG crate): xorshift over a per-call mix of the clock and a counter.
fn jitter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_micros(10),
            max: Duration::from_micros(50),
        }
    }

    #[test]
    fn retries_transient_errors_then_succeeds() {
        let mut calls = 0;
        let r: Result<u32, StoreError> = retry(&fast(), "get", || {
            calls += 1;
            if calls < 3 {
                Err(StoreError::Transient("slow down".into()))
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 3);
    }

    #[test]
    fn gives_up_after_the_attempts_and_never_retries_permanent_errors() {
        let mut calls = 0;
        let r: Result<(), StoreError> = retry(&fast(), "get", || {
            calls += 1;
            Err(StoreError::Transient("down".into()))
        });
        assert!(matches!(r, Err(StoreError::Transient(_))));
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<(), QueueError> = retry(&fast(), "receive", || {
            calls += 1;
            Err(QueueError::Permanent("denied".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_first_result_from_elsewhere_counts_as_the_first_attempt() {
        let mut calls = 0;
        let first: Result<u32, StoreError> = Err(StoreError::Transient("slow down".into()));
        let r = retry_after(&fast(), "get", first, || {
            calls += 1;
            Err(StoreError::Transient("still slow".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, 2, "3 attempts in all, the first one given");
        let mut calls = 0;
        let r = retry_after(&fast(), "get", Ok::<u32, StoreError>(1), || {
            calls += 1;
            Ok(2)
        });
        assert_eq!((r.unwrap(), calls), (1, 0));
    }

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        for retry in 1..10 {
            assert!(p.backoff(retry) <= Duration::from_millis(300));
        }
        assert_eq!(RetryPolicy::none().backoff(3), Duration::ZERO);
    }
}
