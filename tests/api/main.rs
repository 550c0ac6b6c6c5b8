//! Integration tests: the real router over a real listener, against SQLite by default and
//! against Postgres when `TEST_DATABASE_URL` names one.

mod actions;
mod admin;
mod connections;
mod errors;
mod feed;
mod headers;
mod helpers;
mod idempotency;
mod metrics;
mod openapi;
mod outage;
mod receiver;
mod timeouts;
mod tokens;
mod validation;
mod webhooks;
