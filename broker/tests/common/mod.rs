//! Test harness shared by the broker's integration tests: runs the real `strata` binary on free ports in a
//! temporary data directory, and speaks the Kafka wire protocol over raw TCP with `kafka_protocol`'s
//! encoders.
//!
//! A [`TestBroker`] sends SIGTERM when dropped and waits for the process; when the test is panicking it
//! prints the tail of the broker's log so the failure shows what the broker saw.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes,
};
use tempfile::TempDir;

/// How long a test waits for the broker to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a clean exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): bind(port 0) and outgoing connections both draw from that range,
/// so a port picked there can be taken by a connection before the broker binds it. Never the same port
/// twice in one test process (tests run in parallel threads).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (base, span) = if low >= 12000 {
        (10000, low - 10000)
    } else {
        (61000, 4535)
    };
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(base + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + span)
}

/// One `strata broker` process.
pub struct TestBroker {
    child: Option<Child>,
    /// Kafka listener port.
    pub port: u16,
    /// Prometheus listener port.
    pub metrics_port: u16,
    data_dir: TempDir,
    log_path: PathBuf,
    extra_args: Vec<String>,
}

impl TestBroker {
    /// Starts a broker with default flags.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker with extra command-line flags, waiting until its Kafka port accepts connections.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("strata-it-")
            .tempdir()
            .expect("create a temporary data directory");
        let port = free_port();
        let mut metrics_port = free_port();
        while metrics_port == port {
            metrics_port = free_port();
        }
        let log_path = data_dir.path().join("broker.log");
        let mut broker = TestBroker {
            child: None,
            port,
            metrics_port,
            log_path,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let data = self.data_dir.path().join("data");
        let log = File::create(&self.log_path).expect("create the broker log file");
        let log_err = log.try_clone().expect("clone the broker log file handle");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("broker")
            .args(["--listen", &addr, "--advertised-listener", &addr])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(if self.extra_args.iter().any(|a| a == "--node-id") {
                &[][..]
            } else {
                &["--node-id", "0"][..]
            })
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn the strata binary");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let sockaddr: SocketAddr = addr.parse().expect("a valid socket address");
        loop {
            if let Some(status) = self
                .child_mut()
                .try_wait()
                .expect("poll the broker process")
            {
                panic!(
                    "broker exited with {status} while starting:\n{}",
                    self.log_tail(60)
                );
            }
            if TcpStream::connect_timeout(&sockaddr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "broker did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("broker process is running")
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker process is running").id()
    }

    /// Panics (with the log tail) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self
            .child_mut()
            .try_wait()
            .expect("poll the broker process")
        {
            panic!("broker died ({status}):\n{}", self.log_tail(80));
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker process is running");
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait for the killed broker");
                eprintln!("broker ignored SIGTERM for {STOP_TIMEOUT:?}; killed");
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, asserting a clean exit, then start again on the same ports and data directory.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "broker exited with {status} on SIGTERM:\n{}",
            self.log_tail(60)
        );
        self.spawn();
    }

    /// SIGKILL, without a restart.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker process is running");
        child.kill().expect("SIGKILL the broker");
        child.wait().expect("reap the killed broker");
    }

    /// SIGKILL (no chance to flush or clean up), then start again on the same ports and data directory.
    pub fn kill9_and_restart(&mut self) {
        let mut child = self.child.take().expect("broker process is running");
        child.kill().expect("SIGKILL the broker");
        child.wait().expect("reap the killed broker");
        self.spawn();
    }

    /// The last `lines` lines of the broker's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A field of /proc/<pid>/status in KiB (for example "VmPeak" or "VmHWM").
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// A new connection to the Kafka listener with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("set write timeout");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let status = self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "---- broker log tail ({}) ----\n{}\n----",
                self.log_path.display(),
                self.log_tail(80)
            );
        } else if !status.success() {
            eprintln!(
                "broker exited with {status} on SIGTERM:\n{}",
                self.log_tail(60)
            );
            panic!("broker exited with {status} on SIGTERM, expected a clean exit");
        }
    }
}

/// Encodes a size-prefixed request frame with `kafka_protocol`'s encoders.
pub fn encode_frame<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-it")));
    let mut body = BytesMut::new();
    encode_request_header_into_buffer(&mut body, &header)?;
    request.encode(&mut body, version)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// What the broker did with a request.
#[derive(Debug)]
pub enum Reply {
    /// A response frame (size prefix stripped).
    Frame(Bytes),
    /// The broker closed the connection (EOF or reset) before answering.
    Closed,
    /// Nothing within the read timeout.
    Silent,
}

/// Reads one response frame, or reports that the connection closed or stayed silent.
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Reply::Silent
        }
        Err(_) => return Reply::Closed,
    }
    let n = i32::from_be_bytes(len);
    assert!(
        (0..=64 << 20).contains(&n),
        "broker sent a frame of size {n}"
    );
    let mut buf = vec![0u8; n as usize];
    match stream.read_exact(&mut buf) {
        Ok(()) => Reply::Frame(Bytes::from(buf)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Reply::Silent,
        Err(_) => Reply::Closed,
    }
}

/// Sends a request and decodes its response, checking the correlation id.
pub fn roundtrip<R: Request>(
    stream: &mut TcpStream,
    request: &R,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<R::Response> {
    stream.write_all(&encode_frame(request, version, correlation_id)?)?;
    match read_reply(stream) {
        Reply::Frame(mut frame) => {
            let header = ResponseHeader::decode(
                &mut frame,
                <R::Response as HeaderVersion>::header_version(version),
            )?;
            anyhow::ensure!(
                header.correlation_id == correlation_id,
                "correlation id {} in the response to request {correlation_id}",
                header.correlation_id
            );
            let response = <R::Response as Decodable>::decode(&mut frame, version)?;
            anyhow::ensure!(
                !frame.has_remaining(),
                "{} bytes left after decoding the response",
                frame.remaining()
            );
            Ok(response)
        }
        other => anyhow::bail!("no response to api key {}: {other:?}", R::KEY),
    }
}

/// Asserts that a fresh connection gets a well-formed ApiVersions v3 answer listing the core APIs.
pub fn assert_api_versions_ok(broker: &mut TestBroker, context: &str) {
    broker.assert_running();
    let mut stream = broker.connect();
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("strata-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1"));
    let response: ApiVersionsResponse =
        roundtrip(&mut stream, &request, 3, 4242).unwrap_or_else(|e| {
            panic!(
                "ApiVersions after {context} failed: {e:#}\n{}",
                broker.log_tail(40)
            )
        });
    assert_eq!(response.error_code, 0, "ApiVersions error after {context}");
    for key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ApiVersions,
        ApiKey::Metadata,
    ] {
        assert!(
            response.api_keys.iter().any(|k| k.api_key == key as i16),
            "ApiVersions after {context} does not list {key:?}"
        );
    }
}
