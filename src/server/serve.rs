//! Serving the router over HTTP/1.1 with hyper: a deadline for each request
//! head (which also closes idle keep-alive connections), a bound on open
//! connections, and graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head (request line and headers) must arrive in full within
    /// this long after the connection opens or after the previous response
    /// ends; otherwise hyper closes the connection. This is both the
    /// slowloris guard and the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Connections open at once; past it, new connections wait in the
    /// kernel's accept queue until one closes.
    pub max_connections: usize,
}

/// Accepts connections on `listener` and serves `router` on each until
/// `shutdown` completes; then stops accepting, asks every connection to
/// finish its current request, and waits for them up to `grace`.
///
/// A connection that fails (a client that goes away, a request head that
/// times out) is logged at debug level and does not stop the server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached (KNOCK_MAX_CONNECTIONS); new connections wait"
                );
                tokio::select! {
                    permit = open.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: give the
                    // system a moment instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // An event is one small write; with Nagle's algorithm it would wait
        // for the client's delayed ACK of the one before.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "shutdown grace elapsed; closing open connections");
        }
    }
}
