//! Load driver for `scripts/bench-load.sh`: drives a running server over loopback with real
//! flows, closed-loop, at each of several concurrencies, and prints one `step …` line of
//! `key=value` pairs per (concurrency, kind) on stdout (progress goes to stderr).
//!
//! Kinds, run in this order at each concurrency:
//! - `start`: `POST /v2/public/actions/processId/{p}/workspaceId/{w}`, a new reference each
//!   time; the tokens it returns feed the kinds below.
//! - `current`: `GET /v2/public/actions/{token}` on a random waiting execution.
//! - `submit-invalid`: `POST /v3/public/actions/{token}` with a payload that fails validation
//!   (400) on a random waiting execution; nothing changes, so tokens are reused.
//! - `submit-valid`: the same with a valid payload (200); each token is used once. When the
//!   tokens left would not last the step, more are made first with untimed starts.
//! - `lifecycle`: start → current step → submit, each lifecycle with its own token; the
//!   latency is that of the three requests together.
//!
//! Each of `--concurrency` workers sends its next request as soon as its previous one is
//! answered. Requests started during `--warmup-secs` are not counted; then the step runs for
//! `--step-secs`. With `--server-pid` each line also carries the server's CPU (from
//! `/proc/<pid>/stat`) and memory (`VmRSS`, `VmHWM`), next to the driver's own CPU and the
//! whole machine's, so that a noisy run shows as one.
//!
//! It uses reqwest, the HTTP client the server already depends on for webhooks, over plain
//! HTTP/1.1 keep-alive: one connection per worker.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Drive a running spektr-server with real flows and report throughput")]
struct Args {
    /// Server base URL, `http://host:port`.
    #[arg(long)]
    base_url: String,
    #[arg(long)]
    workspace: String,
    /// A process whose first step is an External Step expecting `company_name` (string) and
    /// `country_of_incorporation` (country), both required.
    #[arg(long)]
    process: String,
    #[arg(long)]
    api_key: String,
    /// Concurrencies, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Kinds, comma-separated, run in the order given at each concurrency.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "start,current,submit-invalid,submit-valid,lifecycle"
    )]
    kinds: Vec<Kind>,
    /// Measured seconds per (concurrency, kind).
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Unmeasured seconds before each step (connections open, caches fill).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Server process to report CPU and memory of.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Added to every line as `backend=…`.
    #[arg(long, default_value = "?")]
    label: String,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Start,
    Current,
    SubmitInvalid,
    SubmitValid,
    Lifecycle,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Current => "current",
            Kind::SubmitInvalid => "submit-invalid",
            Kind::SubmitValid => "submit-valid",
            Kind::Lifecycle => "lifecycle",
        }
    }
}

const VALID: &str = r#"{"company_name":"Bench Company Ltd","country_of_incorporation":"RO"}"#;
const INVALID: &str = r#"{"country_of_incorporation":"Denmark"}"#;

/// What every worker shares.
struct Ctx {
    client: reqwest::Client,
    base: String,
    start_url: String,
    api_key: String,
    /// Tokens of executions that wait on their External Step.
    waiting: Mutex<Vec<String>>,
    /// Makes every reference unique within the run.
    run_id: String,
}

