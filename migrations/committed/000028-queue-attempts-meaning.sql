--! Previous: sha1:dc14a8f5b6f38d05afccf8576a06b65e533d7877
--! Hash: sha1:fcf7d84f53c3ad8aabda6c8cb4cfbf8ab8c669f6
--! Message: queue-attempts-meaning

--! split: 1-current.sql
/*
 * The queue's attempts column says what it counts since the upload loop holds batches in a
 * transaction (migration 000027): an upload whose outcome was recorded, not a claim.
 */
comment on column app_public.offline_conversion_queue.attempts is
  E'How many times it went to Google with its outcome recorded, or an uploader took a lease on it; a batch handed back unsent does not count.';
