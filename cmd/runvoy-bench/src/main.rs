//! `runvoy-bench`: starts a real runvoyd (local backend) in a temp dir and prints runvoy's figures
//! next to plain `sh -c` for the same work, in one run:
//!
//! * launch overhead: `runvoy run -- true` vs `sh -c true` (median of N);
//! * throughput: `runvoy run -- seq 1 1000000` through the CLI, every record persisted, vs
//!   `seq 1 1000000 > /dev/null`;
//! * latency: runner write → CLI print at 100 lines/s, p50 and p99;
//! * peak memory (RSS) of runvoyd during the throughput run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use runvoy_testkit::TestServer;

#[derive(Parser)]
#[command(about = "runvoy speed figures vs sh -c")]
struct Args {
    /// Directory with runvoyd, runvoy, runvoy-runner, runvoy-sidecar (e.g. target/release).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Launch samples.
    #[arg(long, default_value_t = 50)]
    launches: usize,
    /// Lines for the throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// Lines for the latency run (at 100 lines/s).
    #[arg(long, default_value_t = 500)]
    latency_lines: u64,
    /// Also measure `--compute docker` next to `docker run --rm` on the local engine, in this
    /// image (`make docker-test-images` builds the default one).
    #[arg(long)]
    docker_image: Option<String>,
    /// Launch samples on Docker (each starts two containers).
    #[arg(long, default_value_t = 15)]
    docker_launches: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn time(mut c: Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let st = c.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn sh(cmd: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd);
    c
}

fn rss_peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let bin_dir = a.bin_dir.canonicalize().context("bin dir")?;
    // SAFETY: set before any thread reads the environment.
    unsafe { std::env::set_var("RUNVOY_BIN_DIR", &bin_dir) };
    let s = TestServer::start();
    let pid = std::fs::read_to_string(s.data_dir().join("server.json"))
        .ok()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .and_then(|v| v["pid"].as_u64())
        .unwrap_or(0) as u32;
    let isolation = s.client().health().await?.isolation;
    println!(
        "runvoy-bench: runvoyd {} (local backend, isolation: {isolation})",
        s.url
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    println!();

    // Launch overhead.
    let mut base = Vec::new();
    let mut rv = Vec::new();
    for _ in 0..a.launches {
        base.push(time(sh("true"))?);
        let mut c = s.runvoy();
        c.args(["run", "-q", "--", "true"]);
        rv.push(time(c)?);
    }
    let (b, r) = (median(&mut base) * 1e3, median(&mut rv) * 1e3);
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "benchmark", "sh -c", "runvoy", "ratio"
    );
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms {:>9.1}x   overhead {:.1} ms (goal <= 25 ms)",
        format!("launch `true` (median of {})", a.launches),
        b,
        r,
        r / b,
        r - b
    );

    // Throughput through the CLI, every record persisted.
    let cmd = format!("seq 1 {}", a.lines);
    let tb = time(sh(&format!("{cmd} > /dev/null")))?;
    let mut c = s.runvoy();
    c.args(["run", "-q", "--", &cmd]);
    let tr = time(c)?;
    let client = s.client();
    let list = client.list_executions(&Default::default()).await?;
    let e = s
        .wait_settled(&list.executions[0].execution_id, Duration::from_secs(300))
        .await;
    let stored = e.log_lines.unwrap_or(0);
    println!(
        "{:<44} {:>9.0} k/s {:>9.0} k/s {:>9.1}x   {} records persisted; runvoy {:.2} s (goal >= 1000 k/s)",
        format!("throughput `seq 1 {}` (lines/s)", a.lines),
        a.lines as f64 / tb / 1e3,
        a.lines as f64 / tr / 1e3,
        tr / tb,
        stored,
        tr
    );
    if let Some(kib) = rss_peak_kib(pid) {
        println!(
            "{:<44} {:>12} {:>9.1} MiB",
            "runvoyd peak RSS so far",
            "",
            kib as f64 / 1024.0
        );
    }

    // Latency: the command prints its clock; we read the CLI's stdout as it arrives.
    let script = format!(
        "i=0; while [ $i -lt {} ]; do date +%s%N; i=$((i+1)); sleep 0.01; done",
        a.latency_lines
    );
    let mut c = s.runvoy();
    c.args(["run", "-q", "--", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn()?;
    let mut lat = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        if let Ok(sent) = line.trim().parse::<u128>() {
            lat.push((now_ns().saturating_sub(sent)) as f64 / 1e6);
        }
    }
    child.wait()?;
    let mut base_lat = Vec::new();
    let mut c = sh(&script);
    c.stdout(Stdio::piped());
    let mut child = c.spawn()?;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Ok(sent) = line?.trim().parse::<u128>() {
            base_lat.push((now_ns().saturating_sub(sent)) as f64 / 1e6);
        }
    }
    child.wait()?;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let (b50, b99) = (pct(&mut base_lat, 0.5), pct(&mut base_lat, 0.99));
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms {:>9.1}x",
        format!("latency p50 at 100 lines/s ({} lines)", lat.len()),
        b50,
        p50,
        p50 / b50.max(1e-3)
    );
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms {:>9.1}x   (goal p99 <= 10 ms)",
        "latency p99 at 100 lines/s",
        b99,
        p99,
        p99 / b99.max(1e-3)
    );
    if let Some(kib) = rss_peak_kib(pid) {
        println!(
            "{:<44} {:>12} {:>9.1} MiB",
            "runvoyd peak RSS",
            "",
            kib as f64 / 1024.0
        );
    }
    drop(s);
    if let Some(image) = &a.docker_image {
        docker(&a, image).await?;
    }
    Ok(())
}

