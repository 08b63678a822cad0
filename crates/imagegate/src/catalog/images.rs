//! Image rows: the ImportImage transaction, the DescribeImages query, deletion
//! and attribute changes. Everything is scoped by (account uin, region): an
//! image of another account or region is simply not found.

use super::{col, is_unique_violation, now_ms, Catalog, CatalogError};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};
use std::collections::HashMap;

use crate::domain::ImageState;

/// Everything ImportImage writes, already validated.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub account_uin: String,
    pub region: String,
    pub image_name: String,
    pub description: String,
    /// Canonical OS name from the OS list, e.g. `CentOS`.
    pub os_type: String,
    pub os_version: String,
    pub architecture: String,
    pub platform: String,
    pub os_name: String,
    pub license_type: String,
    pub boot_mode: String,
    pub image_family: String,
    pub force: bool,
    pub is_support_cloudinit: bool,
    pub tags: Vec<(String, String)>,
    /// Source URL of each disk; index 0 is the system disk.
    pub disk_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Created { image_id: String },
    DuplicateName,
    QuotaExceeded,
}

/// One `images` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    pub image_id: String,
    pub account_uin: String,
    pub region: String,
    pub image_name: String,
    pub description: String,
    pub os_type: String,
    pub os_version: String,
    pub architecture: String,
    pub platform: String,
    pub os_name: String,
    pub state: ImageState,
    pub image_size_gib: i64,
    pub license_type: String,
    pub boot_mode: String,
    pub image_family: String,
    pub deprecated: bool,
    pub force: bool,
    pub is_support_cloudinit: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One `image_disks` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRow {
    pub disk_index: i64,
    pub disk_usage: String,
    pub source_url: String,
    pub size_gib: i64,
    pub snapshot_id: String,
    pub blob_key: Option<String>,
}

/// An image with its tags and disks, as DescribeImages shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageView {
    pub image: ImageRow,
    pub tags: Vec<(String, String)>,
    pub disks: Vec<DiskRow>,
}

/// One DescribeImages condition. Conditions AND; the values of one OR.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    ImageIds(Vec<String>),
    /// Substring match on the name, case-insensitive (ASCII).
    NameContains(Vec<String>),
    /// Substring match on the platform, case-insensitive (ASCII).
    PlatformContains(Vec<String>),
    TagKey(Vec<String>),
    TagValue(Vec<String>),
    Tag {
        key: String,
        values: Vec<String>,
    },
    /// Only the caller's own images (`image-type` PRIVATE_IMAGE).
    Owned,
    /// Only images shared with the caller (`image-type` SHARED_IMAGE).
    SharedWithCaller,
    /// Images with a disk whose snapshot is one of these (CBS DescribeSnapshots).
    SnapshotIds(Vec<String>),
    /// Matches nothing (e.g. `image-type` PUBLIC_IMAGE only).
    Nothing,
}

/// A DescribeImages page request.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageQuery {
    pub conditions: Vec<Condition>,
    pub offset: i64,
    pub limit: i64,
}

/// Changes of ModifyImageAttribute; `None` leaves a column alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageChanges {
    pub image_name: Option<String>,
    pub description: Option<String>,
    pub image_family: Option<String>,
    pub deprecated: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyOutcome {
    Modified,
    NotFound,
    IncorrectState,
    DuplicateName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Rows are gone; these blob keys should be removed from the store.
    Deleted {
        blob_keys: Vec<String>,
    },
    NotFound(String),
    IncorrectState(String),
    /// The owner's image is shared with some account (`InvalidImageId.InShared`).
    InShared(String),
}

/// Builds a query with numbered `$n` placeholders and its arguments together,
/// so that the two can never drift apart.
#[derive(Default)]
pub(super) struct Sql {
    text: String,
    args: Vec<Bind>,
}

#[derive(Debug, Clone, PartialEq)]
enum Bind {
    Text(String),
    Int(i64),
}

impl Sql {
    pub(super) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub(super) fn arg(&mut self, v: impl Into<String>) -> &mut Self {
        self.bind(Bind::Text(v.into()))
    }

    pub(super) fn int(&mut self, v: i64) -> &mut Self {
        self.bind(Bind::Int(v))
    }

