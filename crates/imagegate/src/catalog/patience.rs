//! How a worker writes the outcome of a task it ran (an import, an export):
//! the one write that must not be lost. It waits out what can pass by
//! itself: transient errors (PostgreSQL restarting, SQLite busy) and a full
//! catalog volume (SQLite's SQLITE_FULL, PostgreSQL's 53100).
//!
//! Waiting is the only useful answer to a full volume: no other worker can
//! take the task over meanwhile (a claim is a write too), and giving up
//! would leave the task RUNNING until its lease expires, then run all of it
//! again. Before the first wait the caller frees what the task itself holds
//! (`make_room`: scratch space, partial files), which is often enough.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CatalogError;
use crate::retry::{retry, Retried, RetryPolicy};

/// The first pause while the volume is full; each later one doubles.
const FULL_FIRST_PAUSE: Duration = Duration::from_millis(500);
/// A write tried at least this often while the volume stays full.
const FULL_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `write` until it succeeds, fails for good, or `stop` is cancelled
/// (then the last error is returned and the lease decides, as before).
pub async fn write_outcome<T, W, WFut, R, RFut>(
    what: &str,
    stop: &CancellationToken,
    mut write: W,
    make_room: R,
) -> Result<T, CatalogError>
where
    W: FnMut() -> WFut,
    WFut: Future<Output = Result<T, CatalogError>>,
    R: FnOnce() -> RFut,
    RFut: Future<Output = ()>,
{
    let mut make_room = Some(make_room);
    let mut pause = FULL_FIRST_PAUSE;
    let mut waited_for_room = false;
    loop {
        let full = match retry(
            &RetryPolicy::until_stopped(),
            what,
            Some(stop),
            CatalogError::transience,
            &mut write,
        )
        .await
        {
            Ok(value) => {
                if waited_for_room {
                    tracing::info!(operation = what, "the catalog's volume has room again");
                }
                return Ok(value);
            }
            Err(Retried::Permanent(e)) if e.is_storage_full() => e,
            Err(other) => return Err(other.into_last()),
        };
        if let Some(free) = make_room.take() {
            free().await;
            continue;
        }
        if !waited_for_room {
            tracing::error!(
                operation = what,
                "the catalog's volume is full: the task's outcome waits for room"
            );
            waited_for_room = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(full),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(FULL_MAX_PAUSE);
    }
}
