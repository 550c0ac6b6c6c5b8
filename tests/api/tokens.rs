//! Execution tokens are looked up by their SHA-256, never compared as presented.

use reqwest::StatusCode;
use sqlx::Connection;

use crate::helpers::{PROCESS, guide_process, on_postgres, spawn_app, start_server};

#[tokio::test]
async fn a_token_is_stored_with_the_hash_the_postgres_migration_computes() {
    if !on_postgres() {
        return;
    }
    let app = spawn_app().await;
    app.put_process(PROCESS, guide_process(None)).await;
    app.start_token(PROCESS, "customer-1").await;
    app.start_token(PROCESS, "customer-2").await;

    // The migration hashes the tokens of existing rows with this expression; new rows get
    // theirs from the server. Both must agree, or upgraded executions could not be found.
    let mut connection = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("connect");
    let (total, agreeing): (i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where token_hash = encode(sha256(convert_to(token, 'UTF8')), 'hex'))
         from executions",
    )
    .fetch_one(&mut connection)
    .await
    .expect("count");
    assert_eq!((total, agreeing), (2, 2));
}

#[tokio::test]
async fn executions_stored_without_a_token_hash_are_found_after_a_restart_on_sqlite() {
    if on_postgres() {
        return;
    }
    let app = spawn_app().await;
    app.put_process(PROCESS, guide_process(None)).await;
    let tokens = [
        app.start_token(PROCESS, "customer-1").await,
        app.start_token(PROCESS, "customer-2").await,
    ];
    let (database_url, api_key) = (app.database_url.clone(), app.api_key.clone());
    app.stop().await;
    // As an execution stored before tokens were hashed looks.
    let mut connection = sqlx::SqliteConnection::connect(&database_url)
        .await
        .expect("connect");
    sqlx::query("update executions set token_hash = null")
        .execute(&mut connection)
        .await
        .expect("clear hashes");
    connection.close().await.expect("close");

    let mut restarted = start_server(&database_url, |_| {}).await;
    restarted.api_key = api_key;

    for token in &tokens {
        let step = restarted.current_step_json(token).await;
        assert_eq!(step["execution"]["token"], token.as_str());
        let submitted = restarted
            .submit(
                token,
                serde_json::json!({"company_name": "Hashed Ltd", "country_of_incorporation": "DK"}),
            )
            .await;
        assert_eq!(submitted.status(), StatusCode::OK);
    }
    let mut connection = sqlx::SqliteConnection::connect(&database_url)
        .await
        .expect("connect");
    let (unhashed,): (i64,) =
        sqlx::query_as("select count(*) from executions where token_hash is null")
            .fetch_one(&mut connection)
            .await
            .expect("count");
    assert_eq!(unhashed, 0);
}
