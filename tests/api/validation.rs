//! Payload validation through the real submit endpoint: every field type with valid and invalid
//! values, required versus optional fields, and what is (and is not) stored.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PROCESS, TestApp, error_body, process_expecting, spawn_app};

const ONE_FIELD: &str = "one-field";

/// Puts a process whose single External Step expects the required field `v` of `field_type`.
async fn app_expecting_v(field_type: &str) -> TestApp {
    let app = spawn_app().await;
    let fields = json!([{"spektrDataField": "v", "type": field_type, "required": true}]);
    app.put_process(ONE_FIELD, process_expecting(fields)).await;
    app
}

/// A fresh execution of `process`: its token and spektrId.
async fn fresh_execution(app: &TestApp, process: &str) -> (String, String) {
    let started = app
        .start(process, &format!("customer-{}", uuid::Uuid::new_v4()))
        .await;
    let token = started["token"].as_str().expect("token").to_owned();
    let spektr_id = started["spektrId"].as_str().expect("spektrId").to_owned();
    (token, spektr_id)
}

/// Checks the execution still waits on its External Step and the customer has no fields.
async fn assert_nothing_stored(app: &TestApp, token: &str, spektr_id: &str) {
    let step = app.current_step_json(token).await;
    assert_eq!(step["execution"]["status"], "pending", "{step}");
    assert_eq!(step["node"]["type"], "externalData", "{step}");
    assert_eq!(app.customer(spektr_id).await["fields"], json!({}));
}

/// Submits each value as field `v` of `field_type` to its own fresh execution. Each accepted
/// value must be stored as its normalised form; each refused value must be reported as one type
/// error quoting it, and must leave the execution pending with nothing stored.
async fn check_field_type(field_type: &str, accepted: &[(Value, Value)], refused: &[Value]) {
    let app = app_expecting_v(field_type).await;

    for (sent, stored) in accepted {
        let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

        let response = app.submit(&token, json!({ "v": sent })).await;

        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{field_type} {sent}: {body}");
        assert_eq!(body, json!({"status": "completed"}));
        assert_eq!(
            app.customer(&spektr_id).await["fields"],
            json!({"v": stored, "external_data_failure": false}),
            "{field_type} {sent}"
        );
    }

    for sent in refused {
        let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

        let response = app.submit(&token, json!({ "v": sent })).await;

        let body = error_body(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            body["errorCode"], "BAD_REQUEST_ERROR",
            "{field_type} {sent}"
        );
        assert_eq!(body["message"], "External data payload validation failed");
        assert_eq!(
            body["details"]["missingRequiredFields"],
            json!([]),
            "{body}"
        );
        let errors = body["details"]["typeErrors"]
            .as_array()
            .expect("typeErrors");
        assert_eq!(errors.len(), 1, "{field_type} {sent}: {body}");
        let message = errors[0].as_str().expect("message");
        assert!(
            message.starts_with("Field 'v' expected ")
                && message.ends_with(&format!(". Received: {sent}")),
            "{field_type} {sent}: {message}"
        );
        assert_nothing_stored(&app, &token, &spektr_id).await;
    }
}

#[tokio::test]
async fn strings_are_stored_trimmed_and_blank_or_non_strings_are_refused() {
    check_field_type(
        "string",
        &[
            (json!("Acme Ltd"), json!("Acme Ltd")),
            (json!("  Acme Ltd \n"), json!("Acme Ltd")),
            (json!("Ærø ApS 🦀"), json!("Ærø ApS 🦀")),
        ],
        &[
            json!(""),
            json!("   "),
            json!(12),
            json!(["Acme"]),
            json!(true),
        ],
    )
    .await;
}

