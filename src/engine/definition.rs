//! Process definitions: the steps an execution walks through, parsed and checked once when an
//! operator stores them, so that the engine can trust them afterwards.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::validation::{ExpectedField, FieldType};

/// The customer field that records whether the last External Step failed (timed out).
pub const EXTERNAL_DATA_FAILURE: &str = "external_data_failure";

/// Longest timeout a step may configure: one year.
const MAX_TIMEOUT_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A stored process: steps run in order, routes may jump forward, the last step ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinition {
    #[schema(min_length = 1)]
    pub name: String,
    /// Always `onboarding`.
    #[serde(rename = "type")]
    #[schema(pattern = "^onboarding$")]
    pub process_type: String,
    /// Defaults to `["en-GB"]`.
    #[serde(default = "default_languages")]
    #[schema(required = false)]
    pub available_languages: Vec<String>,
    /// Run in order; at least one.
    #[schema(min_items = 1)]
    pub steps: Vec<Step>,
}

/// One step of a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum Step {
    /// Waits for a payload from the customer's own system.
    #[serde(rename = "externalData")]
    ExternalData(ExternalDataStep),
    /// Ends the execution with an outcome.
    #[serde(rename = "end")]
    End(EndStep),
}

/// An External Step: the fields it expects and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDataStep {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1)]
    pub title: String,
    /// At least one; `external_data_failure` and `reference` are reserved.
    #[schema(min_items = 1)]
    pub expected_fields: Vec<ExpectedField>,
    /// Seconds (fractions allowed), more than 0 and at most one year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 31536000)]
    pub timeout_seconds: Option<f64>,
    /// Checked in order when the step finishes; the first match jumps forward to its `goto`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub routes: Vec<Route>,
}

impl ExternalDataStep {
    /// The configured timeout in whole milliseconds (at least 1 ms), if any.
    pub fn timeout_ms(&self) -> Option<i64> {
        self.timeout_seconds
            .map(|seconds| ((seconds * 1000.0).round() as i64).max(1))
    }
}

/// A terminal step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndStep {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1)]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub title: Option<String>,
}

/// Leaves an External Step for `goto` when the customer's field `when.field` equals
/// `when.equals` (checked after the step's data was stored or it timed out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Route {
    pub when: Condition,
    pub goto: String,
}

/// A test on one stored customer field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    pub field: String,
    pub equals: Value,
}

fn default_languages() -> Vec<String> {
    vec!["en-GB".to_owned()]
}

impl Step {
    /// The step's id, unique within its process.
    pub fn id(&self) -> &str {
        match self {
            Step::ExternalData(step) => &step.id,
            Step::End(step) => &step.id,
        }
    }
}

impl ProcessDefinition {
    /// Position of the step with this id.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.id() == id)
    }

    /// Parses an operator's definition, listing every problem found rather than the first.
    pub fn parse(value: &Value) -> Result<ProcessDefinition, Vec<String>> {
        let mut problems = Vec::new();
        check_definition(value, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut definition: ProcessDefinition = serde_json::from_value(value.clone())
            .map_err(|error| vec![format!("definition: {error}")])?;
        for step in &mut definition.steps {
            if let Step::ExternalData(step) = step {
                for field in &mut step.expected_fields {
                    field.spektr_data_field = field.spektr_data_field.trim().to_owned();
                }
            }
        }
        Ok(definition)
    }
}

fn check_definition(value: &Value, problems: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        problems.push("definition must be a JSON object".to_owned());
        return;
    };
    for key in object.keys() {
        if !["name", "type", "availableLanguages", "steps"].contains(&key.as_str()) {
            problems.push(format!("unknown property '{key}'"));
        }
    }
    if !is_non_empty_string(object.get("name")) {
        problems.push("'name' must be a non-empty string".to_owned());
    } else if !is_short(object.get("name"), MAX_NAME_CHARS) {
        problems.push(format!(
            "'name' must be at most {MAX_NAME_CHARS} characters"
        ));
    } else if object
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| name.chars().any(char::is_control))
    {
        problems.push("'name' must not contain control characters".to_owned());
    }
    if object.get("type").and_then(Value::as_str) != Some("onboarding") {
        problems.push("'type' must be \"onboarding\"".to_owned());
    }
    match object.get("availableLanguages") {
        None => {}
        Some(Value::Array(items)) if are_language_tags(items) => {}
        Some(_) => problems.push(
            "'availableLanguages' must be a non-empty array of distinct language tags \
             such as \"en-GB\""
                .to_owned(),
        ),
    }
    match object.get("steps").and_then(Value::as_array) {
        Some(steps) if !steps.is_empty() => check_steps(steps, problems),
        _ => problems.push("'steps' must be a non-empty array".to_owned()),
    }
}

