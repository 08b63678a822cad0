-- Export tasks (ExportImages, issue 14), SQLite dialect; same text as the PostgreSQL twin.

-- One ExportImages call: its images' disks go to one bucket in one format.
-- Claimed by export workers under a lease, like import_jobs.
CREATE TABLE export_tasks (
    task_id          BIGINT  NOT NULL PRIMARY KEY,   -- the TaskId returned (random, < 2^53)
    account_uin      TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    bucket           TEXT    NOT NULL,               -- <name>-<appid>
    export_format    TEXT    NOT NULL,               -- RAW | QCOW2 | VHD | VMDK
    state            TEXT    NOT NULL,               -- QUEUED | RUNNING | SUCCEEDED | FAILED | CANCELLED
    phase            TEXT    NOT NULL,               -- QUEUED | EXPORTING | DONE
    attempts         BIGINT  NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      BIGINT,
    run_after        BIGINT  NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    bytes_written    BIGINT  NOT NULL DEFAULT 0,     -- output bytes of every object so far
    guest_done       BIGINT  NOT NULL DEFAULT 0,     -- guest bytes done, of guest_total
    guest_total      BIGINT  NOT NULL DEFAULT 0,
    failure_code     TEXT,
    failure_message  TEXT,
    node             TEXT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX export_tasks_claim ON export_tasks (state, run_after);
CREATE INDEX export_tasks_listing ON export_tasks (account_uin, region, created_at);

-- The objects of a task, in the order they are written.
CREATE TABLE export_objects (
    task_id      BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    image_id     TEXT   NOT NULL,
    disk_index   BIGINT NOT NULL,                    -- 0 = system disk
    snapshot_id  TEXT   NOT NULL,
    blob_key     TEXT   NOT NULL,                    -- the stored disk it is made from
    object_key   TEXT   NOT NULL,                    -- key in the bucket (CosPaths without the '/')
    guest_size   BIGINT NOT NULL DEFAULT 0,          -- the disk's virtual size, once opened
    published    INTEGER NOT NULL DEFAULT 0,         -- 1 once visible in the bucket (removed if the task fails)
    PRIMARY KEY (task_id, seq)
);
-- DescribeExportImageTasks by ImageId; DeleteImages refuses an image being exported.
CREATE INDEX export_objects_image ON export_objects (image_id, task_id);
