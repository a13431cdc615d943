//! `table` and `peak`: read the `RESULT` lines a matrix run collected and turn them into a markdown
//! report, or pick the peak produce rate that `run.sh` derives the e2e rate from.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

/// Flags of `table`.
#[derive(Args, Debug)]
pub struct TableArgs {
    /// File of `RESULT {json}` lines (other lines are skipped).
    #[arg(long)]
    input: PathBuf,
}

/// Flags of `peak`.
#[derive(Args, Debug)]
pub struct PeakArgs {
    /// File of `RESULT {json}` lines (other lines are skipped).
    #[arg(long)]
    input: PathBuf,
    /// Only produce runs with this record size.
    #[arg(long)]
    record_size: u64,
    /// Only produce runs with this `acks` (`0`, `1` or `all`).
    #[arg(long)]
    acks: Option<String>,
}

fn load(path: &PathBuf) -> Result<Vec<Value>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("RESULT "))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .collect())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

fn text(v: &Value, path: &[&str]) -> String {
    match path.iter().try_fold(v, |v, key| v.get(key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    }
}

/// `1234567.8` -> `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".to_string())
}

fn ms(x: Option<f64>) -> String {
    opt(x, |v| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    })
}

fn mib(x: Option<f64>) -> String {
    opt(x, |v| format!("{:.0}", v / (1024.0 * 1024.0)))
}

/// Broker CPU seconds per GB, unless the run was too short for 10 ms ticks to mean much.
fn cpu_per_gb(r: &Value) -> String {
    match (
        num(r, &["broker", "cpu_secs_per_gb"]),
        num(r, &["broker", "wall_secs"]),
    ) {
        (Some(_), Some(wall)) if wall < 1.0 => "short".to_string(),
        (Some(v), _) => format!("{v:.2}"),
        _ => "-".to_string(),
    }
}

fn ok(v: &Value) -> &'static str {
    if v.get("ok").and_then(Value::as_bool).unwrap_or(false) {
        "yes"
    } else {
        "**no**"
    }
}

/// The best TCP-ceiling MB/s measured for `record_size`.
fn ceiling_mb(results: &[Value], record_size: f64) -> Option<f64> {
    results
        .iter()
        .filter(|r| {
            text(r, &["bench"]) == "tcp-ceiling" && num(r, &["record_size"]) == Some(record_size)
        })
        .filter_map(|r| num(r, &["mb_per_sec"]))
        .reduce(f64::max)
}

fn ratio(results: &[Value], r: &Value) -> String {
    let size = num(r, &["record_size"]).unwrap_or(0.0);
    match (num(r, &["mb_per_sec"]), ceiling_mb(results, size)) {
        (Some(mb), Some(ceiling)) if ceiling > 0.0 => format!("{:.1}%", 100.0 * mb / ceiling),
        _ => "-".to_string(),
    }
}

fn by_bench<'a>(results: &'a [Value], bench: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    results.iter().filter(move |r| text(r, &["bench"]) == bench)
}

