//! The `strata` binary.

mod controller_cmd;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use broker::config::{BrokerArgs, BrokerConfig};
use broker::server::{termination_signal, Server};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a Kafka-compatible broker with tiered storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; size does not matter
enum Command {
    /// Run a broker (single node on the embedded defaults: 127.0.0.1:9092, ./strata-data).
    Broker(BrokerArgs),
    /// Run one node of the metadata quorum (Raft over TCP between the --controller-voters).
    Controller(controller_cmd::ControllerArgs),
}

/// Log filter without STRATA_LOG/RUST_LOG: info; openraft from warn (its info lines dump whole
/// states), and not its warning on every failed RPC to
/// an unreachable peer (several a second); the transport logs each outage once instead.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,openraft::engine::handler::replication_handler=error";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STRATA_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_open_file_limit();
    match cli.command {
        Command::Broker(args) => run_broker(args),
        Command::Controller(args) => controller_cmd::run(args),
    }
}

/// Below this many open files a broker warns at start: each partition replica keeps about three
/// open (its active segment's `.log` and `.raftidx`, its Raft marker file), and the object-store
/// read cache a few hundred more.
const RECOMMENDED_OPEN_FILES: u64 = 100_000;

/// Raises the soft limit on open files to the hard limit (as Go's runtime and most servers do): a
/// broker hosting thousands of partitions runs out of descriptors under the common soft limit of
/// 1,024 long before any other resource.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open file limit");
            return;
        }
    };
    let mut limit = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => limit = hard,
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open file limit"),
        }
    }
    if limit < RECOMMENDED_OPEN_FILES {
        tracing::warn!(
            limit,
            recommended = RECOMMENDED_OPEN_FILES,
            partitions_at_most = limit / 3,
            "low open file limit: a replica keeps about 3 files open; raise `ulimit -n` (LimitNOFILE) for many partitions"
        );
    } else {
        tracing::info!(limit, "open file limit");
    }
}

fn run_broker(args: BrokerArgs) -> std::process::ExitCode {
    let config = BrokerConfig::load(&args).and_then(BrokerConfig::validate);
    if let Ok(c) = &config {
        if !c.roles.broker {
            return run_controller_only(c.clone());
        }
    }
    run_service(config, "broker", |config| async move {
        let server = Server::start(config).await?;
        let shutdown = server.shutdown.clone();
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!("termination signal received");
            shutdown.cancel();
        });
        server.run().await
    })
}

/// `strata broker --roles controller`: a voter of the metadata quorum and nothing else.
fn run_controller_only(config: broker::config::RuntimeConfig) -> std::process::ExitCode {
    let node_id = u64::try_from(config.broker.node_id).unwrap_or_default();
    let node_config = broker::cluster::controller_config(&config, node_id, config.voters.clone());
    run_service(
        Ok::<_, String>(node_config),
        "controller",
        |nc| async move {
            let node = controller::ControllerNode::start(nc).await?;
            termination_signal().await;
            tracing::info!("termination signal received");
            node.shutdown().await
        },
    )
}

/// Runs `service` on a multi-threaded runtime: exit code 2 for a configuration error (printed once,
/// naming the key), 1 if the service fails, 0 after a clean stop.
fn run_service<C, E, Fut>(
    config: Result<C, impl std::fmt::Display>,
    name: &str,
    service: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(service(config)).map_err(Into::into);
    // Everything durable is closed by now; a blocking task that is still running (a read of a
    // slow disk, say) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("strata: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
