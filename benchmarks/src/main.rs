//! `strata-bench`: end-to-end load generator for Strata and any other Kafka-compatible broker.
//!
//! Every subcommand prints a human-readable summary and then exactly one `RESULT {json}` line;
//! `benchmarks/run.sh` runs the standard matrix and renders those lines with `strata-bench table`.
//! See `benchmarks/README.md` for what each figure means.

mod consume;
mod e2e;
mod kafka;
mod payload;
mod proc_stats;
mod produce;
mod report;
mod table;
mod tcp_ceiling;

use std::net::TcpListener;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// End-to-end load generator for Kafka-compatible brokers.
#[derive(Parser, Debug)]
#[command(name = "strata-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce COUNT records as fast as possible; report throughput and send-to-ack latency.
    Produce(produce::ProduceArgs),
    /// Read a topic from the beginning with manually assigned partitions; report throughput.
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate and measure produce-to-consume latency.
    E2e(e2e::E2eArgs),
    /// Loopback TCP sink with no broker: the machine's ceiling for the same records.
    TcpCeiling(tcp_ceiling::TcpCeilingArgs),
    /// Render RESULT lines collected from runs as markdown tables.
    Table(table::TableArgs),
    /// Print "MSGS_PER_SEC PARTITIONS" of the fastest matching produce run in a RESULT file.
    Peak(table::PeakArgs),
    /// Print a TCP port on 127.0.0.1 that was free a moment ago.
    FreePort,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::E2e(args) => e2e::run(args),
        Command::TcpCeiling(args) => tcp_ceiling::run(args),
        Command::Table(args) => table::run_table(args),
        Command::Peak(args) => table::run_peak(args),
        Command::FreePort => {
            let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
            println!("{}", listener.local_addr().context("local address")?.port());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_produce_command() {
        let cli = Cli::try_parse_from([
            "strata-bench",
            "produce",
            "--bootstrap",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--partitions",
            "8",
            "--record-size",
            "100",
            "--count",
            "10",
            "--acks",
            "all",
            "--compression",
            "lz4",
            "--linger-ms",
            "5",
            "--batch-size",
            "65536",
            "--create-topic",
            "-X",
            "queue.buffering.max.ms=1",
            "--broker-pid",
            "1",
        ]);
        assert!(cli.is_ok(), "{cli:?}");
        assert!(Cli::try_parse_from([
            "strata-bench",
            "produce",
            "--bootstrap",
            "x",
            "--topic",
            "t",
            "--acks",
            "2"
        ])
        .is_err());
    }
}
