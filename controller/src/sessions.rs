//! Broker sessions: the active controller fences a broker whose heartbeats stopped.
//!
//! Heartbeats are `BrokerHeartbeat` commands, so every controller knows each broker's last
//! heartbeat time (from the proposer's clock). The leader checks every `session_timeout / 3` and
//! proposes `FenceBroker` for each unfenced broker silent for longer than the session timeout.
//! A node that just became leader first waits one full session timeout, so brokers that were
//! heartbeating to the old leader (or were cut off by the election itself) get a chance to reach
//! it before anyone is fenced. A fenced broker is unfenced by registering again (its restart).

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::state::{Command, MetadataState};
use crate::store::{MetadataRaft, StateMachineStore};

/// `FenceBroker` commands for the unfenced brokers whose last heartbeat is older than
/// `session_timeout_ms` at `now_ms`.
pub fn expired_sessions(
    state: &MetadataState,
    now_ms: i64,
    session_timeout_ms: i64,
) -> Vec<Command> {
    state
        .brokers
        .values()
        .filter(|b| !b.fenced && now_ms.saturating_sub(b.last_heartbeat_ms) > session_timeout_ms)
        .map(|b| Command::FenceBroker {
            broker_id: b.id,
            broker_epoch: b.epoch,
        })
        .collect()
}

/// Runs the session timer of node `node_id` until `cancel` fires.
pub async fn run_session_timer(
    node_id: u64,
    raft: MetadataRaft,
    sm: StateMachineStore,
    session_timeout_ms: i64,
    cancel: CancellationToken,
) {
    let period = Duration::from_millis((session_timeout_ms / 3).clamp(50, 5_000) as u64);
    let mut leader_since: Option<i64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let now = now_ms();
        let leading = raft.metrics().borrow_watched().current_leader == Some(node_id);
        if !leading {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert(now);
        if now - since < session_timeout_ms {
            continue;
        }
        let expired = sm.read(|s| expired_sessions(s, now, session_timeout_ms));
        for command in expired {
            match raft.client_write(command.clone()).await {
                Ok(resp) => match resp.data {
                    Ok(_) => tracing::warn!(?command, "fenced a broker whose session expired"),
                    // Re-registered or already fenced meanwhile: nothing to do.
                    Err(e) => tracing::debug!(?command, error = %e, "session fencing not applied"),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot propose session fencing; not leader any more?");
                    break;
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::state::{apply, Listener};

    fn register(state: &mut MetadataState, id: i32, now_ms: i64) {
        apply(
            state,
            Command::RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::new_v4(),
                listeners: vec![Listener {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092 + id as u16,
                }],
                rack: None,
                now_ms,
            },
        )
        .expect("register");
    }

    #[test]
    fn only_silent_unfenced_brokers_expire() {
        let mut state = MetadataState::default();
        register(&mut state, 1, 1_000);
        register(&mut state, 2, 1_000);
        register(&mut state, 3, 1_000);
        let epoch2 = state.brokers[&2].epoch;
        apply(
            &mut state,
            Command::BrokerHeartbeat {
                broker_id: 2,
                broker_epoch: epoch2,
                now_ms: 9_000,
            },
        )
        .expect("heartbeat");
        let epoch3 = state.brokers[&3].epoch;
        apply(
            &mut state,
            Command::FenceBroker {
                broker_id: 3,
                broker_epoch: epoch3,
            },
        )
        .expect("fence");
        assert!(expired_sessions(&state, 9_500, 9_000).is_empty());
        let expired = expired_sessions(&state, 10_500, 9_000);
        assert_eq!(
            expired,
            vec![Command::FenceBroker {
                broker_id: 1,
                broker_epoch: state.brokers[&1].epoch,
            }]
        );
        for c in expired {
            apply(&mut state, c).expect("fence 1");
        }
        assert!(state.brokers[&1].fenced);
        assert!(expired_sessions(&state, 10_500, 9_000).is_empty());
    }
}
