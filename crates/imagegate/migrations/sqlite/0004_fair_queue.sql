-- A fair job queue (issue 16): claims go to the account with the fewest
-- running jobs, then to the one served longest ago, so one account's backlog
-- never holds another account's job behind it. Same text on SQLite and
-- PostgreSQL.

-- The owning account, copied from images so that a claim need not join.
ALTER TABLE import_jobs ADD COLUMN account_uin TEXT NOT NULL DEFAULT '';
UPDATE import_jobs SET account_uin =
    COALESCE((SELECT i.account_uin FROM images i WHERE i.image_id = import_jobs.image_id), '');
-- When the job was last claimed: an account's most recent claim orders it
-- behind accounts served longer ago.
ALTER TABLE import_jobs ADD COLUMN claimed_at BIGINT;
UPDATE import_jobs SET claimed_at = started_at;

-- Running jobs per account, and each account's last claim.
CREATE INDEX import_jobs_account_state ON import_jobs (account_uin, state, lease_until);
CREATE INDEX import_jobs_account_claimed ON import_jobs (account_uin, claimed_at);
