//! Load generator for `scripts/bench-sweeper.sh`: starts executions over the public HTTP API at
//! a steady (open-loop) rate and prints one summary line.
//!
//! Request `i` is due at `start + i / rate`. It is sent then, whether or not earlier requests
//! have been answered, unless `--max-in-flight` requests are already open; in that case it
//! waits, and the achieved rate in the summary falls below the target.
//!
//! It speaks plain HTTP/1.1 with keep-alive over tokio's `TcpStream` (loopback, no TLS), so it
//! needs nothing beyond the crate's own dependencies.
//!
//! ```text
//! cargo run --release --example bench_starts -- --base-url http://127.0.0.1:18181 \
//!     --workspace bench --process bench-steady --api-key … --rate 500 --duration-secs 20
//! ```

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(about = "Start executions at a steady rate and report what happened")]
struct Args {
    /// Server base URL, `http://host:port` (plain HTTP).
    #[arg(long)]
    base_url: String,
    /// Workspace id.
    #[arg(long)]
    workspace: String,
    /// Process id.
    #[arg(long)]
    process: String,
    /// API key of the workspace.
    #[arg(long)]
    api_key: String,
    /// Starts per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Most requests open at once (and most connections).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Prefix of the customer references (each start gets `<prefix><n>`).
    #[arg(long, default_value = "steady-")]
    reference_prefix: String,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
}

/// Idle keep-alive connections.
type Pool = Arc<Mutex<Vec<TcpStream>>>;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what the socket has to `buf`; 0 means the peer closed.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request and reads the whole response; returns the status and whether the
/// connection can be reused.
async fn exchange(stream: &TcpStream, request: &[u8]) -> io::Result<(u16, bool)> {
    write_all(stream, request).await?;
    let mut buf = Vec::with_capacity(4096);
    let body_start = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if read_some(stream, &mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = std::str::from_utf8(&buf[..body_start]).map_err(|_| invalid("response head"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("status line"))?;
    let (mut length, mut chunked, mut close) = (None::<usize>, false, false);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    if chunked {
        while !buf[body_start..].ends_with(b"0\r\n\r\n") {
            if read_some(stream, &mut buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    } else if let Some(length) = length {
        while buf.len() < body_start + length {
            if read_some(stream, &mut buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    } else {
        close = true;
        while read_some(stream, &mut buf).await? > 0 {}
    }
    Ok((status, !close))
}

async fn send(pool: &Pool, addr: &str, request: &[u8]) -> io::Result<u16> {
    let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let stream = match idle {
        Some(stream) => stream,
        None => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream
        }
    };
    let (status, reusable) = exchange(&stream, request).await?;
    if reusable {
        pool.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
    }
    Ok(status)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.duration_secs > 0.0, "--duration-secs must be positive");
    anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be positive");
    let addr = args
        .base_url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--base-url must start with http://"))?
        .trim_end_matches('/')
        .to_owned();
    anyhow::ensure!(!addr.contains('/'), "--base-url must not have a path");
    let path = format!(
        "/v2/public/actions/processId/{}/workspaceId/{}",
        args.process, args.workspace
    );
    let total = (args.rate * args.duration_secs).round() as u64;
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let timeout = Duration::from_secs(args.request_timeout_secs);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    let mut behind_max = Duration::ZERO;

    for i in 0..total {
        let due = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = slots.clone().acquire_owned().await?;
        behind_max = behind_max.max(Instant::now().saturating_duration_since(due));
        let body =
            json!({ "data": { "reference": format!("{}{i}", args.reference_prefix) } }).to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            args.api_key,
            body.len()
        );
        let (pool, addr) = (pool.clone(), addr.clone());
        handles.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = tokio::time::timeout(timeout, send(&pool, &addr, request.as_bytes()))
                .await
                .ok()
                .and_then(Result::ok);
            drop(permit);
            (sent.elapsed(), status)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(handles.len());
    let (mut created, mut other_status, mut transport_errors) = (0u64, 0u64, 0u64);
    let mut first_other: Option<u16> = None;
    for handle in handles {
        let (latency, status) = handle.await?;
        match status {
            Some(201) => created += 1,
            Some(status) => {
                other_status += 1;
                first_other.get_or_insert(status);
            }
            None => transport_errors += 1,
        }
        latencies.push(latency);
    }
    let all_secs = started.elapsed().as_secs_f64();
    latencies.sort();

    // One line of key=value pairs, easy to read from a shell script.
    println!(
        "sent={total} created={created} other_status={other_status} first_other_status={} \
         transport_errors={transport_errors} target_rate={:.1} achieved_rate={:.1} \
         send_secs={send_secs:.2} all_answered_secs={all_secs:.2} max_behind_schedule_ms={:.1} \
         latency_p50_ms={:.1} latency_p99_ms={:.1} latency_max_ms={:.1}",
        first_other.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        args.rate,
        total as f64 / send_secs,
        behind_max.as_secs_f64() * 1000.0,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    anyhow::ensure!(
        created == total,
        "{} of {total} starts were not created",
        total - created
    );
    Ok(())
}
