//! CPU time and memory of a process, read from Linux `/proc`.
//!
//! Used with `--broker-pid` to report how much CPU the broker spent on a run (utime + stime of all its
//! threads, from `/proc/PID/stat`) and its peak resident set size (`VmHWM` in `/proc/PID/status`).
//! Before a run the peak is reset by writing `5` to `/proc/PID/clear_refs` (needs the same user or
//! root); when that fails the reported peak covers the broker's whole lifetime, and the result says so.

use std::fs;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Clock ticks per second used by `/proc/PID/stat` (USER_HZ). Asked of `getconf` so that no unsafe
/// `sysconf` call is needed; 100 is the value on every mainstream Linux architecture.
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime, in clock ticks, of every thread of process `pid` (`pid` may be `"self"`).
fn cpu_ticks(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .with_context(|| format!("{path} has no ')' after the command name"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path} has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("{path} field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// CPU seconds this process has used so far (all threads, user + system).
pub fn self_cpu_secs() -> Option<f64> {
    let ticks = cpu_ticks("self").ok()?;
    Some(ticks as f64 / clock_ticks_per_sec() as f64)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
        Some(kb * 1024)
    })
}

/// A measurement of the broker process that started before a run and is finished after it.
pub struct BrokerSampler {
    pid: u32,
    clk_tck: u64,
    start_ticks: u64,
    started: Instant,
    peak_reset: bool,
}

impl BrokerSampler {
    /// Resets the broker's peak RSS (best effort) and records its CPU ticks so far.
    pub fn start(pid: u32) -> Result<Self> {
        if fs::metadata(format!("/proc/{pid}")).is_err() {
            bail!("broker pid={pid} is not a running process on this machine");
        }
        let peak_reset = fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        Ok(BrokerSampler {
            pid,
            clk_tck: clock_ticks_per_sec(),
            start_ticks: cpu_ticks(&pid.to_string())?,
            started: Instant::now(),
            peak_reset,
        })
    }

    /// Reads the broker's CPU ticks and peak RSS again; `payload_bytes` is what the run moved, for the
    /// CPU-seconds-per-GB figure.
    pub fn finish(self, payload_bytes: u64) -> Result<BrokerUsage> {
        let end_ticks = cpu_ticks(&self.pid.to_string())
            .with_context(|| format!("broker pid={} exited during the run", self.pid))?;
        let wall_secs = self.started.elapsed().as_secs_f64();
        let cpu_secs = end_ticks.saturating_sub(self.start_ticks) as f64 / self.clk_tck as f64;
        let gb = payload_bytes as f64 / 1e9;
        Ok(BrokerUsage {
            pid: self.pid,
            cpu_secs,
            wall_secs,
            cpu_secs_per_gb: if gb > 0.0 { Some(cpu_secs / gb) } else { None },
            peak_rss_bytes: status_kb(self.pid, "VmHWM"),
            rss_bytes: status_kb(self.pid, "VmRSS"),
            peak_rss_scope: if self.peak_reset {
                "run"
            } else {
                "process-lifetime"
            },
        })
    }
}

/// What the broker process spent during one run.
pub struct BrokerUsage {
    pid: u32,
    cpu_secs: f64,
    wall_secs: f64,
    cpu_secs_per_gb: Option<f64>,
    peak_rss_bytes: Option<u64>,
    rss_bytes: Option<u64>,
    peak_rss_scope: &'static str,
}

impl BrokerUsage {
    /// The `broker` object of a `RESULT` line.
    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid,
            "cpu_secs": self.cpu_secs,
            "wall_secs": self.wall_secs,
            "cpu_utilisation": if self.wall_secs > 0.0 { self.cpu_secs / self.wall_secs } else { 0.0 },
            "cpu_secs_per_gb": self.cpu_secs_per_gb,
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_bytes_after": self.rss_bytes,
            "peak_rss_scope": self.peak_rss_scope,
        })
    }

    /// A short human-readable summary.
    pub fn human(&self) -> String {
        let per_gb = self
            .cpu_secs_per_gb
            .map(|v| format!("{v:.2} cpu-s/GB"))
            .unwrap_or_else(|| "n/a cpu-s/GB".to_string());
        let peak = self
            .peak_rss_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "n/a".to_string());
        format!(
            "broker pid={} cpu={:.2}s ({:.0}% of one core) {per_gb} peak_rss={peak} ({})",
            self.pid,
            self.cpu_secs,
            100.0 * self.cpu_secs / self.wall_secs.max(1e-9),
            self.peak_rss_scope
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let pid = std::process::id();
        let sampler = BrokerSampler::start(pid).expect("own process is running");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = sampler
            .finish(1_000_000_000)
            .expect("own process is still running");
        assert!(usage.cpu_secs >= 0.0);
        assert!(usage.peak_rss_bytes.unwrap_or(0) > 0);
        assert!(self_cpu_secs().is_some());
    }
}
