-- Rate limits shared by every node of a cluster (issue 16) live in the
-- PostgreSQL catalog only: a SQLite catalog belongs to one process, whose
-- buckets in memory are already the whole truth. Nothing to create; the
-- number is kept so that both dialects count their migrations alike.
SELECT 1;
