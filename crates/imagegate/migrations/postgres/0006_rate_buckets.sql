-- Rate limits shared by every node of a cluster (issue 16): one token bucket
-- per account and action (see api/ratelimit/shared.rs). UNLOGGED: taking a
-- token writes no WAL, so no request waits for a disk flush; a database crash
-- empties the table, which only refills every bucket (and a standby has no
-- copy: after a failover the buckets start full).
CREATE UNLOGGED TABLE rate_buckets (
    account_uin TEXT NOT NULL,
    action TEXT NOT NULL,
    -- Tokens left after the last request (at most the action's rate).
    tokens DOUBLE PRECISION NOT NULL,
    -- When they were counted: PostgreSQL's clock, seconds since the epoch,
    -- so that every node refills by one clock.
    stamp DOUBLE PRECISION NOT NULL,
    -- Whether the last request was admitted (what taking a token returns).
    admitted BOOLEAN NOT NULL,
    PRIMARY KEY (account_uin, action)
);
