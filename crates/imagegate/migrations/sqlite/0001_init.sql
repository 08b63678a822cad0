-- imagegate catalog, SQLite dialect. Portable types only (TEXT ids, BIGINT
-- unix-ms times, INTEGER 0/1 booleans) so that the same queries run on the
-- PostgreSQL twin of this file.

CREATE TABLE images (
    image_id             TEXT    NOT NULL PRIMARY KEY,
    account_uin          TEXT    NOT NULL,
    region               TEXT    NOT NULL,
    image_name           TEXT    NOT NULL,
    description          TEXT    NOT NULL DEFAULT '',
    os_type              TEXT    NOT NULL,
    os_version           TEXT    NOT NULL,
    architecture         TEXT    NOT NULL,  -- as given: x86_64 | i386 | arm_64
    platform             TEXT    NOT NULL,
    os_name              TEXT    NOT NULL,
    state                TEXT    NOT NULL,  -- IMPORTING | NORMAL | IMPORTFAILED | ...
    image_size_gib       BIGINT  NOT NULL DEFAULT 0,
    license_type         TEXT    NOT NULL,
    boot_mode            TEXT    NOT NULL,
    image_family         TEXT    NOT NULL DEFAULT '',
    deprecated           INTEGER NOT NULL DEFAULT 0,
    force                INTEGER NOT NULL DEFAULT 0,
    is_support_cloudinit INTEGER NOT NULL DEFAULT 0,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);
-- Name uniqueness per account and region is the database's job.
CREATE UNIQUE INDEX images_name_uq ON images (account_uin, region, image_name);
-- DescribeImages: one account and region, newest first.
CREATE INDEX images_listing ON images (account_uin, region, created_at, image_id);

CREATE TABLE image_tags (
    image_id  TEXT NOT NULL,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (image_id, tag_key)
);
CREATE INDEX image_tags_kv ON image_tags (tag_key, tag_value, image_id);

CREATE TABLE image_disks (
    image_id    TEXT   NOT NULL,
    disk_index  BIGINT NOT NULL,            -- 0 = system disk
    disk_usage  TEXT   NOT NULL,            -- SYSTEM_DISK | DATA_DISK
    source_url  TEXT   NOT NULL,
    size_gib    BIGINT NOT NULL DEFAULT 0,
    snapshot_id TEXT   NOT NULL,            -- snap-xxxxxxxx
    blob_key    TEXT,                       -- under <data_dir>/images/ or the blob store
    PRIMARY KEY (image_id, disk_index)
);
CREATE UNIQUE INDEX image_disks_snapshot_uq ON image_disks (snapshot_id);

-- Images counted against the quota, per account and region.
CREATE TABLE quota_usage (
    account_uin TEXT   NOT NULL,
    region      TEXT   NOT NULL,
    used        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_uin, region)
);

CREATE TABLE import_jobs (
    image_id         TEXT    NOT NULL PRIMARY KEY,
    state            TEXT    NOT NULL,      -- QUEUED | RUNNING | SUCCEEDED | FAILED | CANCELLED
    phase            TEXT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      BIGINT,
    heartbeat_at     BIGINT,
    run_after        BIGINT  NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    bytes_fetched    BIGINT  NOT NULL DEFAULT 0,
    bytes_total      BIGINT,
    source_format    TEXT,
    virtual_size     BIGINT,
    sha256           TEXT,
    failure_code     TEXT,
    failure_message  TEXT,
    details          TEXT,                  -- JSON
    node             TEXT,
    started_at       BIGINT,
    finished_at      BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX import_jobs_claim ON import_jobs (state, run_after);