fn check_steps(steps: &[Value], problems: &mut Vec<String>) {
    let ids: Vec<Option<&str>> = steps
        .iter()
        .map(|step| step.get("id").and_then(Value::as_str))
        .collect();
    let mut seen = HashSet::new();
    for (index, step) in steps.iter().enumerate() {
        let at = format!("steps[{index}]");
        match ids[index] {
            Some(id) if is_valid_id(id) => {
                if !seen.insert(id) {
                    problems.push(format!("{at}: duplicate step id '{id}'"));
                }
            }
            _ => problems.push(format!(
                "{at}: 'id' must be 1-64 characters of letters, digits, '-', '_' or '.', \
                 other than '.' and '..'"
            )),
        }
        match step.get("type").and_then(Value::as_str) {
            Some("externalData") => check_external_step(step, &at, index, &ids, problems),
            Some("end") => check_end_step(step, &at, problems),
            Some(other) => problems.push(format!(
                "{at}: unknown step type '{other}' (expected \"externalData\" or \"end\")"
            )),
            None => problems.push(format!("{at}: 'type' is required")),
        }
    }
}

fn check_external_step(
    step: &Value,
    at: &str,
    index: usize,
    ids: &[Option<&str>],
    problems: &mut Vec<String>,
) {
    check_keys(
        step,
        &[
            "id",
            "type",
            "title",
            "expectedFields",
            "timeoutSeconds",
            "routes",
        ],
        at,
        problems,
    );
    if !is_non_empty_string(step.get("title")) {
        problems.push(format!("{at}: 'title' must be a non-empty string"));
    }
    check_title_length(step, at, problems);
    match step.get("expectedFields").and_then(Value::as_array) {
        Some(fields) if fields.len() > MAX_EXPECTED_FIELDS => problems.push(format!(
            "{at}: 'expectedFields' may list at most {MAX_EXPECTED_FIELDS} fields (a customer \
             holds at most 1000, so a step expecting more could never be submitted)"
        )),
        Some(fields) if !fields.is_empty() => check_expected_fields(fields, at, problems),
        _ => problems.push(format!(
            "{at}: 'expectedFields' must be a non-empty array (configure at least one field)"
        )),
    }
    match step.get("timeoutSeconds") {
        None | Some(Value::Null) => {}
        Some(value) => match value.as_f64() {
            Some(seconds) if seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS => {}
            _ => problems.push(format!(
                "{at}: 'timeoutSeconds' must be a number greater than 0 and at most \
                 {MAX_TIMEOUT_SECONDS}"
            )),
        },
    }
    match step.get("routes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(routes)) => {
            for (route_index, route) in routes.iter().enumerate() {
                check_route(
                    route,
                    &format!("{at}.routes[{route_index}]"),
                    index,
                    ids,
                    problems,
                );
            }
        }
        Some(_) => problems.push(format!("{at}: 'routes' must be an array")),
    }
}

fn check_expected_fields(fields: &[Value], at: &str, problems: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (index, field) in fields.iter().enumerate() {
        let at = format!("{at}.expectedFields[{index}]");
        check_keys(
            field,
            &["spektrDataField", "type", "required"],
            &at,
            problems,
        );
        match field
            .get("spektrDataField")
            .and_then(Value::as_str)
            .map(str::trim)
        {
            Some(key) if !key.is_empty() && key.len() <= 255 => {
                if key.chars().any(char::is_control) {
                    problems.push(format!(
                        "{at}: 'spektrDataField' must not contain control characters"
                    ));
                } else if key == EXTERNAL_DATA_FAILURE || key == "reference" {
                    problems.push(format!("{at}: '{key}' is a reserved field"));
                } else if !seen.insert(key) {
                    problems.push(format!("{at}: duplicate field key '{key}'"));
                }
            }
            _ => problems.push(format!(
                "{at}: 'spektrDataField' must be a non-empty string of at most 255 bytes"
            )),
        }
        match field.get("type") {
            Some(Value::String(name)) => {
                if serde_json::from_value::<FieldType>(Value::String(name.clone())).is_err() {
                    problems.push(format!("{at}: unknown field type '{name}'"));
                }
            }
            _ => problems.push(format!("{at}: 'type' must be a string")),
        }
        if !matches!(field.get("required"), Some(Value::Bool(_))) {
            problems.push(format!("{at}: 'required' must be a boolean"));
        }
    }
}

