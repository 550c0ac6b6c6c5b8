//! Log subscriber set-up: readable text by default, JSON on request, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; later calls (as in tests) are ignored. A filter that does
/// not parse is an error rather than a silent fall-back to another level.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|error| format!("log filter '{filter}' is not valid: {error}"))?;
    // A log line that cannot be written (the reader of stdout went away) is dropped: reporting
    // it on stderr, which may be gone too, would panic the task that logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    let _ = match format {
        // Colours only for a terminal, not for files and log collectors.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
