//! Who sees an image and who may act on it: the one rule every action
//! follows (DescribeImages, the share actions, SyncImages, DeleteImages,
//! ModifyImageAttribute, ExportImages, DescribeImageFromFamily).
//!
//! An image lives in one region and belongs to one account, its owner (the
//! account that imported or copied it). In that region it is visible to the
//! owner and to every account it is shared with (`image_shares`); anywhere
//! else, and to anyone else, it does not exist. Only the owner may change,
//! delete, export or share it; a recipient may read it and copy it into its
//! own account (SyncImages to the same region). The API turns this into
//! error codes in `api::access`.

use super::images::{image_from_row, Sql, IMAGE_COLUMNS};
use super::{Catalog, CatalogError, ImageRow, ImageView};

/// How the caller stands to a visible image.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// The caller's own image.
    Owned(ImageRow),
    /// Another account's image, shared with the caller.
    Shared(ImageRow),
}

impl Access {
    pub fn image(&self) -> &ImageRow {
        match self {
            Access::Owned(i) | Access::Shared(i) => i,
        }
    }
}

/// Appends `(<image i is visible to uin>)` to a query over `images i`.
pub(super) fn push_visible(sql: &mut Sql, uin: &str) {
    sql.push("(i.account_uin = ")
        .arg(uin)
        .push(" OR i.image_id IN (SELECT s.image_id FROM image_shares s WHERE s.account_uin = ")
        .arg(uin)
        .push("))");
}

impl Catalog {
    /// Appends the visibility condition for a listing: the plain owner
    /// condition when nothing is shared with the caller, so that the common
    /// listing walks its index in order instead of sorting every match.
    pub(super) async fn push_visible_listing(
        &self,
        sql: &mut Sql,
        uin: &str,
    ) -> Result<(), CatalogError> {
        let received =
            sqlx::query("SELECT image_id FROM image_shares WHERE account_uin = $1 LIMIT 1")
                .bind(uin)
                .fetch_optional(self.pool())
                .await?;
        if received.is_some() {
            push_visible(sql, uin);
        } else {
            sql.push("i.account_uin = ").arg(uin);
        }
        Ok(())
    }

    /// The image as the caller may see it in the region, or `None` when it
    /// does not exist for the caller (absent, elsewhere, or not shared).
    pub async fn image_access(
        &self,
        uin: &str,
        region: &str,
        image_id: &str,
    ) -> Result<Option<Access>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(IMAGE_COLUMNS)
            .push(" FROM images i WHERE i.image_id = ")
            .arg(image_id)
            .push(" AND i.region = ")
            .arg(region)
            .push(" AND ");
        push_visible(&mut sql, uin);
        let Some(row) = sql.query().fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let image = image_from_row(&row)?;
        Ok(Some(if image.account_uin == uin {
            Access::Owned(image)
        } else {
            Access::Shared(image)
        }))
    }

    /// DescribeImageFromFamily: the newest NORMAL, non-deprecated image of
    /// the family visible to the caller in the region, if any.
    pub async fn image_from_family(
        &self,
        uin: &str,
        region: &str,
        family: &str,
    ) -> Result<Option<ImageView>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(IMAGE_COLUMNS)
            .push(" FROM images i WHERE i.region = ")
            .arg(region)
            .push(" AND i.image_family = ")
            .arg(family)
            .push(" AND i.state = 'NORMAL' AND i.deprecated = 0 AND ");
        push_visible(&mut sql, uin);
        sql.push(" ORDER BY i.created_at DESC, i.image_id DESC LIMIT 1");
        let Some(row) = sql.query().fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let mut views = self.attach_details(vec![image_from_row(&row)?]).await?;
        Ok(views.pop())
    }
}
