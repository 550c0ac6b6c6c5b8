-- Executions are found by the SHA-256 of their token (lowercase hex), as API keys are: an
-- index lookup compares bytes one by one and stops at the first difference, so its timing
-- could tell how much of a guessed token is right; of a hash it tells nothing usable.
-- The token itself stays, for the execution look-up that hands it out.
alter table executions add column token_hash text;
update executions set token_hash = encode(sha256(convert_to(token, 'UTF8')), 'hex');
alter table executions alter column token_hash set not null;
create unique index executions_token_hash on executions (token_hash);
-- The hash's unique index implies the token's; one index fewer to write per start.
alter table executions drop constraint executions_token_key;
