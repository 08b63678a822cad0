-- Sharing and copying images (issue 14), SQLite dialect; same text as the PostgreSQL twin.

-- Accounts an image is shared with (ModifyImageSharePermission). The owner
-- cannot delete an image while it has rows here.
CREATE TABLE image_shares (
    image_id    TEXT   NOT NULL,
    account_uin TEXT   NOT NULL,            -- the recipient's main-account id
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (image_id, account_uin)
);
-- DescribeImages of a recipient: the images shared with it.
CREATE INDEX image_shares_recipient ON image_shares (account_uin, image_id);

-- Every stored blob's key, once. A blob is referenced by the image_disks rows
-- that name it (SyncImages copies point at the source's blob); the row here
-- goes, in the same transaction, with the last of them. The primary key keeps
-- a new import from ever reusing the key of a blob that copies still hold.
CREATE TABLE blobs (
    blob_key   TEXT   NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- Disks written before blob_key was always set name their derived key.
UPDATE image_disks SET blob_key = image_id || '.qcow2'
    WHERE blob_key IS NULL AND disk_index = 0;
UPDATE image_disks SET blob_key = image_id || '-' || CAST(disk_index AS TEXT) || '.qcow2'
    WHERE blob_key IS NULL AND disk_index > 0;
INSERT INTO blobs (blob_key, created_at)
    SELECT DISTINCT blob_key, 0 FROM image_disks WHERE blob_key IS NOT NULL;
-- Reference counts: the image_disks rows naming a blob.
CREATE INDEX image_disks_blob ON image_disks (blob_key);
