//! The server benchmarks: cold start and memory of `emrgym serve` (and of sekmet-fhir with
//! `--sekmet`) as child processes, and HTTP search load from concurrent keep-alive clients.

use super::*;

/// Cold start of `emrgym serve` on `dir` (median of three) and the time from spawn to the
/// first answer of `q` (the third start).
pub(super) fn cold_start(dir: &Path, q: &str) -> anyhow::Result<(f64, f64, u64)> {
    let mut colds = Vec::new();
    for _ in 0..2 {
        let (s, secs) = start_emrgym(dir)?;
        colds.push(secs);
        drop(s);
    }
    let t = Instant::now();
    let (server, secs) = start_emrgym(dir)?;
    colds.push(secs);
    colds.sort_by(|x, y| x.total_cmp(y));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let first = rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client.get(format!("{}/{q}", server.base)).send().await?;
        let ok = r.status().is_success();
        let body = r.bytes().await?;
        if !ok || !contains(&body, b"\"searchset\"") {
            bail!("{q}: no searchset");
        }
        Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64())
    })?;
    let (rss, _) = rss_kib(server.child.id());
    Ok((colds[1], first, rss))
}

pub(super) fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub(super) struct Server {
    pub(super) child: Child,
    pub(super) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start_emrgym(dir: &Path) -> anyhow::Result<(Server, f64)> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--port", "0", "--now", "2023-11-13T10:15:00Z", "--cohort"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let secs = t.elapsed().as_secs_f64();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/fhir"))
        .map(str::to_string);
    let Some(base) = base else {
        let _ = child.kill();
        bail!("emrgym serve did not report its address: {line}");
    };
    Ok((Server { child, base }, secs))
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn start_sekmet(dir: &Path) -> anyhow::Result<(Server, f64)> {
    let db = dir.join("sekmet.db");
    let mut load_secs = 0.0;
    let marker = dir.join("sekmet.db.ok");
    if !marker.exists() || !db.exists() {
        eprintln!(
            "loading the cohort into sekmet's SQLite store (once; cached in {})...",
            dir.display()
        );
        let t = Instant::now();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sekmet_load.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&db)
            .arg(dir)
            .output()
            .context("running python3 bench/sekmet_load.py (pip install sekmet-fhir)")?;
        if !out.status.success() {
            bail!("sekmet load failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        load_secs = t.elapsed().as_secs_f64();
        std::fs::write(&marker, format!("{load_secs:.1}\n"))?;
    } else {
        load_secs = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(load_secs);
    }
    let port = free_port()?;
    let settings = dir.join("sekmet-settings.yaml");
    let abs_db = std::fs::canonicalize(&db)?;
    std::fs::write(
        &settings,
        format!(
            "db_path: {}\nlog_inbound: false\nbase_url: http://127.0.0.1:{port}/fhir\n",
            abs_db.display()
        ),
    )?;
    let child = Command::new("sekmet")
        .args(["serve", "-c"])
        .arg(&settings)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sekmet serve` (pip install sekmet-fhir)")?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    };
    Ok((server, load_secs))
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(super) struct Load {
    pub(super) requests: usize,
    pub(super) errors: usize,
    pub(super) timeouts: usize,
    pub(super) seconds: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

pub(super) async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/metadata")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} did not become ready in 60 s")
}

pub(super) async fn http_load(base: &str, patients: usize, secs: u64, concurrency: usize, timeout: Duration) -> anyhow::Result<Load> {
    let client = reqwest::Client::new();
    // warm up with a short burst (bounded by the request timeout)
    let warm_deadline = Instant::now() + timeout;
    for i in 0..50 {
        if Instant::now() > warm_deadline {
            break;
        }
        let url = format!("{base}/{}", query(i, patients));
        if let Ok(Ok(r)) = tokio::time::timeout(timeout, client.get(url).send()).await {
            let _ = r.bytes().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut timeouts = 0usize;
            let mut i = w * 1_000_000;
            while Instant::now() < deadline {
                let url = format!("{base}/{}", query(i, patients));
                i += 1;
                let t = Instant::now();
                let answer = tokio::time::timeout(timeout, async {
                    let r = client.get(url).send().await?;
                    let ok = r.status().is_success();
                    let body = r.bytes().await.unwrap_or_default();
                    Ok::<_, reqwest::Error>((ok, body))
                })
                .await;
                match answer {
                    Err(_) => {
                        timeouts += 1;
                        continue;
                    }
                    Ok(Ok((ok, body))) => {
                        // cheap validity check (the client shares the 2 cores with the server):
                        // a searchset Bundle with at least one match
                        let valid = ok && contains(&body, b"\"searchset\"") && contains(&body, b"\"mode\":\"match\"");
                        if !valid {
                            errors += 1;
                        }
                    }
                    Ok(Err(_)) => errors += 1,
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors, timeouts)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut timeouts = 0;
    for t in tasks {
        let (l, e, to) = t.await?;
        lat.extend(l);
        errors += e;
        timeouts += to;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        requests: lat.len(),
        errors,
        timeouts,
        seconds,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    })
}

/// Wait until the server at `base` answers, then put it under the configured HTTP load.
pub(super) fn load_server(rt: &tokio::runtime::Runtime, base: &str, a: &BenchArgs) -> anyhow::Result<Load> {
    rt.block_on(async {
        wait_ready(base).await?;
        http_load(base, a.patients, a.seconds, a.concurrency, Duration::from_secs(a.request_timeout)).await
    })
}
