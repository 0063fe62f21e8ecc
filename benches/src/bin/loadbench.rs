//! The load harness: airlock side by side with a direct connection and
//! mitmproxy, in one run, alternating targets round by round.
//!
//! `cargo run -p airlock-benches --release --bin loadbench -- [--quick] [--only small,big,mint,mem]`
//!
//! It starts the bench upstream (this binary again, as a separate process
//! so its CPU is never counted as the proxy's), a real `airlock serve`
//! (target/release/airlock, built if missing), and `mitmdump` with
//! `benches/mitm_addon.py` when it is on PATH (or given by `--mitmdump` /
//! `$MITMDUMP`). It installs nothing. Everything listens on 127.0.0.1.
//! See benches/README.md for what each figure means.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};

use airlock_benches::client::{Agent, Conn, Via};
use airlock_benches::{API_HOST, KEY, PLACEHOLDER, TOKEN, write_home};

/// The load harness: airlock side by side with a direct connection and
/// mitmproxy, round by round (benches/README.md says what each figure
/// means).
#[derive(Debug, Parser)]
#[command(name = "loadbench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Shorter phases: 1 s, a 64 MiB download, 30 hosts, 1,000 idle
    /// connections (a flag given too still wins).
    #[arg(long)]
    quick: bool,
    /// Rounds, each running every phase against every target (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3)]
    rounds: usize,
    /// Seconds each `small` run lasts [default: 4, 1 with --quick].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// MiB of the `big` download [default: 256, 64 with --quick].
    #[arg(long, value_name = "N")]
    big_mib: Option<u64>,
    /// New host names per round and target in the `mint` phase [default:
    /// 100, 30 with --quick].
    #[arg(long, value_name = "N")]
    hosts: Option<usize>,
    /// Idle connections held open in the `mem` phase [default: 5000, 1000
    /// with --quick].
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// Only these phases (comma-separated) [default: all].
    #[arg(long, value_name = "PHASES", value_delimiter = ',')]
    only: Vec<Phase>,
    /// The mitmdump to compare with [default: mitmdump on PATH].
    #[arg(long, value_name = "PATH", env = "MITMDUMP")]
    mitmdump: Option<PathBuf>,
    /// Leave mitmproxy out, even if found or given.
    #[arg(long)]
    no_mitm: bool,
    /// The airlock binary to measure [default: target/release/airlock, which
    /// cargo is asked to bring up to date].
    #[arg(long, value_name = "PATH")]
    airlock: Option<PathBuf>,
    /// A second airlock binary, measured as target "baseline" (before/after
    /// an optimisation, in the same run).
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
}

/// What else this binary can be: the harness starts its upstream as
/// `loadbench upstream CA_OUT`.
#[derive(Debug, Subcommand)]
enum Role {
    #[command(hide = true)]
    Upstream {
        /// Where to write the upstream's CA certificate.
        ca_out: PathBuf,
    },
}

/// A phase of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// `/small` over 1 and 64 connections: requests/s, latency, proxy CPU.
    Small,
    /// One `/big` download: MiB/s, proxy CPU.
    Big,
    /// One upload of the same size to `/up`: MiB/s, proxy CPU.
    Up,
    /// Hosts never seen before, one at a time (a leaf minted for each).
    Mint,
    /// Peak RSS, and RSS per idle intercepted connection.
    Mem,
}

#[derive(Clone, Debug)]
struct Options {
    rounds: usize,
    duration: Duration,
    big_mib: u64,
    hosts: usize,
    idle: usize,
    only: Vec<Phase>,
    mitmdump: Option<PathBuf>,
    airlock: Option<PathBuf>,
    /// A second airlock binary measured as target "baseline" (before/after
    /// an optimisation, in the same run).
    baseline: Option<PathBuf>,
}

impl Options {
    fn new(cli: Cli) -> Options {
        let (duration, big_mib, hosts, idle) = if cli.quick { (1.0, 64, 30, 1000) } else { (4.0, 256, 100, 5000) };
        let mitmdump = if cli.no_mitm { None } else { cli.mitmdump.or_else(|| find_on_path("mitmdump")) };
        Options {
            rounds: cli.rounds.max(1),
            duration: Duration::from_secs_f64(cli.duration.unwrap_or(duration)),
            big_mib: cli.big_mib.unwrap_or(big_mib),
            hosts: cli.hosts.unwrap_or(hosts),
            idle: cli.idle.unwrap_or(idle),
            only: cli.only,
            mitmdump,
            airlock: cli.airlock,
            baseline: cli.baseline,
        }
    }

    fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Role::Upstream { ca_out }) = &cli.role {
        return run_upstream(ca_out);
    }
    let options = Options::new(cli);
    harness_exe()?;
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(options))
}

/// The upstream process: prints `listening on ADDR` and serves until killed.
fn run_upstream(ca_out: &Path) -> anyhow::Result<()> {
    let ca = airlock_tests::TestCa::new("airlock loadbench upstream CA");
    std::fs::write(ca_out, ca.pem())?;
    let tls = airlock_benches::upstream::tls_config(&ca);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        airlock_benches::upstream::serve(listener, tls, KEY).await;
        Ok(())
    })
}

/// Raises the soft open-files limit to the hard one (children inherit it).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        let now = getrlimit(Resource::RLIMIT_NOFILE).map(|l| l.0).unwrap_or(soft);
        eprintln!("open files limit: {now} (hard {hard})");
    }
}

// === processes ===

/// A child process killed on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Reads `utime + stime` of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is the first, so
    // utime (field 14) and stime (15) are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until `addr` accepts a TCP connection.
async fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not start listening on {addr}")
}

/// Reads lines from `file` until a whole one contains `marker`; returns the
/// word after it. (A line may be read half-written.)
async fn wait_for_line(file: &Path, marker: &str, what: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(after) = text.split(marker).nth(1)
            && let Some((line, _)) = after.split_once('\n')
            && let Some(word) = line.split_whitespace().next()
        {
            return Ok(word.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not start: {}", std::fs::read_to_string(file).unwrap_or_default())
}

struct Upstream {
    process: Process,
    addr: SocketAddr,
    ca_pem: String,
    ca_path: PathBuf,
}

async fn start_upstream(dir: &Path) -> anyhow::Result<Upstream> {
    let ca_path = dir.join("upstream-ca.pem");
    let out = dir.join("upstream.out");
    let child = Command::new(harness_exe()?)
        .arg("upstream")
        .arg(&ca_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::inherit())
        .spawn()?;
    let process = Process { child };
    let addr = wait_for_line(&out, "listening on ", "the upstream").await?.parse()?;
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    Ok(Upstream { process, addr, ca_pem, ca_path })
}

/// This binary, as it was when the run started (were cargo to rebuild it
/// meanwhile, /proc/self/exe would name the deleted file).
fn harness_exe() -> anyhow::Result<PathBuf> {
    static EXE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().ok()).clone().context("cannot find the harness binary")
}

fn airlock_binary(options: &Options) -> anyhow::Result<PathBuf> {
    if let Some(p) = &options.airlock {
        return Ok(p.clone());
    }
    // target/release/loadbench → target/release/airlock; cargo is asked
    // to bring it up to date (a no-op when it is). Built together with this
    // package, so dependency features unify as they did for the harness and
    // the two builds do not keep recompiling each other's dependencies.
    let exe = harness_exe()?;
    let bin = exe.parent().context("the harness is in a directory")?.join("airlock");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = ["build", "--release", "-p", "airlock", "-p", "airlock-benches", "--bin", "airlock"];
    eprintln!("bringing the release airlock binary up to date (cargo {})", args.join(" "));
    let status = Command::new(cargo).args(args).status();
    if !status.is_ok_and(|s| s.success()) && !bin.exists() {
        bail!("{} is missing and cargo could not build it", bin.display());
    }
    Ok(bin)
}

struct Airlock {
    process: Process,
    addr: SocketAddr,
    ca_pem: String,
}

/// `airlock serve` on a fresh home (see [`write_home`]).
async fn start_airlock(
    bin: &Path,
    dir: &Path,
    name: &str,
    up: &Upstream,
    mint_hosts: &[String],
) -> anyhow::Result<Airlock> {
    let home = dir.join(format!("{name}-home"));
    write_home(&home, up.addr.port(), &up.ca_path, mint_hosts)?;
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(bin)
        .arg("serve")
        .env("AIRLOCK_HOME", &home)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let process = Process { child };
    let addr = wait_for_line(&log, " listening on ", "airlock serve").await?.parse()?;
    let ca_pem = std::fs::read_to_string(home.join("ca.pem"))?;
    Ok(Airlock { process, addr, ca_pem })
}

struct Mitm {
    process: Process,
    addr: SocketAddr,
    ca_pem: String,
}

async fn start_mitm(mitmdump: &Path, dir: &Path, up: &Upstream) -> anyhow::Result<Mitm> {
    let confdir = dir.join("mitm-conf");
    std::fs::create_dir_all(&confdir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addon = Path::new(env!("CARGO_MANIFEST_DIR")).join("mitm_addon.py");
    let log = dir.join("mitm.log");
    let child = Command::new(mitmdump)
        .args(["--listen-host", "127.0.0.1", "--listen-port", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args(["--set", &format!("ssl_verify_upstream_trusted_ca={}", up.ca_path.display())])
        // Stream bodies rather than hold each in memory (mitmproxy's default).
        .args(["--set", "stream_large_bodies=1m"])
        .args(["--set", "flow_detail=0", "--set", "termlog_verbosity=warn"])
        .arg("-s")
        .arg(&addon)
        .env("AIRLOCK_BENCH_PLACEHOLDER", PLACEHOLDER)
        .env("AIRLOCK_BENCH_KEY", KEY)
        .env("AIRLOCK_BENCH_UPSTREAM", up.addr.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("mitm.err"))?)
        .spawn()?;
    let process = Process { child };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_listening(addr, "mitmdump").await?;
    let ca_pem = std::fs::read_to_string(confdir.join("mitmproxy-ca-cert.pem"))?;
    Ok(Mitm { process, addr, ca_pem })
}

// === targets ===

struct Target {
    name: &'static str,
    agent: Agent,
    /// The proxy's process, when there is one.
    pid: Option<u32>,
}

impl Target {
    fn cpu(&self) -> Option<f64> {
        self.pid.map(cpu_seconds)
    }
}

// === measurements ===

/// One figure: a value per round per target.
#[derive(Default)]
struct Figure {
    values: BTreeMap<&'static str, Vec<f64>>,
}

impl Figure {
    fn push(&mut self, target: &'static str, v: Option<f64>) {
        if let Some(v) = v {
            self.values.entry(target).or_default().push(v);
        }
    }

    fn median(&self, target: &str) -> Option<f64> {
        let mut v = self.values.get(target)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn cell(&self, target: &str, unit: &Unit) -> String {
        let Some(v) = self.values.get(target).filter(|v| !v.is_empty()) else { return "—".to_owned() };
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let med = self.median(target).unwrap_or(f64::NAN);
        if v.len() == 1 { unit.fmt(med) } else { format!("{} ({}–{})", unit.fmt(med), unit.fmt(min), unit.fmt(max)) }
    }
}

struct Unit(usize);

impl Unit {
    fn fmt(&self, v: f64) -> String {
        format!("{v:.*}", self.0)
    }
}

/// The figures in print order.
#[derive(Default)]
struct Report {
    rows: Vec<(String, Unit, Figure)>,
}

impl Report {
    fn figure(&mut self, name: &str, decimals: usize) -> &mut Figure {
        if let Some(i) = self.rows.iter().position(|(n, _, _)| n == name) {
            return &mut self.rows[i].2;
        }
        self.rows.push((name.to_owned(), Unit(decimals), Figure::default()));
        &mut self.rows.last_mut().expect("just pushed").2
    }

    fn print(&self, targets: &[&'static str]) {
        let ratio = |f: &Figure, a: &str, b: &str| match (f.median(a), f.median(b)) {
            (Some(x), Some(y)) if y != 0.0 => format!("{:.2}×", x / y),
            _ => "—".to_owned(),
        };
        println!();
        print!("| figure |");
        for t in targets {
            print!(" {t} |");
        }
        let baseline = targets.contains(&"baseline");
        println!(" airlock/direct | airlock/mitmproxy |{}", if baseline { " airlock/baseline |" } else { "" });
        print!("|---|");
        for _ in targets {
            print!("---:|");
        }
        println!("---:|---:|{}", if baseline { "---:|" } else { "" });
        for (name, unit, f) in &self.rows {
            print!("| {name} |");
            for t in targets {
                print!(" {} |", f.cell(t, unit));
            }
            print!(" {} | {} |", ratio(f, "airlock", "direct"), ratio(f, "airlock", "mitmproxy"));
            if baseline {
                print!(" {} |", ratio(f, "airlock", "baseline"));
            }
            println!();
        }
    }
}

/// Percentile of sorted latencies.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct SmallRun {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: Option<f64>,
}

/// `conc` keep-alive connections each GETting `/small` back to back for
/// `duration`.
async fn small(target: &Target, port: u16, conc: usize, duration: Duration) -> anyhow::Result<SmallRun> {
    let mut conns = Vec::with_capacity(conc);
    for _ in 0..conc {
        let mut c = target.agent.open(API_HOST, port).await?;
        // Warm: the proxy's upstream connection is open and pooled.
        let (status, _) = c.get("/small").await?;
        if status != 200 {
            bail!("{}: /small answered {status}", target.name);
        }
        conns.push(c);
    }
    let cpu0 = target.cpu();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c: Conn| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match c.get("/small").await {
                        Ok((200, _)) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = target.cpu().zip(cpu0).map(|(b, a)| b - a);
    if errors > 0 {
        bail!("{}: {errors} failed requests at concurrency {conc}", target.name);
    }
    all.sort_by(f64::total_cmp);
    let n = all.len() as f64;
    Ok(SmallRun {
        rps: n / elapsed,
        p50_us: pct(&all, 0.5),
        p99_us: pct(&all, 0.99),
        cpu_us_per_req: cpu.map(|c| c * 1e6 / n),
    })
}

/// One download of `bytes`: MiB/s and proxy CPU-seconds per GiB.
async fn big(target: &Target, port: u16, bytes: u64) -> anyhow::Result<(f64, Option<f64>)> {
    let mut c = target.agent.open(API_HOST, port).await?;
    c.get("/small").await?;
    let cpu0 = target.cpu();
    let start = Instant::now();
    let (status, len) = c.get(&format!("/big?bytes={bytes}")).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = target.cpu().zip(cpu0).map(|(b, a)| b - a);
    if status != 200 || len != bytes {
        bail!("{}: /big answered {status} with {len} of {bytes} bytes", target.name);
    }
    let gib = bytes as f64 / f64::from(1u32 << 30);
    Ok((bytes as f64 / f64::from(1u32 << 20) / elapsed, cpu.map(|c| c / gib)))
}

/// One upload of `bytes`: MiB/s and proxy CPU-seconds per GiB.
async fn upload(target: &Target, port: u16, bytes: u64) -> anyhow::Result<(f64, Option<f64>)> {
    let mut c = target.agent.open(API_HOST, port).await?;
    c.get("/small").await?;
    let frame = Bytes::from(airlock_benches::upstream::big_frame());
    let cpu0 = target.cpu();
    let start = Instant::now();
    let (status, _) = c.post("/up", frame, bytes).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = target.cpu().zip(cpu0).map(|(b, a)| b - a);
    if status != 200 {
        bail!("{}: /up answered {status}", target.name);
    }
    let gib = bytes as f64 / f64::from(1u32 << 30);
    Ok((bytes as f64 / f64::from(1u32 << 20) / elapsed, cpu.map(|c| c / gib)))
}

struct MintRun {
    p50_ms: f64,
    p99_ms: f64,
    /// Median of the connection set-up alone (TCP, CONNECT, TLS).
    open_p50_ms: f64,
    /// Median of the first request alone, once the connection is up.
    request_p50_ms: f64,
}

/// The first request to each of `hosts`, one after another, on a new
/// connection each: p50 and p99 of the whole, and the median of its two
/// halves.
async fn mint(target: &Target, port: u16, hosts: &[String]) -> anyhow::Result<MintRun> {
    let (mut lat, mut open, mut request) = (Vec::new(), Vec::new(), Vec::new());
    for h in hosts {
        let t = Instant::now();
        let mut c = target.agent.open(h, port).await?;
        let opened = t.elapsed();
        let (status, _) = c.get("/small").await?;
        if status != 200 {
            bail!("{}: {h}/small answered {status}", target.name);
        }
        let total = t.elapsed();
        lat.push(total.as_secs_f64() * 1e3);
        open.push(opened.as_secs_f64() * 1e3);
        request.push((total - opened).as_secs_f64() * 1e3);
    }
    for v in [&mut lat, &mut open, &mut request] {
        v.sort_by(f64::total_cmp);
    }
    Ok(MintRun {
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        open_p50_ms: pct(&open, 0.5),
        request_p50_ms: pct(&request, 0.5),
    })
}

/// Opens `n` intercepted keep-alive connections (one request each) and
/// returns the proxy's RSS growth per connection in KiB.
async fn idle(target: &Target, port: u16, n: usize) -> anyhow::Result<Option<f64>> {
    let Some(pid) = target.pid else { return Ok(None) };
    let before = vm_kib(pid, "VmRSS");
    let agent = Arc::new(target.agent.clone());
    let mut conns = Vec::with_capacity(n);
    // Opened 32 at a time: the handshakes are the slow part.
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let opened: Vec<_> = chunk
            .iter()
            .map(|_| {
                let agent = Arc::clone(&agent);
                tokio::spawn(async move {
                    let mut c = agent.open(API_HOST, port).await?;
                    c.get("/small").await?;
                    anyhow::Ok(c)
                })
            })
            .collect();
        for o in opened {
            conns.push(o.await??);
        }
    }
    // Let the proxy settle (allocator caches, pooled upstream connections).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_kib(pid, "VmRSS");
    drop(conns);
    Ok(Some((after.saturating_sub(before)) as f64 / n as f64))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("airlock-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&options, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(options: &Options, dir: &Path) -> anyhow::Result<()> {
    let bin = airlock_binary(options)?;
    let up = start_upstream(dir).await?;
    let port = up.addr.port();
    let mint_hosts: Vec<String> = (0..options.rounds * options.hosts).map(|i| format!("h{i}.bench.test")).collect();
    let airlock = start_airlock(&bin, dir, "airlock", &up, &mint_hosts).await?;
    let baseline = match &options.baseline {
        Some(b) => Some(start_airlock(b, dir, "baseline", &up, &mint_hosts).await?),
        None => None,
    };
    let mitm = match &options.mitmdump {
        Some(m) => Some(start_mitm(m, dir, &up).await?),
        None => {
            eprintln!("mitmdump not found (see benches/README.md to install it); measuring direct and airlock only");
            None
        }
    };
    eprintln!(
        "upstream {} (pid {}), airlock {} (pid {}){}",
        up.addr,
        up.process.pid(),
        airlock.addr,
        airlock.process.pid(),
        mitm.as_ref().map(|m| format!(", mitmdump {} (pid {})", m.addr, m.process.pid())).unwrap_or_default()
    );

    let mut targets = vec![
        Target {
            name: "direct",
            agent: Agent::new(Via::Direct(up.addr), &up.ca_pem, format!("Bearer {KEY}"))?,
            pid: None,
        },
        Target {
            name: "airlock",
            agent: Agent::new(
                Via::Proxy { addr: airlock.addr, creds: Some(format!("bench:{TOKEN}")) },
                &airlock.ca_pem,
                format!("Bearer {PLACEHOLDER}"),
            )?,
            pid: Some(airlock.process.pid()),
        },
    ];
    if let Some(b) = &baseline {
        targets.push(Target {
            name: "baseline",
            agent: Agent::new(
                Via::Proxy { addr: b.addr, creds: Some(format!("bench:{TOKEN}")) },
                &b.ca_pem,
                format!("Bearer {PLACEHOLDER}"),
            )?,
            pid: Some(b.process.pid()),
        });
    }
    if let Some(m) = &mitm {
        targets.push(Target {
            name: "mitmproxy",
            agent: Agent::new(Via::Proxy { addr: m.addr, creds: None }, &m.ca_pem, format!("Bearer {PLACEHOLDER}"))?,
            pid: Some(m.process.pid()),
        });
    }
    let names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
    let mut report = Report::default();

    for round in 0..options.rounds {
        eprintln!("round {} of {}", round + 1, options.rounds);
        if options.runs(Phase::Small) {
            for conc in [1usize, 64] {
                for t in &targets {
                    let r = small(t, port, conc, options.duration).await?;
                    eprintln!(
                        "  {:9} c={conc:<3} {:8.0} req/s  p50 {:7.0} µs  p99 {:7.0} µs  cpu {} µs/req",
                        t.name,
                        r.rps,
                        r.p50_us,
                        r.p99_us,
                        r.cpu_us_per_req.map_or("—".to_owned(), |c| format!("{c:.1}"))
                    );
                    report.figure(&format!("c={conc} req/s"), 0).push(t.name, Some(r.rps));
                    report.figure(&format!("c={conc} p50 µs"), 0).push(t.name, Some(r.p50_us));
                    report.figure(&format!("c={conc} p99 µs"), 0).push(t.name, Some(r.p99_us));
                    report.figure(&format!("c={conc} proxy CPU µs/req"), 1).push(t.name, r.cpu_us_per_req);
                }
            }
        }
        if options.runs(Phase::Big) {
            for t in &targets {
                let (mibs, cpu) = big(t, port, options.big_mib << 20).await?;
                eprintln!(
                    "  {:9} {} MiB download {mibs:7.0} MiB/s  cpu {} s/GiB",
                    t.name,
                    options.big_mib,
                    cpu.map_or("—".to_owned(), |c| format!("{c:.2}"))
                );
                report.figure(&format!("{} MiB download MiB/s", options.big_mib), 0).push(t.name, Some(mibs));
                report.figure("download proxy CPU-s/GiB", 2).push(t.name, cpu);
            }
        }
        if options.runs(Phase::Up) {
            for t in &targets {
                let (mibs, cpu) = upload(t, port, options.big_mib << 20).await?;
                eprintln!(
                    "  {:9} {} MiB upload   {mibs:7.0} MiB/s  cpu {} s/GiB",
                    t.name,
                    options.big_mib,
                    cpu.map_or("—".to_owned(), |c| format!("{c:.2}"))
                );
                report.figure(&format!("{} MiB upload MiB/s", options.big_mib), 0).push(t.name, Some(mibs));
                report.figure("upload proxy CPU-s/GiB", 2).push(t.name, cpu);
            }
        }
        if options.runs(Phase::Mint) {
            let hosts = &mint_hosts[round * options.hosts..(round + 1) * options.hosts];
            for t in &targets {
                let r = mint(t, port, hosts).await?;
                eprintln!(
                    "  {:9} new host p50 {:6.2} ms  p99 {:6.2} ms  (open {:.2} + first request {:.2})",
                    t.name, r.p50_ms, r.p99_ms, r.open_p50_ms, r.request_p50_ms
                );
                report.figure("new host p50 ms", 2).push(t.name, Some(r.p50_ms));
                report.figure("new host p99 ms", 2).push(t.name, Some(r.p99_ms));
                report.figure("new host: open (TCP, CONNECT, TLS) p50 ms", 2).push(t.name, Some(r.open_p50_ms));
                report.figure("new host: first request p50 ms", 2).push(t.name, Some(r.request_p50_ms));
            }
        }
    }
    if options.runs(Phase::Mem) {
        for t in &targets {
            if let Some(pid) = t.pid {
                report
                    .figure("peak RSS before idle test MiB", 1)
                    .push(t.name, Some(vm_kib(pid, "VmHWM") as f64 / 1024.0));
            }
        }
        for t in &targets {
            let per = idle(t, port, options.idle).await?;
            if let Some(per) = per {
                eprintln!("  {:9} {} idle connections: {per:.1} KiB each", t.name, options.idle);
            }
            report.figure(&format!("RSS per idle conn KiB ({} open)", options.idle), 1).push(t.name, per);
        }
        for t in &targets {
            if let Some(pid) = t.pid {
                report.figure("peak RSS MiB (VmHWM)", 1).push(t.name, Some(vm_kib(pid, "VmHWM") as f64 / 1024.0));
            }
        }
    }
    targets.clear();
    report.print(&names);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn options(args: &[&str]) -> Options {
        Options::new(Cli::try_parse_from(std::iter::once("loadbench").chain(args.iter().copied())).unwrap())
    }

    #[test]
    fn flags_and_their_defaults() {
        Cli::command().debug_assert();
        let o = options(&["--no-mitm"]);
        assert_eq!((o.rounds, o.duration, o.big_mib, o.hosts, o.idle), (3, Duration::from_secs(4), 256, 100, 5000));
        assert!(o.only.is_empty() && o.runs(Phase::Mem));
        let o = options(&["--hosts", "7", "--quick", "--rounds", "0", "--only", "small,mem", "--no-mitm"]);
        assert_eq!((o.rounds, o.duration, o.big_mib, o.hosts, o.idle), (1, Duration::from_secs(1), 64, 7, 1000));
        assert!(o.runs(Phase::Small) && o.runs(Phase::Mem) && !o.runs(Phase::Big));
        assert_eq!(options(&["--mitmdump", "/m", "--no-mitm"]).mitmdump, None);
        assert_eq!(options(&["--mitmdump", "/m"]).mitmdump, Some(PathBuf::from("/m")));
        assert!(Cli::try_parse_from(["loadbench", "--only", "smal"]).is_err());
        let up = Cli::try_parse_from(["loadbench", "upstream", "/ca.pem"]).unwrap();
        assert!(matches!(up.role, Some(Role::Upstream { ca_out }) if ca_out == Path::new("/ca.pem")));
    }
}