/// `--compute docker` next to the engine's own `docker run --rm`, the same image and work.
async fn docker(a: &Args, image: &str) -> anyhow::Result<()> {
    let mut args = runvoy_testkit::backend::docker_args();
    let at = args
        .iter()
        .position(|x| x == "--default-image")
        .context("docker args")?;
    args[at + 1] = image.to_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = TestServer::start_with(&args, &[]);
    println!();
    println!("== --compute docker, image {image}");
    println!(
        "{:<44} {:>12} {:>12} {:>10}",
        "benchmark", "docker run", "runvoy", "ratio"
    );
    let docker_run = |cmd: &[&str]| {
        let mut c = Command::new("docker");
        c.args(["run", "--rm", "--network", "none", image])
            .args(cmd);
        c
    };
    let (mut base, mut rv) = (Vec::new(), Vec::new());
    for _ in 0..a.docker_launches {
        base.push(time(docker_run(&["true"]))?);
        let mut c = s.runvoy();
        c.args(["run", "-q", "--", "true"]);
        rv.push(time(c)?);
    }
    let (b, r) = (median(&mut base) * 1e3, median(&mut rv) * 1e3);
    println!(
        "{:<44} {:>9.0} ms {:>9.0} ms {:>9.2}x   overhead {:.0} ms",
        format!("launch `true` (median of {})", a.docker_launches),
        b,
        r,
        r / b,
        r - b
    );
    let cmd = format!("seq 1 {}", a.lines);
    let tb = time(docker_run(&["sh", "-c", &cmd]))?;
    let mut c = s.runvoy();
    c.args(["run", "-q", "--", &cmd]);
    let tr = time(c)?;
    let list = s.client().list_executions(&Default::default()).await?;
    let e = s
        .wait_settled(&list.executions[0].execution_id, Duration::from_secs(300))
        .await;
    println!(
        "{:<44} {:>9.0} k/s {:>9.0} k/s {:>9.2}x   {} records persisted; runvoy {:.2} s",
        format!("throughput `seq 1 {}` (lines/s)", a.lines),
        a.lines as f64 / tb / 1e3,
        a.lines as f64 / tr / 1e3,
        tr / tb,
        e.log_lines.unwrap_or(0),
        tr
    );
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