    fn bind(&mut self, b: Bind) -> &mut Self {
        self.args.push(b);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// `($a, $b, …)`
    fn list(&mut self, vs: &[String]) -> &mut Self {
        self.text.push('(');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.arg(v.clone());
        }
        self.text.push(')');
        self
    }

    pub(super) fn query(&self) -> Query<'_, Any, AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(self.text.as_str()));
        for a in &self.args {
            q = match a {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// `%value%` with LIKE's own wildcards escaped (escape char `\`), lower-cased.
fn like_pattern(v: &str) -> String {
    let mut p = String::with_capacity(v.len() + 2);
    p.push('%');
    for c in v.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

pub(super) const IMAGE_COLUMNS: &str =
    "i.image_id, i.account_uin, i.region, i.image_name, i.description, \
     i.os_type, i.os_version, i.architecture, i.platform, i.os_name, i.state, i.image_size_gib, \
     i.license_type, i.boot_mode, i.image_family, i.deprecated, i.force, i.is_support_cloudinit, \
     i.created_at, i.updated_at";

pub(super) fn image_from_row(r: &AnyRow) -> Result<ImageRow, sqlx::Error> {
    Ok(ImageRow {
        image_id: col(r, "image_id")?,
        account_uin: col(r, "account_uin")?,
        region: col(r, "region")?,
        image_name: col(r, "image_name")?,
        description: col(r, "description")?,
        os_type: col(r, "os_type")?,
        os_version: col(r, "os_version")?,
        architecture: col(r, "architecture")?,
        platform: col(r, "platform")?,
        os_name: col(r, "os_name")?,
        state: col(r, "state")?,
        image_size_gib: col(r, "image_size_gib")?,
        license_type: col(r, "license_type")?,
        boot_mode: col(r, "boot_mode")?,
        image_family: col(r, "image_family")?,
        deprecated: col::<i64>(r, "deprecated")? != 0,
        force: col::<i64>(r, "force")? != 0,
        is_support_cloudinit: col::<i64>(r, "is_support_cloudinit")? != 0,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
    })
}

/// Blob key of a disk in the store: `<ImageId>.qcow2` for the system disk,
/// `<ImageId>-<n>.qcow2` for data disk n. Fixed at import so that whatever
/// a worker writes can always be found and removed.
pub fn blob_key_for(image_id: &str, disk_index: usize) -> String {
    if disk_index == 0 {
        format!("{image_id}.qcow2")
    } else {
        format!("{image_id}-{disk_index}.qcow2")
    }
}

impl Catalog {
    /// Whether the account already has an image of that name in the region
    /// (`except`: an image id to ignore, for renames).
    pub async fn name_taken(
        &self,
        uin: &str,
        region: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<bool, CatalogError> {
        let row = sqlx::query(
            "SELECT image_id FROM images WHERE account_uin = $1 AND region = $2 AND image_name = $3",
        )
        .bind(uin)
        .bind(region)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => false,
            Some(r) => Some(col::<String>(&r, "image_id")?.as_str()) != except,
        })
    }

    /// Images counted against the account's quota in the region.
    pub async fn quota_used(&self, uin: &str, region: &str) -> Result<i64, CatalogError> {
        let row =
            sqlx::query("SELECT used FROM quota_usage WHERE account_uin = $1 AND region = $2")
                .bind(uin)
                .bind(region)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => col(&r, "used")?,
            None => 0,
        })
    }

    /// One page of the images visible to the account in a region (its own
    /// and those shared with it), newest first, with the total number of
    /// matches.
    pub async fn describe_images(
        &self,
        uin: &str,
        region: &str,
        q: &ImageQuery,
    ) -> Result<(i64, Vec<ImageView>), CatalogError> {
        let mut filter = Sql::default();
        filter.push(" FROM images i WHERE i.region = ").arg(region);
        filter.push(" AND ");
        self.push_visible_listing(&mut filter, uin).await?;
        for c in &q.conditions {
            push_condition(&mut filter, c, uin);
        }
        // The page walks the listing index newest first and stops after
        // Offset + Limit matches; the total is a separate index-only count
        // (a window count over the page query would load and sort every
        // match: ~20 ms instead of ~4 for 1,000 matches of 10,000 images).
        // Tag conditions are `IN (subquery)` so that the count is answered
        // from the tag index. Not one snapshot: under concurrent writes the
        // total may differ from the page by those writes, as on the cloud.
        let mut page = Sql {
            text: format!("SELECT {IMAGE_COLUMNS}"),
            args: Vec::new(),
        };
        page.text.push_str(&filter.text);
        page.args.extend(filter.args.iter().cloned());
        page.push(" ORDER BY i.created_at DESC, i.image_id DESC LIMIT ")
            .int(q.limit.max(0))
            .push(" OFFSET ")
            .int(q.offset.max(0));
        let rows = if q.limit > 0 {
            page.query().fetch_all(&self.pool).await?
        } else {
            Vec::new()
        };
        // A short first page is the whole answer: no count needed.
        let total = if q.offset == 0 && (rows.len() as i64) < q.limit {
            rows.len() as i64
        } else {
            let mut count = Sql {
                text: "SELECT COUNT(*) AS total_count".into(),
                args: filter.args.clone(),
            };
            count.text.push_str(&filter.text);
            let r = count.query().fetch_one(&self.pool).await?;
            col::<i64>(&r, "total_count")?
        };
        let images = rows
            .iter()
            .map(image_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let views = self.attach_details(images).await?;
        Ok((total, views))
    }

    /// Loads tags and disks of a page of images in two queries.
    pub(super) async fn attach_details(
        &self,
        images: Vec<ImageRow>,
    ) -> Result<Vec<ImageView>, CatalogError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = images.iter().map(|i| i.image_id.clone()).collect();
        let mut tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut sql = Sql::default();
        sql.push("SELECT image_id, tag_key, tag_value FROM image_tags WHERE image_id IN ")
            .list(&ids)
            .push(" ORDER BY image_id, tag_key");
        for r in sql.query().fetch_all(&self.pool).await? {
            tags.entry(col(&r, "image_id")?)
                .or_default()
                .push((col(&r, "tag_key")?, col(&r, "tag_value")?));
        }
        let mut disks: HashMap<String, Vec<DiskRow>> = HashMap::new();
        let mut sql = Sql::default();
        sql.push(
            "SELECT image_id, disk_index, disk_usage, source_url, size_gib, snapshot_id, blob_key \
             FROM image_disks WHERE image_id IN ",
        )
        .list(&ids)
        .push(" ORDER BY image_id, disk_index");
        for r in sql.query().fetch_all(&self.pool).await? {
            disks
                .entry(col(&r, "image_id")?)
                .or_default()
                .push(DiskRow {
                    disk_index: col(&r, "disk_index")?,
                    disk_usage: col(&r, "disk_usage")?,
                    source_url: col(&r, "source_url")?,
                    size_gib: col(&r, "size_gib")?,
                    snapshot_id: col(&r, "snapshot_id")?,
                    blob_key: col(&r, "blob_key")?,
                });
        }
        Ok(images
            .into_iter()
            .map(|image| ImageView {
                tags: tags.remove(&image.image_id).unwrap_or_default(),
                disks: disks.remove(&image.image_id).unwrap_or_default(),
                image,
            })
            .collect())
    }

    /// State of each of the account's images among `ids` (absent: not found).
    pub async fn image_states(
        &self,
        uin: &str,
        region: &str,
        ids: &[String],
    ) -> Result<HashMap<String, ImageState>, CatalogError> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut sql = Sql::default();
        sql.push("SELECT image_id, state FROM images WHERE account_uin = ")
            .arg(uin)
            .push(" AND region = ")
            .arg(region)
            .push(" AND image_id IN ")
            .list(ids);
        for r in sql.query().fetch_all(&self.pool).await? {
            out.insert(col(&r, "image_id")?, col(&r, "state")?);
        }
        Ok(out)
    }

