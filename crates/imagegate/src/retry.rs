//! Waiting out a back-end outage. An operation on the catalog or the blob
//! store that fails with a transient error (PostgreSQL restarting, S3
//! answering 500 or 503 SlowDown, a connection reset) is tried again with
//! exponential backoff and jitter until it succeeds, fails for good, the
//! deadline passes, or the caller stops waiting (shutdown).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Whether an error may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// The back-end is down, restarting or overloaded: try again.
    Transient,
    /// Trying again cannot help (a refusal, a missing object, a bug).
    Permanent,
}

/// How long and how often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Stop once an operation has kept failing for this long; `None`: until
    /// it succeeds or the caller stops waiting.
    pub deadline: Option<Duration>,
    /// The first pause; each later one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The blob store's policy: up to `deadline`, pauses from 0.5 s to 8 s.
    pub fn with_deadline(deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            deadline: Some(deadline),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }

    /// Until the operation succeeds or the caller stops: pauses from 0.5 s to 5 s.
    pub fn until_stopped() -> RetryPolicy {
        RetryPolicy {
            deadline: None,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why a retried operation ended without success.
#[derive(Debug)]
pub enum Retried<E> {
    /// A permanent error, returned at once.
    Permanent(E),
    /// Still failing when the deadline passed.
    Outlasted(Outage<E>),
    /// The caller stopped waiting (shutdown) while it was still failing.
    Stopped(Outage<E>),
}

/// An operation that kept failing: its last error, for how long, how often.
#[derive(Debug)]
pub struct Outage<E> {
    pub last: E,
    pub waited: Duration,
    pub attempts: u32,
}

impl<E> Retried<E> {
    /// The error that ended the retries.
    pub fn into_last(self) -> E {
        match self {
            Retried::Permanent(e) => e,
            Retried::Outlasted(o) | Retried::Stopped(o) => o.last,
        }
    }
}

/// Pauses of exponential backoff with jitter: each is drawn between half and
/// all of the current step, and the step doubles up to the policy's maximum.
struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            step: policy.first_backoff,
            max: policy.max_backoff.max(policy.first_backoff),
        }
    }

    fn next(&mut self) -> Duration {
        let half = self.step / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        let pause = half + jitter;
        self.step = (self.step * 2).min(self.max);
        pause
    }
}

/// Runs `op` until it succeeds or `classify` calls its error permanent, the
/// policy's deadline passes, or `stop` is cancelled. `what` names the
/// operation in the log: the first failure and the recovery (with how long
/// it took) are logged once each, the give-up once.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    stop: Option<&CancellationToken>,
    classify: impl Fn(&E) -> Transience,
    mut op: F,
) -> Result<T, Retried<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(policy);
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let error = match op().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(
                        operation = what,
                        attempts,
                        waited_secs = started.elapsed().as_secs_f64(),
                        "back-end answered again"
                    );
                }
                return Ok(value);
            }
            Err(e) => e,
        };
        if classify(&error) == Transience::Permanent {
            return Err(Retried::Permanent(error));
        }
        let waited = started.elapsed();
        if attempts == 1 {
            tracing::warn!(operation = what, error = %error, "back-end failing; retrying with backoff");
        }
        let outage = |last| Outage {
            last,
            waited,
            attempts,
        };
        let mut pause = backoff.next();
        if let Some(deadline) = policy.deadline {
            if waited >= deadline {
                tracing::warn!(operation = what, attempts, waited_secs = waited.as_secs_f64(), error = %error, "back-end still failing at the deadline; giving up");
                return Err(Retried::Outlasted(outage(error)));
            }
            // The last try comes at the deadline, not a pause after it.
            pause = pause.min(deadline - waited);
        }
        match stop {
            Some(token) => tokio::select! {
                _ = token.cancelled() => return Err(Retried::Stopped(outage(error))),
                _ = tokio::time::sleep(pause) => {}
            },
            None => tokio::time::sleep(pause).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(deadline: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            deadline,
            first_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(8),
        }
    }

    fn transient_if_odd(e: &u32) -> Transience {
        if e % 2 == 1 {
            Transience::Transient
        } else {
            Transience::Permanent
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = retry(&quick(None), "test", None, transient_if_odd, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                n if n < 4 => Err(1u32),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(got.ok(), Some("done"));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(&quick(None), "test", None, transient_if_odd, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(2u32)
        })
        .await;
        assert!(matches!(got, Err(Retried::Permanent(2))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_outage_past_the_deadline_is_outlasted() {
        let deadline = Duration::from_millis(60);
        let t0 = Instant::now();
        let got: Result<(), _> = retry(
            &quick(Some(deadline)),
            "test",
            None,
            transient_if_odd,
            || std::future::ready(Err(3u32)),
        )
        .await;
        let Err(Retried::Outlasted(outage)) = got else {
            panic!("not outlasted: {got:?}");
        };
        assert!(outage.waited >= deadline, "{outage:?}");
        assert!(outage.attempts >= 3, "{outage:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait() {
        let token = CancellationToken::new();
        token.cancel();
        let got: Result<(), _> = retry(
            &RetryPolicy::until_stopped(),
            "test",
            Some(&token),
            transient_if_odd,
            || std::future::ready(Err(1u32)),
        )
        .await;
        assert!(matches!(
            got,
            Err(Retried::Stopped(Outage { attempts: 1, .. }))
        ));
    }

    #[test]
    fn pauses_grow_to_the_cap_with_jitter() {
        let mut b = Backoff::new(&RetryPolicy::with_deadline(Duration::from_secs(60)));
        let pauses: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(pauses[0] >= Duration::from_millis(250) && pauses[0] <= Duration::from_millis(500));
        for p in &pauses {
            assert!(*p <= Duration::from_secs(8), "{pauses:?}");
        }
        assert!(pauses[7] >= Duration::from_secs(4), "{pauses:?}");
    }
}
