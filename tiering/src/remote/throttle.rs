//! A byte-rate limiter for uploads (token bucket, one second of burst).

use std::time::{Duration, Instant};

/// Limits the rate at which bytes are sent; `None` rate means unlimited.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: Option<u64>,
    state: tokio::sync::Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// A limiter at `bytes_per_sec` (`None` or 0: unlimited).
    pub fn new(bytes_per_sec: Option<u64>) -> Throttle {
        let bytes_per_sec = bytes_per_sec.filter(|r| *r > 0);
        Throttle {
            bytes_per_sec,
            state: tokio::sync::Mutex::new(Bucket {
                tokens: bytes_per_sec.unwrap_or(0) as f64,
                last: Instant::now(),
            }),
        }
    }

    /// Waits until `bytes` may be sent. Callers are served in turn (the lock is fair), and a request
    /// larger than the burst is allowed once the bucket is full, then drives it negative.
    pub async fn acquire(&self, bytes: u64) {
        let Some(rate) = self.bytes_per_sec else {
            return;
        };
        let rate = rate as f64;
        let mut bucket = self.state.lock().await;
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
            bucket.last = now;
            let need = (bytes as f64).min(rate);
            if bucket.tokens >= need {
                bucket.tokens -= bytes as f64;
                return;
            }
            let wait = (need - bucket.tokens) / rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_the_rate_after_the_burst() {
        let t = Throttle::new(Some(1_000_000));
        let start = Instant::now();
        // 1 MB burst is free, the next 0.5 MB takes about half a second.
        t.acquire(1_000_000).await;
        t.acquire(500_000).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let unlimited = Throttle::new(None);
        let start = Instant::now();
        unlimited.acquire(u64::MAX).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
