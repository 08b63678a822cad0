//! How a worker waits out its back-ends. A catalog call of a running job
//! (the account's usage) is retried through transient errors (PostgreSQL
//! restarting, connections refused or dropped) until the catalog answers or
//! the process shuts down; the outcome waits out a full catalog volume too
//! (`catalog::patience`): the outcome of a finished import is never thrown
//! away because the database blinked or its disk filled. The blob store waits out
//! its own outages (`blobs.retry_deadline_secs`, see `blobstore`); what a
//! failed import stored is removed even when the store is still down then:
//! the removal goes on in the background until it succeeds.

use std::future::Future;
use std::time::Duration;

use super::Workers;
use crate::blobstore::BlobError;
use crate::catalog::jobs::ClaimedJob;
use crate::catalog::CatalogError;
use crate::retry::{retry, Retried, RetryPolicy, Transience};

/// Pauses of the background removal of a failed import's blobs.
const CLEAN_UP_BACKOFF: RetryPolicy = RetryPolicy {
    deadline: None,
    first_backoff: Duration::from_secs(2),
    max_backoff: Duration::from_secs(60),
};

impl Workers {
    /// Runs a catalog call of a running job until the catalog answers, the
    /// error is permanent, or the process shuts down.
    pub(super) async fn on_catalog<T, F, Fut>(&self, what: &str, f: F) -> Result<T, CatalogError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CatalogError>>,
    {
        retry(
            &RetryPolicy::until_stopped(),
            what,
            Some(&self.shutdown),
            CatalogError::transience,
            f,
        )
        .await
        .map_err(Retried::into_last)
    }

    /// Deletes the blobs of a failed import and aborts its unfinished
    /// uploads. If the blob store is still failing once its own deadline has
    /// passed, the removal goes on in the background, pausing up to a minute
    /// between tries, until it succeeds or the process stops (the reaper of
    /// the next start takes what is left then).
    pub(super) async fn remove_failed_blobs(&self, job: &ClaimedJob) {
        let Err(e) = self.try_remove_blobs(job).await else {
            return;
        };
        tracing::warn!(image_id = %job.image_id, error = %e, "removing a failed import's blobs failed; retrying in the background");
        let (me, job) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let done = retry(
                &CLEAN_UP_BACKOFF,
                "removing a failed import's blobs",
                Some(&me.shutdown),
                |_: &BlobError| Transience::Transient,
                || me.try_remove_blobs(&job),
            )
            .await;
            match done {
                Ok(()) => {
                    tracing::info!(image_id = %job.image_id, "a failed import's blobs removed")
                }
                Err(e) => {
                    tracing::warn!(image_id = %job.image_id, error = %e.into_last(), "a failed import's blobs are left for the reaper")
                }
            }
        });
    }

    async fn try_remove_blobs(&self, job: &ClaimedJob) -> Result<(), BlobError> {
        for disk in &job.disks {
            self.blobs.delete(&disk.blob_key).await?;
        }
        self.blobs.remove_partials(&job.image_id).await?;
        Ok(())
    }
}
