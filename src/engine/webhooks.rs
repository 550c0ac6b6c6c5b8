//! Engine operations of event delivery: webhook endpoints, deliveries, the event feed and
//! execution look-ups.

use uuid::Uuid;

use super::{Engine, EngineError};
use crate::events::{self, signing};
use crate::store::{
    DeliveryRecord, Endpoint, EndpointPatch, ExecutionFilter, ExecutionSummary, FeedCursor,
    FeedEntry,
};

/// Every event type the server emits.
pub const EVENT_TYPES: [&str; 5] = [
    events::PROCESS_STARTED,
    events::EXTERNAL_DATA_WAITING,
    events::EXTERNAL_DATA_RECEIVED,
    events::EXTERNAL_DATA_TIMED_OUT,
    events::PROCESS_COMPLETED,
];

/// A new endpoint as the operator describes it.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
}

impl Engine {
    /// Checks an endpoint's URL and event types, and rewrites the URL in the form it was
    /// parsed to (`http://a\@b/` is stored as `http://a/@b/`), so that what listings show is
    /// where deliveries go.
    fn check_endpoint(
        &self,
        url: Option<&mut String>,
        event_types: Option<&Vec<String>>,
    ) -> Result<(), EngineError> {
        if let Some(url) = url {
            if url.len() > 2048 {
                return Err(EngineError::InvalidInput(
                    "'url' is longer than 2048 bytes".into(),
                ));
            }
            let parsed = self
                .options
                .hosts
                .check(url)
                .map_err(EngineError::InvalidInput)?;
            if parsed.as_str().len() > 2048 {
                return Err(EngineError::InvalidInput(
                    "'url' is longer than 2048 bytes once normalised".into(),
                ));
            }
            *url = parsed.into();
        }
        if let Some(types) = event_types
            && let Some(unknown) = types
                .iter()
                .find(|kind| !EVENT_TYPES.contains(&kind.as_str()))
        {
            return Err(EngineError::InvalidInput(format!(
                "unknown event type '{unknown}' (expected one of {})",
                EVENT_TYPES.join(", ")
            )));
        }
        Ok(())
    }

    /// Registers a webhook endpoint with a new secret.
    pub async fn create_endpoint(
        &self,
        workspace_id: &str,
        mut new: NewEndpoint,
    ) -> Result<Endpoint, EngineError> {
        self.check_endpoint(Some(&mut new.url), new.event_types.as_ref())?;
        if let Some(types) = new.event_types.as_mut() {
            dedupe(types);
        }
        if !self.store.workspace_exists(workspace_id).await? {
            return Err(EngineError::NotFound("workspace"));
        }
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            workspace_id: workspace_id.to_owned(),
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            secret: signing::new_secret(),
            enabled: true,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            updated_at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.store.create_endpoint(&endpoint).await?;
        self.store
            .get_endpoint(workspace_id, endpoint.id)
            .await?
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// A workspace's endpoints.
    pub async fn list_endpoints(&self, workspace_id: &str) -> Result<Vec<Endpoint>, EngineError> {
        if !self.store.workspace_exists(workspace_id).await? {
            return Err(EngineError::NotFound("workspace"));
        }
        Ok(self.store.list_endpoints(workspace_id).await?)
    }

    /// One endpoint.
    pub async fn endpoint(&self, workspace_id: &str, id: &str) -> Result<Endpoint, EngineError> {
        let id = parse_id(id, "webhook")?;
        self.store
            .get_endpoint(workspace_id, id)
            .await?
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// Changes an endpoint (URL, event types, description, enabled).
    pub async fn update_endpoint(
        &self,
        workspace_id: &str,
        id: &str,
        mut patch: EndpointPatch,
    ) -> Result<Endpoint, EngineError> {
        let id = parse_id(id, "webhook")?;
        self.check_endpoint(
            patch.url.as_mut(),
            patch.event_types.as_ref().and_then(Option::as_ref),
        )?;
        if let Some(Some(types)) = patch.event_types.as_mut() {
            dedupe(types);
        }
        self.store
            .update_endpoint(workspace_id, id, &patch, None)
            .await?
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// Replaces an endpoint's secret; the new one is returned.
    pub async fn rotate_endpoint_secret(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Endpoint, EngineError> {
        let id = parse_id(id, "webhook")?;
        let secret = signing::new_secret();
        self.store
            .update_endpoint(workspace_id, id, &EndpointPatch::default(), Some(&secret))
            .await?
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// Deletes an endpoint and its deliveries.
    pub async fn delete_endpoint(&self, workspace_id: &str, id: &str) -> Result<(), EngineError> {
        let id = parse_id(id, "webhook")?;
        if self.store.delete_endpoint(workspace_id, id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound("webhook"))
        }
    }

    /// An endpoint's newest deliveries with every attempt.
    pub async fn deliveries(
        &self,
        workspace_id: &str,
        endpoint_id: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, EngineError> {
        let id = parse_id(endpoint_id, "webhook")?;
        self.store
            .list_deliveries(workspace_id, id, limit)
            .await?
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// Queues an event for delivery again to every enabled endpoint that wants it.
    pub async fn redeliver(&self, workspace_id: &str, event_id: &str) -> Result<u64, EngineError> {
        let id = parse_id(event_id, "event")?;
        let queued = self
            .store
            .redeliver_event(workspace_id, id)
            .await?
            .ok_or(EngineError::NotFound("event"))?;
        Ok(queued)
    }

    /// A page of the workspace's event feed.
    pub async fn events_after(
        &self,
        workspace_id: &str,
        after: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEntry>, EngineError> {
        Ok(self.store.list_events(workspace_id, after, limit).await?)
    }

    /// The workspace's executions matching a filter.
    pub async fn find_executions(
        &self,
        workspace_id: &str,
        filter: ExecutionFilter,
        limit: i64,
    ) -> Result<Vec<ExecutionSummary>, EngineError> {
        Ok(self
            .store
            .find_executions(workspace_id, &filter, limit)
            .await?)
    }
}

fn parse_id(id: &str, what: &'static str) -> Result<Uuid, EngineError> {
    Uuid::parse_str(id).map_err(|_| EngineError::NotFound(what))
}

/// Keeps the first of each repeated event type, in the order given.
fn dedupe(types: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    types.retain(|kind| seen.insert(kind.clone()));
}
