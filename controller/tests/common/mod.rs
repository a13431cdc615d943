//! Helpers shared by the controller's integration tests.

// Each test crate compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::time::Duration;

use controller::state::Listener;
use controller::Command;
use uuid::Uuid;

/// A registration of `broker_id` with one PLAINTEXT listener, at time 0.
pub fn register_broker(broker_id: i32) -> Command {
    register_broker_at(broker_id, 0)
}

/// A registration of `broker_id` with one PLAINTEXT listener, at `now_ms`.
pub fn register_broker_at(broker_id: i32, now_ms: i64) -> Command {
    Command::RegisterBroker {
        broker_id,
        incarnation_id: Uuid::new_v4(),
        listeners: vec![Listener {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        }],
        rack: None,
        now_ms,
    }
}

/// Poll `f` every 20 ms until it returns `Some`, or panic after 10 s naming `what`.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
