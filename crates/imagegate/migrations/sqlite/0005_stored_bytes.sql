-- Per-account byte quotas (issue 16): what each image keeps in the blob
-- store, all its disks together, recorded when its import succeeds. Same text
-- on SQLite and PostgreSQL.
ALTER TABLE images ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
-- An account's stored bytes: a sum over its images.
CREATE INDEX images_account_state ON images (account_uin, state);