    /// Applies ModifyImageAttribute changes to one of the account's images.
    pub async fn modify_image(
        &self,
        uin: &str,
        region: &str,
        image_id: &str,
        changes: &ImageChanges,
    ) -> Result<ModifyOutcome, CatalogError> {
        let mut sql = Sql::default();
        sql.push("UPDATE images SET updated_at = ").int(now_ms());
        if let Some(v) = &changes.image_name {
            sql.push(", image_name = ").arg(v.clone());
        }
        if let Some(v) = &changes.description {
            sql.push(", description = ").arg(v.clone());
        }
        if let Some(v) = &changes.image_family {
            sql.push(", image_family = ").arg(v.clone());
        }
        if let Some(v) = changes.deprecated {
            sql.push(if v {
                ", deprecated = 1"
            } else {
                ", deprecated = 0"
            });
        }
        sql.push(" WHERE image_id = ")
            .arg(image_id)
            .push(" AND account_uin = ")
            .arg(uin)
            .push(" AND region = ")
            .arg(region)
            .push(" AND state NOT IN ('IMPORTING', 'CREATING', 'SYNCING')");
        let _gate = self.write_gate().await;
        match sql.query().execute(&self.pool).await {
            Ok(r) if r.rows_affected() == 1 => {
                self.note_change();
                Ok(ModifyOutcome::Modified)
            }
            Ok(_) => {
                let states = self
                    .image_states(uin, region, &[image_id.to_owned()])
                    .await?;
                Ok(if states.is_empty() {
                    ModifyOutcome::NotFound
                } else {
                    ModifyOutcome::IncorrectState
                })
            }
            Err(e) if is_unique_violation(&e) => Ok(ModifyOutcome::DuplicateName),
            Err(e) => Err(e.into()),
        }
    }
}