#[tokio::test]
async fn numbers_of_every_kind_are_stored_as_sent_and_numeric_strings_are_refused() {
    check_field_type(
        "number",
        &[
            (json!(42), json!(42)),
            (json!(0), json!(0)),
            (json!(-7), json!(-7)),
            (json!(1.5), json!(1.5)),
            (json!(-0.25), json!(-0.25)),
            (
                json!(9_007_199_254_740_993_u64),
                json!(9_007_199_254_740_993_u64),
            ),
        ],
        &[json!("12"), json!(true), json!([1])],
    )
    .await;
}

#[tokio::test]
async fn real_dates_and_iso_date_times_are_accepted_and_impossible_or_foreign_dates_refused() {
    check_field_type(
        "date",
        &[
            (json!("2024-01-15"), json!("2024-01-15")),
            (json!("2024-02-29"), json!("2024-02-29")),
            (json!("2024-01-15T10:00:00Z"), json!("2024-01-15T10:00:00Z")),
            (
                json!("2024-01-15T10:00:00.000Z"),
                json!("2024-01-15T10:00:00.000Z"),
            ),
        ],
        &[
            json!("2023-02-29"),
            json!("2024-13-01"),
            json!("15/01/2024"),
            json!("2024-1-15"),
            json!(20_240_115),
        ],
    )
    .await;
}

#[tokio::test]
async fn country_codes_are_stored_uppercase_and_unknown_codes_or_names_are_refused() {
    check_field_type(
        "country",
        &[
            (json!("DK"), json!("DK")),
            (json!("dk"), json!("DK")),
            (json!("XK"), json!("XK")),
        ],
        &[json!("UK"), json!("Denmark"), json!("DNK"), json!(["DK"])],
    )
    .await;
}

#[tokio::test]
async fn booleans_must_be_json_booleans() {
    check_field_type(
        "boolean",
        &[(json!(true), json!(true)), (json!(false), json!(false))],
        &[json!("true"), json!(1), json!("false")],
    )
    .await;
}

#[tokio::test]
async fn string_lists_are_stored_trimmed_and_blank_items_or_plain_strings_are_refused() {
    check_field_type(
        "stringList",
        &[(json!([" first ", "second"]), json!(["first", "second"]))],
        &[
            json!(["ok", ""]),
            json!(["ok", 1]),
            json!("ok"),
            json!({"a": "b"}),
        ],
    )
    .await;
}

#[tokio::test]
async fn country_lists_are_stored_uppercase_and_refused_when_any_code_is_invalid() {
    check_field_type(
        "countryList",
        &[(json!(["dk", "SE", "XK"]), json!(["DK", "SE", "XK"]))],
        &[json!(["DK", "UK"]), json!(["Denmark"]), json!("DK")],
    )
    .await;
}

/// The currency table, shared by the `currencyList` type and its `currency` alias.
async fn check_currency_lists(field_type: &str) {
    check_field_type(
        field_type,
        &[
            (json!(["EUR", "dkk"]), json!(["EUR", "DKK"])),
            (json!(["VES"]), json!(["VES"])),
        ],
        &[
            json!(["HRK"]),
            json!(["EUR", "HRK"]),
            json!(["Euro"]),
            json!("EUR"),
        ],
    )
    .await;
}

#[tokio::test]
async fn currency_lists_are_stored_uppercase_and_withdrawn_codes_or_plain_strings_are_refused() {
    check_currency_lists("currencyList").await;
}

#[tokio::test]
async fn the_guides_currency_type_validates_as_a_currency_list() {
    check_currency_lists("currency").await;
}

#[tokio::test]
async fn the_guides_currency_type_is_shown_as_currency_list_in_the_current_step() {
    let app = app_expecting_v("currency").await;
    let (token, _) = fresh_execution(&app, ONE_FIELD).await;

    let step = app.current_step_json(&token).await;

    assert_eq!(
        step["node"]["expectedFields"],
        json!([{"spektrDataField": "v", "type": "currencyList", "required": true}])
    );
}

