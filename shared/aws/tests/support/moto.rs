//! Test support: a private moto server per test (or per test binary), started by the test itself.
//!
//! Shared by the adapter tests (`shared/aws/tests`) and the CLI tests (`shared/cli/tests`, through
//! `#[path]`). Finds `moto_server` in `$MOTO_SERVER` or `<repo>/.venv/bin/moto_server`; a missing
//! moto is a test failure telling how to install it, never a silent skip.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Both crates that use this module sit two levels below the repository root.
const REPO_FROM_MANIFEST: &str = "../..";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MotoServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers HTTP.
    pub fn start() -> MotoServer {
        let binary = moto_binary();
        let mut last_error = String::new();
        // A free port can be taken between probing and moto binding it: try a few.
        for _ in 0..3 {
            match try_start(&binary) {
                Ok(server) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!(
            "moto_server ({}) did not start: {last_error}",
            binary.display()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a child process (the `dmarc-tsv` binary) to talk to this moto only.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            // Keep a developer's profile, SSO or IMDS out of the tests.
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Lets moto's Step Functions actually run state machines (Pass/Succeed/Fail states).
    pub fn enable_stepfunctions_execution(&self) {
        let body = r#"{"stepfunctions":{"execute_state_machine":true}}"#;
        let status = http_post(self.port, "/moto-api/config", body)
            .unwrap_or_else(|err| panic!("moto config POST failed: {err}"));
        assert!(
            (200..300).contains(&status),
            "moto config POST answered {status}"
        );
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(REPO_FROM_MANIFEST);
    let candidate = repo.join(".venv/bin/moto_server");
    assert!(
        candidate.is_file(),
        "moto_server not found at {} (and MOTO_SERVER is not set). These tests need a local \
         moto server: run `scripts/test` (or `python3 -m venv .venv && .venv/bin/pip install -r \
         scripts/requirements-test.txt`) in the repository root.",
        candidate.display()
    );
    candidate
}

fn try_start(binary: &PathBuf) -> Result<MotoServer, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let log =
        std::env::temp_dir().join(format!("dmarc-tsv-moto-{}-{port}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
    let log_err = log_file.try_clone().map_err(|e| format!("log file: {e}"))?;
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let mut server = MotoServer { child, port, log };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("exited with {status}: {}", server.log_tail()));
        }
        if http_get_status(port, "/moto-api/").is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = server.log_tail();
    drop(server);
    Err(format!("no answer within {START_TIMEOUT:?}: {tail}"))
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn http_get_status(port: u16, path: &str) -> Result<u16, String> {
    http_request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

fn http_post(port: u16, path: &str, body: &str) -> Result<u16, String> {
    http_request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A minimal HTTP/1.1 exchange; returns the status code.
fn http_request(port: u16, request: &str) -> Result<u16, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", text.get(..80)))
}