fn check_route(
    route: &Value,
    at: &str,
    from: usize,
    ids: &[Option<&str>],
    problems: &mut Vec<String>,
) {
    check_keys(route, &["when", "goto"], at, problems);
    let when = route.get("when");
    if !is_non_empty_string(when.and_then(|when| when.get("field"))) {
        problems.push(format!("{at}: 'when.field' must be a non-empty string"));
    }
    if when.and_then(|when| when.get("equals")).is_none() {
        problems.push(format!("{at}: 'when.equals' is required"));
    }
    if let Some(when) = when {
        check_keys(when, &["field", "equals"], &format!("{at}.when"), problems);
    }
    let Some(goto) = route.get("goto").and_then(Value::as_str) else {
        problems.push(format!("{at}: 'goto' must be a step id"));
        return;
    };
    match ids.iter().position(|id| *id == Some(goto)) {
        None => problems.push(format!("{at}: route to unknown step '{goto}'")),
        Some(target) if target <= from => {
            problems.push(format!("{at}: route to '{goto}' must go to a later step"))
        }
        Some(_) => {}
    }
}

fn check_end_step(step: &Value, at: &str, problems: &mut Vec<String>) {
    check_keys(step, &["id", "type", "outcome", "title"], at, problems);
    if !is_non_empty_string(step.get("outcome")) {
        problems.push(format!("{at}: 'outcome' must be a non-empty string"));
    } else if !is_short(step.get("outcome"), MAX_NAME_CHARS) {
        problems.push(format!(
            "{at}: 'outcome' must be at most {MAX_NAME_CHARS} characters"
        ));
    }
    if !matches!(step.get("title"), None | Some(Value::String(_))) {
        problems.push(format!("{at}: 'title' must be a string"));
    }
    check_title_length(step, at, problems);
}

/// The most characters a process name or an end step's outcome may have; both are copied
/// into every event of an execution.
const MAX_NAME_CHARS: usize = 255;
/// The most characters a step title may have.
const MAX_TITLE_CHARS: usize = 1_000;

/// How many fields one External Step may expect: a submit can store no more than a customer
/// holds (1,000 fields, `engine::executions`), so more could never be completed.
const MAX_EXPECTED_FIELDS: usize = 1_000;

fn check_title_length(step: &Value, at: &str, problems: &mut Vec<String>) {
    if !is_short(step.get("title"), MAX_TITLE_CHARS) {
        problems.push(format!(
            "{at}: 'title' must be at most {MAX_TITLE_CHARS} characters"
        ));
    }
}

/// Whether `value`, if a string, has at most `max` characters.
fn is_short(value: Option<&Value>, max: usize) -> bool {
    value
        .and_then(Value::as_str)
        .is_none_or(|text| text.chars().count() <= max)
}

fn check_keys(value: &Value, allowed: &[&str], at: &str, problems: &mut Vec<String>) {
    match value.as_object() {
        Some(object) => {
            for key in object.keys() {
                if !allowed.contains(&key.as_str()) {
                    problems.push(format!("{at}: unknown property '{key}'"));
                }
            }
        }
        None => problems.push(format!("{at}: must be a JSON object")),
    }
}

/// Whether `items` are one or more distinct language tags in the shape of BCP 47: a 2–3
/// letter language, then subtags of 1–8 letters or digits (`en-GB`, `pt-BR`, `zh-Hant-TW`).
fn are_language_tags(items: &[Value]) -> bool {
    let is_tag = |tag: &str| {
        let mut parts = tag.split('-');
        let language = parts.next().unwrap_or_default();
        (2..=3).contains(&language.len())
            && language.bytes().all(|byte| byte.is_ascii_alphabetic())
            && parts.all(|part| {
                (1..=8).contains(&part.len())
                    && part.bytes().all(|byte| byte.is_ascii_alphanumeric())
            })
    };
    let mut seen = std::collections::HashSet::new();
    !items.is_empty()
        && items.iter().all(|item| {
            item.as_str()
                .is_some_and(|tag| is_tag(tag) && seen.insert(tag.to_ascii_lowercase()))
        })
}

fn is_non_empty_string(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|text| !text.trim().is_empty())
}