/// Appends one DescribeImages condition (` AND ...`) to the listing's filter.
fn push_condition(filter: &mut Sql, c: &Condition, uin: &str) {
    match c {
        Condition::ImageIds(ids) => {
            filter.push(" AND i.image_id IN ").list(ids);
        }
        Condition::NameContains(vs) | Condition::PlatformContains(vs) => {
            let column = if matches!(c, Condition::NameContains(_)) {
                "i.image_name"
            } else {
                "i.platform"
            };
            filter.push(" AND (");
            for (n, v) in vs.iter().enumerate() {
                if n > 0 {
                    filter.push(" OR ");
                }
                filter
                    .push("LOWER(")
                    .push(column)
                    .push(") LIKE ")
                    .arg(like_pattern(v))
                    .push(" ESCAPE '\\'");
            }
            filter.push(")");
        }
        Condition::TagKey(keys) => {
            filter
                .push(" AND i.image_id IN (SELECT t.image_id FROM image_tags t WHERE t.tag_key IN ")
                .list(keys)
                .push(")");
        }
        Condition::TagValue(values) => {
            filter
                .push(
                    " AND i.image_id IN (SELECT t.image_id FROM image_tags t WHERE t.tag_value IN ",
                )
                .list(values)
                .push(")");
        }
        Condition::Tag { key, values } => {
            filter
                .push(" AND i.image_id IN (SELECT t.image_id FROM image_tags t WHERE t.tag_key = ")
                .arg(key.clone())
                .push(" AND t.tag_value IN ")
                .list(values)
                .push(")");
        }
        Condition::Owned => {
            filter.push(" AND i.account_uin = ").arg(uin);
        }
        Condition::SharedWithCaller => {
            filter.push(" AND i.account_uin <> ").arg(uin);
        }
        Condition::SnapshotIds(ids) => {
            filter
                .push(" AND i.image_id IN (SELECT d.image_id FROM image_disks d WHERE d.snapshot_id IN ")
                .list(ids)
                .push(")");
        }
        Condition::Nothing => {
            filter.push(" AND 1 = 0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Cent"), "%cent%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn sql_builder_numbers_placeholders() {
        let mut s = Sql::default();
        s.push("a = ")
            .arg("x")
            .push(" AND b IN ")
            .list(&["1".into(), "2".into()]);
        assert_eq!(s.text, "a = $1 AND b IN ($2, $3)");
        let text = |v: &str| Bind::Text(v.into());
        assert_eq!(s.args, [text("x"), text("1"), text("2")]);
    }

    #[test]
    fn blob_keys() {
        assert_eq!(blob_key_for("img-12345678", 0), "img-12345678.qcow2");
        assert_eq!(blob_key_for("img-12345678", 2), "img-12345678-2.qcow2");
    }
}
