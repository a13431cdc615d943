//! Startup and shutdown of a broker process: open storage, bind the listeners, accept connections, and on
//! SIGTERM/SIGINT stop accepting, let connections finish what is in flight (bounded by
//! `shutdown_timeout_ms`), then fsync and close every log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::ClusterLink;
use crate::config::RuntimeConfig;
use crate::offload::RemoteTier;
use crate::services::Services;
use crate::{connection, metrics};

/// A running broker: its shared state and the token that stops it.
#[derive(Debug)]
pub struct Server {
    /// The broker's services.
    pub broker: Arc<Services>,
    /// Fires to begin a clean shutdown.
    pub shutdown: CancellationToken,
    listener: TcpListener,
}

impl Server {
    /// Opens storage and binds the Kafka and metrics listeners.
    pub async fn start(config: RuntimeConfig) -> anyhow::Result<Self> {
        let listen = config.listen;
        let metrics_addr = config.metrics_listen;
        let data_dir = config.broker.data_dir.clone();
        let remote = RemoteTier::open(&config.broker)
            .await
            .context("cannot open the object store")?;
        let shutdown = CancellationToken::new();
        let cluster = ClusterLink::start(&config)
            .await
            .context("cannot start the embedded controller")?;
        // Registration waits for a quorum; a termination signal meanwhile stops the start-up.
        let stop = shutdown.clone();
        let waiting = tokio::spawn(async move {
            termination_signal().await;
            stop.cancel();
        });
        let joined = Services::join(config, cluster.clone(), remote, &shutdown).await;
        waiting.abort();
        let broker = match joined {
            Ok(b) => b,
            Err(e) => {
                cluster.shutdown().await;
                return Err(e).with_context(|| {
                    format!("cannot start the broker (data dir {})", data_dir.display())
                });
            }
        };
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tokio::spawn(broker.groups.clone().run_timers(shutdown.clone()));
        if let Some(addr) = metrics_addr {
            let ml = metrics::bind(addr)
                .await
                .with_context(|| format!("cannot listen on metrics address {addr}"))?;
            let b = broker.clone();
            let render: metrics::Renderer = Arc::new(move || b.metrics.render(&b.scrape()));
            tokio::spawn(metrics::serve(ml, render, shutdown.clone()));
            tracing::info!(%addr, "metrics endpoint listening");
        }
        tracing::info!(
            %listen,
            advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
            node_id = broker.node_id(),
            cluster_id = %broker.cluster_id(),
            "strata broker listening"
        );
        Ok(Self {
            broker,
            shutdown,
            listener,
        })
    }

    /// Accepts connections until `shutdown` fires, then shuts down cleanly.
    pub async fn run(self) -> anyhow::Result<()> {
        let connections = TaskTracker::new();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection::serve(
                            stream,
                            peer,
                            self.broker.clone(),
                            self.shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: finishing in-flight requests");
        connections.close();
        let grace = Duration::from_millis(self.broker.config.broker.shutdown_timeout_ms);
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "connections still busy after the shutdown grace period"
            );
        }
        self.broker.shutdown().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
