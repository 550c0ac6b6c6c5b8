//! `spektr-server`: parse the configuration, start logging, serve until SIGTERM or ctrl-c.

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use spektr_server::Server;
use spektr_server::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(error) = spektr_server::telemetry::init(&config.log_filter, config.log_format) {
        eprintln!("spektr-server: invalid configuration: {error}");
        std::process::exit(2);
    }
    if let Err(error) = config.validate() {
        eprintln!("spektr-server: invalid configuration: {error}");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(config.bind_addr).await?;
    let server = Server::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server.serve(listener, shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    // Cancel first: nothing that happens while logging may keep the server from stopping.
    shutdown.cancel();
    tracing::info!("shutdown signal received");
}
