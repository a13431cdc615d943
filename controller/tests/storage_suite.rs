//! openraft's own storage conformance suite, run against the real on-disk stores.

use controller::LogStore;
use controller::StateMachineStore;
use controller::TypeConfig;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::StorageError;
use tempfile::TempDir;

struct DiskStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for DiskStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = controller::store::open(dir.path()).expect("open stores");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        Suite::test_all(DiskStoreBuilder)
            .await
            .expect("storage suite");
    });
}

/// A store closed right after creation reopens as empty.
#[test]
fn reopen_empty_store_is_empty() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use openraft::storage::RaftLogStorage;
        use openraft::storage::RaftStateMachine;
        use openraft::RaftLogReader;
        let dir = tempfile::tempdir().expect("tempdir");
        drop(controller::store::open(dir.path()).expect("open"));
        let (mut log, mut sm) = controller::store::open(dir.path()).expect("reopen");
        let state = log.get_log_state().await.expect("log state");
        assert!(state.last_log_id.is_none() && state.last_purged_log_id.is_none());
        assert!(log.read_vote().await.expect("vote").is_none());
        assert!(sm.applied_state().await.expect("applied").0.is_none());
        assert!(sm.get_current_snapshot().await.expect("snapshot").is_none());
    });
}
