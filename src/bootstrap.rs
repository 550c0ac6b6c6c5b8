//! The bootstrap file: workspaces, their API keys and processes, applied idempotently at
//! start-up so that a fresh server is usable without admin calls.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::engine::Engine;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapFile {
    workspaces: Vec<WorkspaceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkspaceEntry {
    id: String,
    name: String,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    processes: Vec<Value>,
}

/// Applies the file at `path`; any problem stops start-up with a message naming it.
pub async fn apply(engine: &Engine, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read BOOTSTRAP_FILE {}", path.display()))?;
    let file: BootstrapFile = serde_json::from_str(&text)
        .with_context(|| format!("BOOTSTRAP_FILE {} is not valid", path.display()))?;
    for workspace in &file.workspaces {
        engine
            .put_workspace(&workspace.id, &workspace.name)
            .await
            .with_context(|| format!("bootstrap workspace '{}'", workspace.id))?;
        for (index, key) in workspace.api_keys.iter().enumerate() {
            anyhow::ensure!(
                key.len() >= 16,
                "bootstrap API keys of workspace '{}' must be at least 16 characters",
                workspace.id
            );
            engine
                .add_api_key(&workspace.id, Uuid::now_v7(), key)
                .await?;
            // A key is stored once: one that another workspace holds stays with it, so the
            // file would not mean what it says. (One revoked through the admin API stays
            // revoked, as the README says.)
            if let Some(owner) = engine.authenticate(key).await?
                && owner != workspace.id
            {
                anyhow::bail!(
                    "bootstrap API key #{} of workspace '{}' belongs to workspace '{owner}'",
                    index + 1,
                    workspace.id
                );
            }
        }
        for process in &workspace.processes {
            apply_process(engine, &workspace.id, process).await?;
        }
        tracing::info!(workspace_id = %workspace.id, api_keys = workspace.api_keys.len(),
                       processes = workspace.processes.len(), "bootstrap applied");
    }
    Ok(())
}

async fn apply_process(engine: &Engine, workspace_id: &str, process: &Value) -> anyhow::Result<()> {
    let mut definition = process.clone();
    let id = definition
        .as_object_mut()
        .and_then(|object| object.remove("id"))
        .and_then(|id| id.as_str().map(str::to_owned))
        .with_context(|| format!("a process of workspace '{workspace_id}' has no string 'id'"))?;
    engine
        .put_process(workspace_id, &id, &definition)
        .await
        .map_err(|error| match error {
            crate::engine::EngineError::InvalidDefinition(problems) => {
                anyhow::anyhow!("bootstrap process '{id}': {}", problems.join("; "))
            }
            other => anyhow::anyhow!("bootstrap process '{id}': {other}"),
        })?;
    Ok(())
}
