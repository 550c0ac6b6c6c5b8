//! The pure state machine: where an execution goes when it starts, when its External Step
//! receives data and when that step times out. No I/O here, so every path is unit-tested.

use serde_json::{Map, Value};

use super::definition::{ProcessDefinition, Step};

/// Where an execution rests after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// Waiting on the External Step at `step_index`, with its timeout if one is configured.
    Waiting {
        step_index: usize,
        timeout_ms: Option<i64>,
    },
    /// Finished: at an end step (with its outcome) or past the last step (no outcome).
    Completed {
        step_index: usize,
        outcome: Option<String>,
    },
}

/// The position reached by entering the process at `index`: the first step that waits or ends.
pub fn enter(definition: &ProcessDefinition, index: usize) -> Position {
    match definition.steps.get(index) {
        Some(Step::ExternalData(step)) => Position::Waiting {
            step_index: index,
            timeout_ms: step.timeout_ms(),
        },
        Some(Step::End(step)) => Position::Completed {
            step_index: index,
            outcome: Some(step.outcome.clone()),
        },
        None => Position::Completed {
            step_index: definition.steps.len().saturating_sub(1),
            outcome: None,
        },
    }
}

/// The position reached by leaving the step at `index` once `fields` are stored: the first
/// route whose condition holds, otherwise the next step.
pub fn leave(
    definition: &ProcessDefinition,
    index: usize,
    fields: &Map<String, Value>,
) -> Position {
    let routes = match definition.steps.get(index) {
        Some(Step::ExternalData(step)) => step.routes.as_slice(),
        _ => &[],
    };
    let target = routes
        .iter()
        .find(|route| fields.get(&route.when.field) == Some(&route.when.equals))
        .and_then(|route| definition.step_index(&route.goto));
    // NOTE: definitions only route forward (checked at parse time), so this cannot loop.
    enter(definition, target.unwrap_or(index + 1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition() -> ProcessDefinition {
        ProcessDefinition::parse(&json!({
            "name": "p", "type": "onboarding",
            "steps": [
                {"id": "first", "type": "externalData", "title": "t", "timeoutSeconds": 2,
                 "expectedFields": [{"spektrDataField": "a", "type": "string", "required": true}],
                 "routes": [{"when": {"field": "external_data_failure", "equals": true},
                             "goto": "second"}]},
                {"id": "done", "type": "end", "outcome": "approved"},
                {"id": "second", "type": "externalData", "title": "t",
                 "expectedFields": [{"spektrDataField": "b", "type": "number", "required": false}]}
            ]
        }))
        .expect("valid definition")
    }

    #[test]
    fn entering_stops_at_the_first_external_step_with_its_timeout() {
        assert_eq!(
            enter(&definition(), 0),
            Position::Waiting {
                step_index: 0,
                timeout_ms: Some(2000)
            }
        );
    }

    #[test]
    fn leaving_without_a_matching_route_goes_to_the_next_step() {
        let fields = Map::from_iter([("external_data_failure".to_owned(), json!(false))]);

        assert_eq!(
            leave(&definition(), 0, &fields),
            Position::Completed {
                step_index: 1,
                outcome: Some("approved".to_owned())
            }
        );
    }

    #[test]
    fn leaving_with_a_matching_route_jumps_to_its_target() {
        let fields = Map::from_iter([("external_data_failure".to_owned(), json!(true))]);

        assert_eq!(
            leave(&definition(), 0, &fields),
            Position::Waiting {
                step_index: 2,
                timeout_ms: None
            }
        );
    }

    #[test]
    fn leaving_the_last_step_completes_without_an_outcome() {
        assert_eq!(
            leave(&definition(), 2, &Map::new()),
            Position::Completed {
                step_index: 2,
                outcome: None
            }
        );
    }
}