/// Whether `id` is a usable identifier for workspaces, processes and steps. `.` and `..` are
/// refused: as URL path segments they are collapsed by clients, so they could not be reached.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guide_process() -> Value {
        json!({
            "name": "KYB onboarding",
            "type": "onboarding",
            "availableLanguages": ["en-GB"],
            "steps": [
                {
                    "id": "collect",
                    "type": "externalData",
                    "title": "Wait for company payload",
                    "expectedFields": [
                        {"spektrDataField": "company_name", "type": "string", "required": true},
                        {"spektrDataField": "country_of_incorporation", "type": "country",
                         "required": true}
                    ],
                    "timeoutSeconds": 0.5,
                    "routes": [{"when": {"field": "external_data_failure", "equals": true},
                                "goto": "review"}]
                },
                {"id": "approved", "type": "end", "outcome": "approved"},
                {"id": "review", "type": "end", "outcome": "manual_review"}
            ]
        })
    }

    #[test]
    fn the_guide_process_parses() {
        let definition = ProcessDefinition::parse(&guide_process()).expect("valid");

        assert_eq!(definition.steps.len(), 3);
        let Step::ExternalData(step) = &definition.steps[0] else {
            panic!("external step")
        };
        assert_eq!(step.timeout_ms(), Some(500));
        assert_eq!(definition.step_index("review"), Some(2));
    }

    #[test]
    fn every_problem_is_named() {
        let definition = json!({
            "name": "x",
            "type": "onboarding",
            "availableLanguages": ["en-GB"],
            "steps": [
                {"id": "a", "type": "externalData", "title": "t", "expectedFields": [],
                 "routes": [{"when": {"field": "f", "equals": 1}, "goto": "nowhere"}]},
                {"id": "b", "type": "externalData", "title": "t", "expectedFields": [
                    {"spektrDataField": "k", "type": "string", "required": true},
                    {"spektrDataField": "k", "type": "colour", "required": true}
                ]},
                {"id": "c", "type": "wait"}
            ]
        });

        let problems = ProcessDefinition::parse(&definition).expect_err("invalid");

        let text = problems.join("\n");
        assert!(
            text.contains("steps[0]: 'expectedFields' must be a non-empty array"),
            "{text}"
        );
        assert!(text.contains("route to unknown step 'nowhere'"), "{text}");
        assert!(text.contains("duplicate field key 'k'"), "{text}");
        assert!(text.contains("unknown field type 'colour'"), "{text}");
        assert!(text.contains("unknown step type 'wait'"), "{text}");
    }

    #[test]
    fn a_step_may_expect_at_most_1000_fields() {
        let fields = |count: usize| {
            Value::Array(
                (0..count)
                    .map(|index| {
                        json!({"spektrDataField": format!("f{index}"), "type": "string",
                               "required": true})
                    })
                    .collect(),
            )
        };
        let mut definition = guide_process();
        definition["steps"][0]["expectedFields"] = fields(1_000);
        assert!(ProcessDefinition::parse(&definition).is_ok());

        definition["steps"][0]["expectedFields"] = fields(1_001);
        let problems = ProcessDefinition::parse(&definition).expect_err("too many");
        assert!(problems[0].contains("at most 1000 fields"), "{problems:?}");
    }

    #[test]
    fn names_and_languages_are_checked() {
        for (languages, ok) in [
            (json!(["en-GB"]), true),
            (json!(["en-GB", "da", "zh-Hant-TW"]), true),
            (json!([]), false),
            (json!(["en-GB", "en-gb"]), false),
            (json!(["not a language!!"]), false),
            (json!(["e"]), false),
            (json!(["en-"]), false),
            (json!([1]), false),
        ] {
            let mut definition = guide_process();
            definition["availableLanguages"] = languages.clone();
            assert_eq!(
                ProcessDefinition::parse(&definition).is_ok(),
                ok,
                "{languages}"
            );
        }
        let mut definition = guide_process();
        definition["name"] = json!("a\u{1}b");
        let problems = ProcessDefinition::parse(&definition).expect_err("invalid");
        assert_eq!(problems, vec!["'name' must not contain control characters"]);
    }

    #[test]
    fn routes_must_point_forward() {
        let mut definition = guide_process();
        definition["steps"][0]["routes"][0]["goto"] = json!("collect");

        let problems = ProcessDefinition::parse(&definition).expect_err("invalid");

        assert!(
            problems[0].contains("must go to a later step"),
            "{problems:?}"
        );
    }
}
