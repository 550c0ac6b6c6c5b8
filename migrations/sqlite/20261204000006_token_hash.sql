-- Executions are found by the SHA-256 of their token (lowercase hex), as API keys are: an
-- index lookup compares bytes one by one and stops at the first difference, so its timing
-- could tell how much of a guessed token is right; of a hash it tells nothing usable.
-- SQLite cannot hash in SQL: the store fills in the hashes of existing rows right after
-- migrating, before it serves. The token itself stays (the look-up hands it out).
alter table executions add column token_hash text;
create unique index executions_token_hash on executions (token_hash);
