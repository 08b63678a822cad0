//! Image shares (ModifyImageSharePermission, DescribeImageSharePermission).
//! A share is a row (image, recipient account); who may see what follows
//! from it in `visibility`.

use super::{col, now_ms, Catalog, CatalogError};

/// Most accounts one image may be shared with (the SDK's documented limit).
pub const MAX_SHARES_PER_IMAGE: i64 = 500;

/// One recipient of a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub account_uin: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareOutcome {
    Done,
    /// The image is gone, or no longer NORMAL (a race with a delete).
    NotShareable,
    /// Already shared with this account.
    AlreadyShared(String),
    /// More than [`MAX_SHARES_PER_IMAGE`] shares would result.
    OverQuota,
}

impl Catalog {
    /// The accounts the image is shared with, oldest share first.
    pub async fn image_shares(&self, image_id: &str) -> Result<Vec<Share>, CatalogError> {
        let rows = sqlx::query(
            "SELECT account_uin, created_at FROM image_shares WHERE image_id = $1 \
             ORDER BY created_at, account_uin",
        )
        .bind(image_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Share {
                    account_uin: col(r, "account_uin")?,
                    created_at: col(r, "created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(CatalogError::from)
    }

    /// Shares the owner's NORMAL image with every account of `uins` (all or
    /// none). The image row is locked first, so a concurrent delete either
    /// sees these shares or has already removed the image.
    pub async fn share_image(
        &self,
        owner: &str,
        image_id: &str,
        uins: &[String],
    ) -> Result<ShareOutcome, CatalogError> {
        let now = now_ms();
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        let locked = sqlx::query(
            "UPDATE images SET updated_at = $3 WHERE image_id = $1 AND account_uin = $2 \
             AND state = 'NORMAL'",
        )
        .bind(image_id)
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if locked == 0 {
            tx.rollback().await?;
            return Ok(ShareOutcome::NotShareable);
        }
        for uin in uins {
            let exists = sqlx::query(
                "SELECT created_at FROM image_shares WHERE image_id = $1 AND account_uin = $2",
            )
            .bind(image_id)
            .bind(uin)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                tx.rollback().await?;
                return Ok(ShareOutcome::AlreadyShared(uin.clone()));
            }
            sqlx::query(
                "INSERT INTO image_shares (image_id, account_uin, created_at) VALUES ($1, $2, $3)",
            )
            .bind(image_id)
            .bind(uin)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let r = sqlx::query("SELECT COUNT(*) AS n FROM image_shares WHERE image_id = $1")
            .bind(image_id)
            .fetch_one(&mut *tx)
            .await?;
        if col::<i64>(&r, "n")? > MAX_SHARES_PER_IMAGE {
            tx.rollback().await?;
            return Ok(ShareOutcome::OverQuota);
        }
        tx.commit().await?;
        self.note_change();
        Ok(ShareOutcome::Done)
    }

    /// Withdraws the shares of the owner's image with `uins`; withdrawing a
    /// share that does not exist is not an error (the result is the same).
    pub async fn unshare_image(
        &self,
        owner: &str,
        image_id: &str,
        uins: &[String],
    ) -> Result<(), CatalogError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool().begin().await?;
        for uin in uins {
            sqlx::query(
                "DELETE FROM image_shares WHERE account_uin = $2 AND image_id IN \
                 (SELECT image_id FROM images WHERE image_id = $1 AND account_uin = $3)",
            )
            .bind(image_id)
            .bind(uin)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.note_change();
        Ok(())
    }
}