#[tokio::test]
async fn objects_are_stored_as_sent_and_arrays_or_scalars_are_refused() {
    check_field_type(
        "object",
        &[
            (
                json!({"street": " Main 1 ", "codes": [1, null]}),
                json!({"street": " Main 1 ", "codes": [1, null]}),
            ),
            (json!({}), json!({})),
        ],
        &[json!([{"street": "Main 1"}]), json!([]), json!("{}")],
    )
    .await;
}

/// A process mixing required and optional fields, scalar and list.
async fn app_with_optional_fields() -> TestApp {
    let app = spawn_app().await;
    let fields = json!([
        {"spektrDataField": "name", "type": "string", "required": true},
        {"spektrDataField": "countries", "type": "countryList", "required": true},
        {"spektrDataField": "founded", "type": "date", "required": false},
        {"spektrDataField": "currencies", "type": "currencyList", "required": false}
    ]);
    app.put_process(ONE_FIELD, process_expecting(fields)).await;
    app
}

#[tokio::test]
async fn required_fields_that_are_absent_or_null_are_reported_as_missing() {
    let app = app_with_optional_fields().await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app.submit(&token, json!({"countries": null})).await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body["details"],
        json!({"missingRequiredFields": ["name", "countries"], "typeErrors": []})
    );
    assert_nothing_stored(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn a_required_list_that_is_empty_is_reported_as_missing() {
    let app = app_with_optional_fields().await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app
        .submit(&token, json!({"name": "Acme", "countries": []}))
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body["details"],
        json!({"missingRequiredFields": ["countries"], "typeErrors": []})
    );
    assert_nothing_stored(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn optional_fields_omitted_or_null_are_accepted_and_not_stored() {
    let app = app_with_optional_fields().await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app
        .submit(
            &token,
            json!({"name": "Acme", "countries": ["DK"], "founded": null}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.customer(&spektr_id).await["fields"],
        json!({"name": "Acme", "countries": ["DK"], "external_data_failure": false})
    );
}

#[tokio::test]
async fn an_optional_list_may_be_empty() {
    let app = app_with_optional_fields().await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app
        .submit(
            &token,
            json!({"name": "Acme", "countries": ["dk"], "currencies": []}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.customer(&spektr_id).await["fields"],
        json!({
            "name": "Acme",
            "countries": ["DK"],
            "currencies": [],
            "external_data_failure": false
        })
    );
}

#[tokio::test]
async fn optional_fields_are_still_type_checked_when_present() {
    let app = app_with_optional_fields().await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app
        .submit(
            &token,
            json!({"name": "Acme", "countries": ["DK"], "founded": "yesterday"}),
        )
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["details"]["missingRequiredFields"], json!([]));
    assert_eq!(
        body["details"]["typeErrors"],
        json!([
            "Field 'founded' expected an ISO 8601 date (YYYY-MM-DD) or date-time. \
             Received: \"yesterday\""
        ])
    );
    assert_nothing_stored(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn all_problems_of_a_payload_are_reported_at_once_in_definition_order() {
    let app = spawn_app().await;
    // Definition order differs from alphabetical order, which is how a parsed object iterates.
    let fields = json!([
        {"spektrDataField": "d", "type": "date", "required": true},
        {"spektrDataField": "a", "type": "string", "required": true},
        {"spektrDataField": "c", "type": "country", "required": false},
        {"spektrDataField": "l", "type": "currencyList", "required": true},
        {"spektrDataField": "b", "type": "boolean", "required": true},
        {"spektrDataField": "n", "type": "number", "required": true},
        {"spektrDataField": "ok", "type": "string", "required": true}
    ]);
    app.put_process(ONE_FIELD, process_expecting(fields)).await;
    let (token, spektr_id) = fresh_execution(&app, ONE_FIELD).await;

    let response = app
        .submit(
            &token,
            json!({"ok": "fine", "n": null, "b": "yes", "l": [], "c": "UK", "d": "2024-02-30"}),
        )
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body["details"],
        json!({
            "missingRequiredFields": ["a", "l", "n"],
            "typeErrors": [
                "Field 'd' expected an ISO 8601 date (YYYY-MM-DD) or date-time. \
                 Received: \"2024-02-30\"",
                "Field 'c' expected a valid ISO Alpha-2 country code. Received: \"UK\"",
                "Field 'b' expected a boolean. Received: \"yes\""
            ]
        })
    );
    assert_nothing_stored(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn the_guides_validation_error_example_is_answered_exactly() {
    let app = spawn_app().await;
    let (token, spektr_id) = fresh_execution(&app, PROCESS).await;

    let response = app
        .submit(&token, json!({"country_of_incorporation": "Denmark"}))
        .await;

    let body = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body,
        json!({
            "errorCode": "BAD_REQUEST_ERROR",
            "message": "External data payload validation failed",
            "details": {
                "missingRequiredFields": ["company_name"],
                "typeErrors": [
                    "Field 'country_of_incorporation' expected a valid ISO Alpha-2 country code. \
                     Received: \"Denmark\""
                ]
            }
        })
    );
    assert_nothing_stored(&app, &token, &spektr_id).await;
}

#[tokio::test]
async fn unknown_payload_keys_are_ignored_and_not_stored() {
    let app = spawn_app().await;
    let (token, spektr_id) = fresh_execution(&app, PROCESS).await;
    let execution_id = app.execution_id(&token).await;

    let response = app
        .submit(
            &token,
            json!({
                "company_name": "Acme",
                "country_of_incorporation": "DK",
                "vat_number": "DK12345678",
                "Company_Name": "Other",
                "nested": {"anything": [1, 2]}
            }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let expected = json!({"company_name": "Acme", "country_of_incorporation": "DK"});
    let mut stored = expected.clone();
    stored["external_data_failure"] = json!(false);
    assert_eq!(app.customer(&spektr_id).await["fields"], stored);
    let activity = app.activity(&execution_id).await;
    let received = activity
        .iter()
        .find(|entry| entry["type"] == "external_data_received")
        .expect("external_data_received");
    assert_eq!(received["eventData"]["data"], expected);
}

#[tokio::test]
async fn a_payload_that_is_not_a_json_object_is_refused_in_the_envelope() {
    let app = spawn_app().await;

    for payload in [
        json!([{"company_name": "Acme", "country_of_incorporation": "DK"}]),
        json!("company_name=Acme"),
        json!(42),
        json!(null),
        json!(true),
    ] {
        let (token, spektr_id) = fresh_execution(&app, PROCESS).await;

        let response = app.submit(&token, payload.clone()).await;

        let body = error_body(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["errorCode"], "BAD_REQUEST_ERROR", "{payload}");
        let errors = body["details"]["typeErrors"].to_string();
        assert!(
            errors.contains("expected a JSON object"),
            "{payload}: {body}"
        );
        assert_nothing_stored(&app, &token, &spektr_id).await;
    }
}

#[tokio::test]
async fn a_refused_payload_leaves_the_step_open_for_a_corrected_one() {
    let app = spawn_app().await;
    let (token, spektr_id) = fresh_execution(&app, PROCESS).await;
    let refused = app
        .submit(
            &token,
            json!({"company_name": "   ", "country_of_incorporation": "DK"}),
        )
        .await;
    error_body(refused, StatusCode::BAD_REQUEST).await;

    let corrected = app
        .submit(
            &token,
            json!({"company_name": " Acme ", "country_of_incorporation": "dk"}),
        )
        .await;

    assert_eq!(corrected.status(), StatusCode::OK);
    assert_eq!(
        app.current_step_json(&token).await["execution"]["status"],
        "completed"
    );
    assert_eq!(
        app.customer(&spektr_id).await["fields"],
        json!({
            "company_name": "Acme",
            "country_of_incorporation": "DK",
            "external_data_failure": false
        })
    );
}
