//! The remote tier against real S3-compatible servers on loopback: moto's server and s3s-fs (SigV4
//! checked). Covers conditional-put fencing of the manifest and a full upload/read/retention cycle.
//!
//! The servers come from `bash infra/test-deps.sh` (cached under ~/.cache/strata). Without them the
//! tests say so and pass, unless STRATA_REQUIRE_S3=1 (the test command sets it), which makes a
//! missing server a failure.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tiering::remote::cache::{ChunkCache, ChunkCacheConfig};
use tiering::remote::{
    open_object_store, ManifestStore, ObjectKeys, ObjectStoreConfig, RemoteContext, RemoteError,
    RemoteManifest, RemotePartition, Throttle,
};
use tiering::{LogConfig, PartitionLog, SegmentLog};
use uuid::Uuid;

const ACCESS: &str = "strata-test-access";
const SECRET: &str = "strata-test-secret-key-0123456789";
const BUCKET: &str = "strata";

fn cache_dir() -> PathBuf {
    std::env::var_os("STRATA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/strata")
        })
}

struct Server {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `kind` ("moto" or "s3s"), or returns None (after saying why) if it is not installed and
/// the test command did not require it.
fn start(kind: &str) -> Option<Server> {
    let bin = match kind {
        "moto" => std::env::var_os("STRATA_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv/bin/moto_server")),
        _ => std::env::var_os("STRATA_S3S_FS")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("s3s-fs-0.14.1/bin/s3s-fs")),
    };
    if !bin.exists() {
        let required = std::env::var("STRATA_REQUIRE_S3").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{} missing: run bash infra/test-deps.sh",
            bin.display()
        );
        eprintln!(
            "SKIPPED: {} not installed (bash infra/test-deps.sh installs it)",
            bin.display()
        );
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(&bin);
    if kind == "moto" {
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    } else {
        std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(root.path());
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        port,
        _root: root,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{kind} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    if kind == "moto" {
        // moto does not check signatures; create the bucket with a bare request.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }
    Some(server)
}

fn store(server: &Server, prefix: &str) -> Arc<dyn ObjectStore> {
    open_object_store(&ObjectStoreConfig {
        url: format!("s3://{BUCKET}/{prefix}"),
        endpoint: Some(format!("http://127.0.0.1:{}", server.port)),
        region: Some("us-east-1".into()),
        path_style: true,
        allow_http: true,
        credentials: Some((ACCESS.into(), SECRET.into())),
    })
    .unwrap()
    .store
}

async fn fencing(kind: &str) {
    let Some(server) = start(kind) else { return };
    let store = store(&server, "");
    let key = Path::from("fencing/manifest.json");

    // The server itself refuses a stale conditional update.
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let v1 = store
        .put_opts(&key, PutPayload::from_static(b"{}"), create.clone())
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_opts(&key, PutPayload::from_static(b"{}"), create)
            .await,
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
    ));
    let update = |v: &object_store::PutResult| PutOptions {
        mode: PutMode::Update(v.clone().into()),
        ..Default::default()
    };
    store
        .put_opts(&key, PutPayload::from_static(b"{\"a\":1}"), update(&v1))
        .await
        .unwrap();
    let stale = store
        .put_opts(&key, PutPayload::from_static(b"{\"b\":2}"), update(&v1))
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{kind} accepted a stale conditional update: {stale:?}"
    );
    store.delete(&key).await.unwrap();

    // Two leaders of one partition: the deposed one (epoch 1) cannot overwrite the manifest.
    let (mut old, none) = ManifestStore::load(store.clone(), key.clone())
        .await
        .unwrap();
    assert!(none.is_none());
    let m1 = RemoteManifest::new(Uuid::from_u128(1), 0, 1);
    assert!(old.save(&m1).await.unwrap().is_none());
    let (mut new, loaded) = ManifestStore::load(store.clone(), key.clone())
        .await
        .unwrap();
    let mut m2 = loaded.unwrap();
    m2.leader_epoch = 2;
    m2.log_start_offset = 7;
    assert!(new.save(&m2).await.unwrap().is_none());
    let mut m1b = m1.clone();
    m1b.log_start_offset = 99;
    let err = old.save(&m1b).await.unwrap_err();
    assert!(
        matches!(
            err,
            RemoteError::Fenced {
                current: 2,
                ours: 1,
                ..
            }
        ),
        "{kind}: {err}"
    );
    let (_, stored) = ManifestStore::load(store, key).await.unwrap();
    assert_eq!(stored.unwrap(), m2);
}

#[tokio::test]
async fn manifest_fencing_on_moto() {
    fencing("moto").await;
}

#[tokio::test]
async fn manifest_fencing_on_s3s_fs_with_sigv4() {
    fencing("s3s").await;
}

#[tokio::test]
async fn bad_credentials_are_a_clear_error_on_s3s_fs() {
    let Some(server) = start("s3s") else { return };
    let store = open_object_store(&ObjectStoreConfig {
        url: format!("s3://{BUCKET}/x"),
        endpoint: Some(format!("http://127.0.0.1:{}", server.port)),
        region: Some("us-east-1".into()),
        path_style: true,
        allow_http: true,
        credentials: Some((ACCESS.into(), "wrong-secret".into())),
    })
    .unwrap()
    .store;
    let err = store
        .put(&Path::from("k"), PutPayload::from_static(b"v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("403") || text.to_lowercase().contains("signature"),
        "{text}"
    );
}

#[tokio::test]
async fn segments_round_trip_through_s3s_fs() {
    let Some(server) = start("s3s") else { return };
    let store = store(&server, "rt");
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 32 * 1024,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(&dir.path().join("t-0"), config).unwrap();
    for i in 0..200 {
        let mut batch = one_batch(i);
        log.append_batch(&mut batch, 0, 0).unwrap();
    }
    log.roll().unwrap();
    let ctx = Arc::new(RemoteContext {
        cache: Arc::new(
            ChunkCache::new(
                ChunkCacheConfig {
                    chunk_size: 16 * 1024,
                    ..ChunkCacheConfig::default()
                },
                store.clone(),
            )
            .await
            .unwrap(),
        ),
        store,
        keys: ObjectKeys::new("rt"),
        throttle: Throttle::new(None),
        part_bytes: 5 << 20,
    });
    let remote = RemotePartition::open(ctx.clone(), Uuid::from_u128(5), 0, 0)
        .await
        .unwrap();
    for segment in log.sealed_segment_views(0, i64::MAX, usize::MAX).unwrap() {
        remote.upload(&segment, 0).await.unwrap();
    }
    assert_eq!(remote.end_offset(), Some(log.log_end_offset()));
    let reopened = RemotePartition::open(ctx, Uuid::from_u128(5), 0, 0)
        .await
        .unwrap();
    let mut offset = 0;
    let mut out = Vec::new();
    while offset < log.log_end_offset() {
        let bytes = reopened.read(offset, 10_000, true).await.unwrap();
        let mut pos = 0;
        while pos < bytes.len() {
            let batch = tiering::BatchHeader::parse(&bytes[pos..]).unwrap();
            offset = batch.last_offset() + 1;
            pos += batch.total_size();
        }
        out.extend_from_slice(&bytes);
    }
    let local = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    assert!(
        out == local[..],
        "remote bytes ({}) differ from local bytes ({})",
        out.len(),
        local.len()
    );
}

fn one_batch(i: usize) -> Vec<u8> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..10)
        .map(|r| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: r,
            sequence: r as i32,
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(bytes::Bytes::from(format!(
                "batch-{i}-record-{r}-{}",
                "z".repeat(100)
            ))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}
