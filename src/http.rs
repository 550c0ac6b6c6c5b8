//! The HTTP/1 connection loop: what `axum::serve` does, plus a limit on how long a client may
//! take to send a request's headers, which `axum::serve` cannot set.
//!
//! Without that limit a client that opens connections and sends headers a byte at a time
//! (slowloris) holds each connection, and a task, for as long as it likes.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pause after an accept error that is not about one connection (for example too many open
/// files), so the loop does not spin while the process is out of resources.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The most a connection buffers while reading, which bounds a request head (request line and
/// headers): a larger one is answered 431. hyper's default lets a head grow to about half a
/// megabyte per connection; no client of this API needs more than a few kilobytes.
const MAX_READ_BUFFER_BYTES: usize = 128 * 1024;

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, lets the
/// requests in flight finish, closes idle connections, and returns once all are closed.
///
/// A connection that has not delivered a complete request head within `header_read_timeout`
/// of starting to wait for one (a new connection, or an idle keep-alive one) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_READ_BUFFER_BYTES);
    let connections = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(error = %error, "cannot accept connections");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Clients hanging up or stalling are routine: nothing for an operator to do.
                tracing::debug!(error = %error, timeout = error.is_timeout(), "connection ended");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Errors that concern one connection only, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