impl Ctx {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn random_token(&self) -> Option<String> {
        let waiting = self.waiting();
        if waiting.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..waiting.len());
        Some(waiting[i].clone())
    }

    async fn start(&self, reference: String) -> Result<String, String> {
        let body = json!({ "data": { "reference": reference } }).to_string();
        let response = self
            .client
            .post(&self.start_url)
            .header("x-api-key", &self.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("start: {e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("start: {e}"))?;
        if status != StatusCode::CREATED {
            return Err(format!("start: {status}"));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("start: {e}"))?;
        value["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "start: no token".to_owned())
    }

    async fn current(&self, token: &str) -> Result<(), String> {
        let response = self
            .client
            .get(format!("{}/v2/public/actions/{token}", self.base))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .map_err(|e| format!("current: {e}"))?;
        expect("current", response, StatusCode::OK).await
    }

    async fn submit(&self, token: &str, payload: &'static str) -> Result<(), String> {
        let (what, want) = if payload == VALID {
            ("submit-valid", StatusCode::OK)
        } else {
            ("submit-invalid", StatusCode::BAD_REQUEST)
        };
        let response = self
            .client
            .post(format!("{}/v3/public/actions/{token}", self.base))
            .header("x-api-key", &self.api_key)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        expect(what, response, want).await
    }

    /// One request (or one lifecycle) of `kind`; `Ok(false)` when no token is left.
    async fn once(&self, kind: Kind, reference: String) -> Result<bool, String> {
        match kind {
            Kind::Start => {
                let token = self.start(reference).await?;
                self.waiting().push(token);
            }
            Kind::Current => {
                let Some(token) = self.random_token() else {
                    return Ok(false);
                };
                self.current(&token).await?;
            }
            Kind::SubmitInvalid => {
                let Some(token) = self.random_token() else {
                    return Ok(false);
                };
                self.submit(&token, INVALID).await?;
            }
            Kind::SubmitValid => {
                let Some(token) = self.waiting().pop() else {
                    return Ok(false);
                };
                self.submit(&token, VALID).await?;
            }
            Kind::Lifecycle => {
                let token = self.start(reference).await?;
                self.current(&token).await?;
                self.submit(&token, VALID).await?;
            }
        }
        Ok(true)
    }
}

/// Reads the whole body (so the connection can be reused) and checks the status.
async fn expect(what: &str, response: reqwest::Response, want: StatusCode) -> Result<(), String> {
    let status = response.status();
    response.bytes().await.map_err(|e| format!("{what}: {e}"))?;
    if status == want {
        Ok(())
    } else {
        Err(format!("{what}: {status}"))
    }
}

/// What one worker saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
    ran_out: bool,
}

async fn worker(
    ctx: Arc<Ctx>,
    kind: Kind,
    id: usize,
    measure_from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    for n in 0u64.. {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let reference = format!("{}-{}-{id}-{n}", ctx.run_id, kind.name());
        let result = ctx.once(kind, reference).await;
        let done = Instant::now();
        let counted = sent >= measure_from;
        match result {
            Ok(true) if counted => {
                tally.latencies.push(done - sent);
                tally.last_done = Some(done);
            }
            Ok(true) => {}
            Ok(false) => {
                tally.ran_out = true;
                break;
            }
            Err(error) => {
                if counted {
                    tally.errors += 1;
                    tally.last_done = Some(done);
                }
                tally.first_error.get_or_insert(error);
                // A server that refuses everything should not turn this into a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// CPU ticks (user + system) of a process; `self` for this one.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of the whole machine, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A `Vm…` line of `/proc/<pid>/status`, in MB.
fn memory_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Usage {
    server: Option<u64>,
    driver: Option<u64>,
    machine: Option<(u64, u64)>,
    at: Instant,
}

impl Usage {
    fn now(server_pid: Option<u32>) -> Self {
        Usage {
            server: server_pid.and_then(|pid| process_ticks(&pid.to_string())),
            driver: process_ticks("self"),
            machine: machine_ticks(),
            at: Instant::now(),
        }
    }
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// Runs `kind` with `concurrency` workers; returns the measured requests per second and
/// prints the step's line.
async fn run_step(ctx: &Arc<Ctx>, args: &Args, kind: Kind, concurrency: usize) -> f64 {
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let measure_from = Instant::now() + warmup;
    let until = measure_from + Duration::from_secs_f64(args.step_secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(worker(ctx.clone(), kind, id, measure_from, until)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = Usage::now(args.server_pid);

    let mut latencies = Vec::new();
    let (mut errors, mut ran_out) = (0u64, false);
    let (mut first_error, mut last_done) = (None, measure_from);
    for handle in workers {
        let tally = handle.await.unwrap_or_default();
        latencies.extend(tally.latencies);
        errors += tally.errors;
        ran_out |= tally.ran_out;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
        last_done = last_done.max(tally.last_done.unwrap_or(measure_from));
    }
    let after = Usage::now(args.server_pid);
    latencies.sort();

    let secs = last_done
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let requests = latencies.len() as f64;
    let rps = requests / secs;
    let wall = (after.at - before.at).as_secs_f64().max(1e-9);
    let tck = args.clk_tck as f64;
    let cpu_pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.0}", (b - a) as f64 / tck / wall * 100.0),
        _ => "-".to_owned(),
    };
    let server_us_per_request = match (before.server, after.server) {
        (Some(a), Some(b)) if requests > 0.0 => {
            format!("{:.0}", (b - a) as f64 / tck * 1e6 / requests)
        }
        _ => "-".to_owned(),
    };
    let machine_pct = match (before.machine, after.machine) {
        // Percent of all cores, as `top` shows one process: 200 is two cores busy.
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => format!(
            "{:.0}",
            (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0 * cores() as f64
        ),
        _ => "-".to_owned(),
    };
    let memory = |field| {
        args.server_pid
            .and_then(|pid| memory_mb(pid, field))
            .map_or_else(|| "-".to_owned(), |mb| format!("{mb:.1}"))
    };

    let mut line = String::new();
    let _ = write!(
        line,
        "step backend={} kind={} concurrency={concurrency} requests={} errors={errors} \
         ran_out={} secs={secs:.2} rps={rps:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
         server_cpu_pct={} server_cpu_us_per_req={server_us_per_request} driver_cpu_pct={} \
         machine_cpu_pct={machine_pct} rss_mb={} hwm_mb={} first_error={}",
        args.label,
        kind.name(),
        latencies.len(),
        u8::from(ran_out),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0),
        cpu_pct(before.server, after.server),
        cpu_pct(before.driver, after.driver),
        memory("VmRSS:"),
        memory("VmHWM:"),
        first_error.map_or_else(|| "-".to_owned(), |e| e.replace(' ', "_")),
    );
    println!("{line}");
    eprintln!(
        "  {:<15} c={concurrency:<4} {rps:>8.1}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {errors}",
        kind.name(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    rps
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Starts executions (not measured) until `want` tokens wait, or 120 s have passed.
async fn top_up(ctx: &Arc<Ctx>, want: usize, concurrency: usize) -> anyhow::Result<()> {
    let missing = want.saturating_sub(ctx.waiting().len());
    if missing == 0 {
        return Ok(());
    }
    eprintln!("  (making {missing} waiting executions for submit-valid)");
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers: Vec<_> = (0..concurrency.max(8))
        .map(|id| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    if ctx.waiting().len() >= want || Instant::now() >= deadline {
                        break;
                    }
                    let reference = format!("{}-topup-{id}-{n}", ctx.run_id);
                    match ctx.start(reference).await {
                        Ok(token) => ctx.waiting().push(token),
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handle in workers {
        if let Err(error) = handle.await? {
            bail!("could not make waiting executions: {error}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.step_secs > 0.0, "--step-secs must be positive");
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "concurrencies must be positive"
    );
    let base = args.base_url.trim_end_matches('/').to_owned();
    // reqwest is built without a TLS backend of its own (plain HTTP here); it still wants a
    // crypto provider installed before a client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .context("building the HTTP client")?;
    let ctx = Arc::new(Ctx {
        client,
        start_url: format!(
            "{base}/v2/public/actions/processId/{}/workspaceId/{}",
            args.process, args.workspace
        ),
        base,
        api_key: args.api_key.clone(),
        waiting: Mutex::new(Vec::new()),
        run_id: format!("load{}", std::process::id()),
    });

    // The first start checks the set-up and gives current and submit a token to work on.
    let token = ctx
        .start(format!("{}-check", ctx.run_id))
        .await
        .map_err(|e| anyhow::anyhow!("the first start failed: {e}"))?;
    ctx.current(&token)
        .await
        .map_err(|e| anyhow::anyhow!("the first current step failed: {e}"))?;
    ctx.waiting().push(token);

    let mut best_rate: f64 = 0.0;
    for &concurrency in &args.concurrency {
        eprintln!("concurrency {concurrency}");
        for &kind in &args.kinds {
            if kind == Kind::SubmitValid {
                // Enough for the step at three times the best write rate seen so far (a submit
                // can be cheaper than a start).
                let secs = args.step_secs + args.warmup_secs;
                let want = (best_rate * secs * 3.0) as usize + 200 + concurrency;
                top_up(&ctx, want, concurrency).await?;
            }
            let rps = run_step(&ctx, &args, kind, concurrency).await;
            if matches!(kind, Kind::Start | Kind::SubmitValid) {
                best_rate = best_rate.max(rps);
            }
        }
    }
    Ok(())
}
