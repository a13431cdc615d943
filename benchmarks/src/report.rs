//! How a run reports: one human-readable line (or a few), then exactly one `RESULT {json}` line that
//! scripts (`run.sh`, `strata-bench table`) parse.
//!
//! Units: MB = 10^6 bytes, GB = 10^9 bytes, latencies in milliseconds. Byte rates count record payload
//! bytes only (no keys, headers or protocol framing), so broker and TCP-ceiling figures compare alike.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency a histogram can hold, in microseconds (one hour); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("1us..1h at 3 significant digits is a valid histogram")
}

/// Records one latency, given in nanoseconds, clamping to the histogram's range.
pub fn record_latency_nanos(hist: &mut Histogram<u64>, nanos: u64) {
    hist.saturating_record((nanos / 1_000).clamp(1, MAX_LATENCY_US));
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// The p50/p99/p99.9/max/mean summary of a latency histogram, in milliseconds (null when empty).
pub fn latency_json(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return Value::Null;
    }
    json!({
        "count": hist.len(),
        "p50": us_to_ms(hist.value_at_quantile(0.50)),
        "p99": us_to_ms(hist.value_at_quantile(0.99)),
        "p999": us_to_ms(hist.value_at_quantile(0.999)),
        "max": us_to_ms(hist.max()),
        "mean": hist.mean() / 1_000.0,
    })
}

/// `p50=… p99=… p99.9=… max=… ms` for a human line.
pub fn latency_human(hist: &Histogram<u64>) -> String {
    if hist.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "p50={:.3} p99={:.3} p99.9={:.3} max={:.3} ms",
        us_to_ms(hist.value_at_quantile(0.50)),
        us_to_ms(hist.value_at_quantile(0.99)),
        us_to_ms(hist.value_at_quantile(0.999)),
        us_to_ms(hist.max())
    )
}

/// Records per second and MB (10^6 bytes) per second over `secs`.
pub fn rates(records: u64, bytes: u64, secs: f64) -> (f64, f64) {
    let secs = secs.max(1e-9);
    (records as f64 / secs, bytes as f64 / 1e6 / secs)
}

/// The command line of this process, quoted so that it can be pasted into a shell.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Adds the fields every result carries (version, time, command) and prints the `RESULT` line.
pub fn emit(mut result: Value) {
    if let Value::Object(map) = &mut result {
        map.insert(
            "harness".into(),
            json!(concat!("strata-bench ", env!("CARGO_PKG_VERSION"))),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        map.insert("unix_time".into(), json!(now));
        map.insert("command".into(), json!(command_line()));
    }
    println!("RESULT {result}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("--topic"), "--topic");
        assert_eq!(shell_quote("127.0.0.1:9092"), "127.0.0.1:9092");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn latency_summary_in_milliseconds() {
        let mut h = new_latency_histogram();
        for ms in 1..=1000u64 {
            record_latency_nanos(&mut h, ms * 1_000_000);
        }
        let j = latency_json(&h);
        let p50 = j["p50"].as_f64().expect("p50 is a number");
        assert!((499.0..=501.0).contains(&p50), "p50={p50}");
        assert_eq!(latency_json(&new_latency_histogram()), Value::Null);
    }
}