/// Renders every result as markdown tables followed by the exact commands.
pub fn render(results: &[Value]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "Byte rates count record payload only; MB = 10^6 bytes, GB = 10^9 bytes. \"of ceiling\" is the");
    let _ = writeln!(w, "rate as a share of the best `tcp-ceiling` run for the same record size. Produce latency is send()");
    let _ = writeln!(w, "to delivery report in a saturating run (mostly client-side queueing); e2e latency is at a fixed");
    let _ = writeln!(w, "rate. Broker CPU is read in 10 ms ticks, so it is left out (\"short\") for runs under a second.\n");

    if by_bench(results, "produce").next().is_some() {
        let _ = writeln!(w, "**Produce**\n");
        let _ = writeln!(w, "| records | size B | acks | parts | codec | msg/s | MB/s | of ceiling | ack p50 / p99 / p99.9 ms | broker CPU s/GB | broker peak RSS MiB | ok |");
        let _ = writeln!(
            w,
            "|---:|---:|:---:|---:|:---:|---:|---:|---:|---|---:|---:|:---:|"
        );
        for r in by_bench(results, "produce") {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} |",
                thousands(num(r, &["count"]).unwrap_or(0.0)),
                text(r, &["record_size"]),
                text(r, &["producer", "acks"]),
                text(r, &["partitions"]),
                text(r, &["producer", "compression"]),
                opt(num(r, &["msgs_per_sec"]), thousands),
                opt(num(r, &["mb_per_sec"]), |v| format!("{v:.1}")),
                ratio(results, r),
                ms(num(r, &["latency_ms", "p50"])),
                ms(num(r, &["latency_ms", "p99"])),
                ms(num(r, &["latency_ms", "p999"])),
                cpu_per_gb(r),
                mib(num(r, &["broker", "peak_rss_bytes"])),
                ok(r),
            );
        }
        let _ = writeln!(w);
    }

    if by_bench(results, "consume").next().is_some() {
        let _ = writeln!(
            w,
            "**Consume** (from the beginning, all partitions assigned, no group)\n"
        );
        let _ = writeln!(w, "| records | size B | parts | msg/s | MB/s | of ceiling | first record ms | broker CPU s/GB | broker peak RSS MiB | ok |");
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
        for r in by_bench(results, "consume") {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(num(r, &["consumed"]).unwrap_or(0.0)),
                text(r, &["record_size"]),
                text(r, &["partitions"]),
                opt(num(r, &["msgs_per_sec"]), thousands),
                opt(num(r, &["mb_per_sec"]), |v| format!("{v:.1}")),
                ratio(results, r),
                ms(num(r, &["first_record_ms"])),
                cpu_per_gb(r),
                mib(num(r, &["broker", "peak_rss_bytes"])),
                ok(r),
            );
        }
        let _ = writeln!(w);
    }

    if by_bench(results, "e2e").next().is_some() {
        let _ = writeln!(
            w,
            "**End-to-end latency** (scheduled send to consumer receipt, warm-up excluded)\n"
        );
        let _ = writeln!(w, "| size B | acks | parts | offered msg/s | sent msg/s | p50 ms | p99 ms | p99.9 ms | max ms | ack p50 / p99 ms | broker CPU s/GB | ok |");
        let _ = writeln!(
            w,
            "|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---|---:|:---:|"
        );
        for r in by_bench(results, "e2e") {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
                text(r, &["record_size"]),
                text(r, &["producer", "acks"]),
                text(r, &["partitions"]),
                opt(num(r, &["target_rate"]), thousands),
                opt(num(r, &["achieved_rate"]), thousands),
                ms(num(r, &["e2e_latency_ms", "p50"])),
                ms(num(r, &["e2e_latency_ms", "p99"])),
                ms(num(r, &["e2e_latency_ms", "p999"])),
                ms(num(r, &["e2e_latency_ms", "max"])),
                ms(num(r, &["ack_latency_ms", "p50"])),
                ms(num(r, &["ack_latency_ms", "p99"])),
                cpu_per_gb(r),
                ok(r),
            );
        }
        let _ = writeln!(w);
    }

    if by_bench(results, "tcp-ceiling").next().is_some() {
        let _ = writeln!(
            w,
            "**TCP ceiling** (loopback, client and sink in one process, no broker)\n"
        );
        let _ = writeln!(w, "| records | size B | frame bytes | msg/s | MB/s |");
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|");
        for r in by_bench(results, "tcp-ceiling") {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                thousands(num(r, &["records"]).or(num(r, &["count"])).unwrap_or(0.0)),
                text(r, &["record_size"]),
                text(r, &["batch_bytes"]),
                opt(num(r, &["msgs_per_sec"]), thousands),
                opt(num(r, &["mb_per_sec"]), |v| format!("{v:.1}")),
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "Commands, in the order they ran:\n\n```sh");
    for r in results {
        let _ = writeln!(w, "{}", text(r, &["command"]));
    }
    let _ = writeln!(w, "```");
    out
}

/// Runs `table`.
pub fn run_table(args: TableArgs) -> Result<()> {
    let results = load(&args.input)?;
    if results.is_empty() {
        bail!("no RESULT lines in {}", args.input.display());
    }
    print!("{}", render(&results));
    Ok(())
}

/// Runs `peak`: prints `MSGS_PER_SEC PARTITIONS` of the fastest successful matching produce run.
pub fn run_peak(args: PeakArgs) -> Result<()> {
    let results = load(&args.input)?;
    let best = by_bench(&results, "produce")
        .filter(|r| r.get("ok").and_then(Value::as_bool).unwrap_or(false))
        .filter(|r| num(r, &["record_size"]) == Some(args.record_size as f64))
        .filter(|r| {
            args.acks
                .as_deref()
                .is_none_or(|a| text(r, &["producer", "acks"]) == a)
        })
        .filter_map(|r| Some((num(r, &["msgs_per_sec"])?, num(r, &["partitions"])?)))
        .reduce(|a, b| if b.0 > a.0 { b } else { a });
    match best {
        Some((rate, partitions)) => {
            println!("{rate:.0} {partitions:.0}");
            Ok(())
        }
        None => bail!(
            "no successful produce run with record_size={} acks={} in {}",
            args.record_size,
            args.acks.as_deref().unwrap_or("any"),
            args.input.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn ratio_uses_the_matching_ceiling() {
        let results = vec![
            json!({"bench": "tcp-ceiling", "record_size": 100, "mb_per_sec": 200.0, "count": 10, "command": "c1"}),
            json!({"bench": "tcp-ceiling", "record_size": 1024, "mb_per_sec": 1000.0, "count": 10, "command": "c2"}),
            json!({"bench": "produce", "ok": true, "record_size": 100, "mb_per_sec": 50.0, "count": 10,
                   "producer": {"acks": "all"}, "partitions": 1, "command": "c3"}),
        ];
        assert_eq!(ratio(&results, &results[2]), "25.0%");
        let table = render(&results);
        assert!(table.contains("| 25.0% |"), "{table}");
        assert!(table.contains("c3"));
    }
}
