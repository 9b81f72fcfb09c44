//! Episodes driven from outside emrgym (the episode API of `emrgym serve`, `emrgym mcp`):
//! a [`Session`] is one episode's sandbox and the steps recorded from the agent's requests
//! (tool calls and direct FHIR REST calls alike); a [`Recorder`] is the run directory the
//! ended episodes go to, in the same format as `emrgym run` writes, so `replay`, `report`,
//! `compare` and `export` work on it.

use super::episode::{BASE, Guide, Prepared, Workspace, finalize, fork};
use super::run::{AgentKind, Mode, RunConfig, episode_seed};
use super::rundir::{Manifest, ResultLine, ResultsFile, family_hashes, header, read_results, result_line, trajectory_path};
use super::stats::run_summary;
use anyhow::{Context, bail};
use emrgym_core::sync::lock;
use emrgym_fhir::Sandbox;
use emrgym_fhir::rest::{FhirRequest, FhirResponse};
use emrgym_scenario::htn::guide::Guidance;
use emrgym_scenario::trajectory::{self, EndReason, Step, ToolCall, ToolResult, Trajectory};
use emrgym_tools::Observation;
use emrgym_tools::fhir_tools::{SandboxBackend, observe, rest_call};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// What an agent learns when its episode ends (`--agent-feedback`): never the grade's
/// expected values, diffs or node paths; those go to the run directory and the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// That the episode ended, and how (`finished`, `stopped`, ...).
    #[default]
    None,
    /// Also whether it succeeded.
    Success,
    /// Also whether it succeeded and the share of subtasks passed.
    Progress,
}

impl Feedback {
    /// The agent's view of an ended episode.
    pub fn view(self, id: &str, line: &ResultLine) -> Value {
        let mut v = serde_json::json!({"id": id, "ended": true, "end": line.end});
        if matches!(self, Feedback::Success | Feedback::Progress) {
            v["success"] = Value::Bool(line.success);
        }
        if self == Feedback::Progress {
            v["progress"] = serde_json::json!(line.progress);
        }
        v
    }
}

/// One externally driven episode.
pub struct Session {
    /// Episode id (also its sandbox id on the server).
    pub id: String,
    /// The instance.
    pub prepared: Arc<Prepared>,
    /// Trial number in the recording run.
    pub trial: u32,
    /// Flat or guided.
    pub mode: Mode,
    /// The sandbox the agent works in.
    pub sandbox: Arc<RwLock<Sandbox>>,
    /// Steps so far.
    pub steps: Vec<Step>,
    /// The result once ended.
    pub result: Option<ResultLine>,
    /// When the agent last made a call (tool or REST): idle episodes expire.
    pub last_call: std::time::Instant,
}

impl Session {
    /// A new episode of `p`: a fresh fork seeded as `emrgym run` seeds trial `trial` under
    /// run seed `seed`, so the same calls give the same ids and grades.
    pub fn new(id: &str, p: Arc<Prepared>, trial: u32, mode: Mode, seed: u64) -> Session {
        let sb = fork(&p.cohort, &p.clock, episode_seed(seed, &p.instance.id, trial));
        Session {
            id: id.to_string(),
            prepared: p,
            trial,
            mode,
            sandbox: Arc::new(RwLock::new(sb)),
            steps: Vec::new(),
            result: None,
            last_call: std::time::Instant::now(),
        }
    }

    /// The episode has ended.
    pub fn ended(&self) -> bool {
        self.result.is_some()
    }

    /// Run a tool of the instance's catalogue on the episode's sandbox and record the step.
    /// Past the step limit only `finish` runs (429 otherwise). A successful `finish` ends the
    /// episode (the caller then calls [`Session::end`]).
    pub fn tool(&mut self, name: &str, args: &Value) -> Observation {
        if self.ended() {
            return Observation::fail(name, 409, format!("episode {} has ended", self.id));
        }
        if name != "finish" && self.steps.len() as u32 >= self.limit() {
            return Observation::fail(
                name,
                429,
                format!("episode {} used its {} tool calls; call finish", self.id, self.limit()),
            );
        }
        let mut fhir = SandboxBackend::new(self.sandbox.clone(), BASE);
        let obs = self.prepared.registry.call(name, args, &mut fhir);
        self.last_call = std::time::Instant::now();
        self.steps.push(Step::new(
            ToolCall {
                name: name.to_string(),
                arguments: args.clone(),
            },
            ToolResult {
                ok: obs.ok,
                status: obs.status,
                content: obs.content.clone(),
            },
        ));
        obs
    }

    /// The step limit (the instance's step budget, as for model runs).
    pub fn limit(&self) -> u32 {
        self.prepared.step_budget()
    }

    /// Run a FHIR REST request the agent sent to the episode's sandbox directly (`run`
    /// executes it) and record it as a step; refused (429) once the episode is out of steps;
    /// after the end, run unrecorded (the record can still be inspected).
    pub fn rest(&mut self, base: &str, req: &FhirRequest, run: &mut dyn FnMut() -> FhirResponse) -> FhirResponse {
        if self.ended() {
            return run();
        }
        if self.steps.len() as u32 >= self.limit() {
            let msg = format!("episode {} used its {} tool calls; call finish", self.id, self.limit());
            return FhirResponse::json(429, emrgym_fhir::error::outcome("error", "throttled", &[msg]));
        }
        let resp = run();
        let (name, arguments) = rest_call(req, base);
        let obs = observe(&name, resp.clone());
        self.last_call = std::time::Instant::now();
        self.steps.push(Step::new(
            ToolCall { name, arguments },
            ToolResult {
                ok: obs.ok,
                status: obs.status,
                content: obs.content,
            },
        ));
        resp
    }

    /// The planner's guidance now (released from what the agent has seen, never a branch).
    pub fn guidance(&self) -> Option<Guidance> {
        let sb = self.sandbox.read().ok()?;
        Some(Guide::new(&self.prepared).at(&self.steps, &sb))
    }

    /// The last successful call was `finish`.
    pub fn finished(&self) -> bool {
        self.steps.last().is_some_and(|s| s.call.name == "finish" && s.result.ok)
    }

    /// End the episode (`finished` after a successful finish; `stopped` when the agent left),
    /// grade it and record it. Ending twice returns the first result.
    pub fn end(&mut self, rec: &Recorder) -> anyhow::Result<ResultLine> {
        self.end_with(rec, None)
    }

    /// [`Session::end`], with the reason an unfinished episode ends for (`stopped` when
    /// None; `abandoned` when the server stops with the episode open).
    pub fn end_with(&mut self, rec: &Recorder, unfinished: Option<EndReason>) -> anyhow::Result<ResultLine> {
        if let Some(r) = &self.result {
            return Ok(r.clone());
        }
        let reason = if self.finished() {
            EndReason::Finished
        } else {
            unfinished.unwrap_or(EndReason::Stopped)
        };
        let mut t = Trajectory::new(self.steps.clone(), reason);
        let sb = self
            .sandbox
            .read()
            .map_err(|_| anyhow::anyhow!("episode {}: the sandbox is unavailable", self.id))?;
        let seed = episode_seed(rec.cfg.seed, &self.prepared.instance.id, self.trial);
        let g = finalize(&self.prepared, seed, &mut t, &sb);
        drop(sb);
        let line = rec.record(&self.prepared, self.trial, self.mode, &t, g)?;
        self.result = Some(line.clone());
        Ok(line)
    }
}

/// The workspace's instance ids, sorted.
pub fn instance_ids(ws: &Workspace) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = ws
        .suite
        .instances()
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// The run directory external episodes are recorded in.
///
/// Ending an episode costs the same however many came before: its trajectory file is
/// written, its result line is appended to `results.jsonl` (one `write` with `O_APPEND`,
/// then `fdatasync`), and no result is kept in memory. `summary.json` is recomputed from
/// the file at most once per [`SUMMARY_EVERY`] and by [`Recorder::flush`] (server
/// shutdown); `emrgym report`, `replay` and `merge` read `results.jsonl` itself.
pub struct Recorder {
    dir: PathBuf,
    /// The configuration written to the manifest (agent `external`).
    pub cfg: RunConfig,
    hashes: BTreeMap<String, (String, String)>,
    state: Mutex<RecState>,
    trials: Mutex<BTreeMap<String, u32>>,
    manifest: Manifest,
    /// The manifest of an existing recording.
    existing: Option<Manifest>,
}

/// How often `summary.json` is refreshed while episodes end.
pub const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

struct RecState {
    results: Option<ResultsFile>,
    summary_at: Option<std::time::Instant>,
    stale: bool,
}

impl Recorder {
    /// Open the run directory (created with the first ended episode); an existing one must
    /// hold external episodes of the same scenarios and seed, and its episodes are kept (trial
    /// numbers continue).
    pub fn open(dir: &Path, suite: &Path, seed: u64, ws: &Workspace) -> anyhow::Result<Recorder> {
        let cfg = RunConfig {
            suite: suite.to_path_buf(),
            agent: AgentKind::External,
            model: None,
            concurrency: 1,
            seed,
            ..RunConfig::default()
        };
        let man = Manifest::new(&cfg, ws, &instance_ids(ws)?)?;
        let mpath = dir.join("manifest.json");
        let mut lines = Vec::new();
        let mut existing = None;
        if mpath.exists() {
            let old = Manifest::read(dir)?;
            if old.config.agent != AgentKind::External {
                bail!(
                    "{} holds a run of agent {}; record external episodes in another directory",
                    dir.display(),
                    serde_json::to_value(old.config.agent)?
                );
            }
            if old.scenarios != man.scenarios || old.config.seed != man.config.seed {
                bail!(
                    "{} was recorded with other scenarios or another seed; record in another directory",
                    dir.display()
                );
            }
            let rpath = dir.join("results.jsonl");
            existing = Some(old);
            lines = read_results(&rpath)?;
            // a kill mid-append leaves a torn last line: cut it so the next append starts
            // on a line of its own
            if let Ok(text) = std::fs::read(&rpath)
                && !text.is_empty()
                && !text.ends_with(b"\n")
            {
                let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&rpath)
                    .and_then(|f| f.set_len(keep as u64))
                    .with_context(|| format!("cutting the torn last line of {}", rpath.display()))?;
            }
        }
        let mut trials = BTreeMap::new();
        for l in &lines {
            let t = trials.entry(l.instance.clone()).or_insert(0);
            *t = (*t).max(l.trial + 1);
        }
        Ok(Recorder {
            dir: dir.to_path_buf(),
            cfg,
            hashes: family_hashes(ws)?,
            state: Mutex::new(RecState {
                results: None,
                summary_at: None,
                stale: false,
            }),
            trials: Mutex::new(trials),
            manifest: man,
            existing,
        })
    }

    /// Where the run is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many trials of an instance the recording holds or has handed out.
    pub fn trials_of(&self, instance: &str) -> u32 {
        lock(&self.trials).get(instance).copied().unwrap_or(0)
    }

    /// Record in the manifest what agents could reach (`access`: interface, operator auth,
    /// feedback policy, budgets). A recording made under another policy is refused: its
    /// results would not be comparable.
    pub fn with_access(mut self, access: Value) -> anyhow::Result<Recorder> {
        if let Some(old) = &self.existing
            && old.access.as_ref() != Some(&access)
        {
            bail!(
                "{} was recorded under other access rules ({}; now {access}); record in another directory",
                self.dir.display(),
                old.access.as_ref().map_or("none recorded".to_string(), Value::to_string)
            );
        }
        self.manifest.access = Some(access);
        Ok(self)
    }

    /// Reserve the next trial number of an instance.
    pub fn next_trial(&self, instance: &str) -> u32 {
        let mut m = lock(&self.trials);
        let t = m.entry(instance.to_string()).or_insert(0);
        *t += 1;
        *t - 1
    }

    /// Write an ended episode: its trajectory, its result line, the summary (the run
    /// directory is created with the first episode).
    pub fn record(
        &self,
        p: &Prepared,
        trial: u32,
        mode: Mode,
        t: &Trajectory,
        g: Option<emrgym_grade::Grade>,
    ) -> anyhow::Result<ResultLine> {
        let line = result_line(p, &super::run::derived_limits(), trial, t, &g);
        let mut st = self.state.lock().map_err(|_| anyhow::anyhow!("recorder unavailable"))?;
        if !self.dir.join("manifest.json").exists() {
            std::fs::create_dir_all(self.dir.join("trajectories")).with_context(|| format!("creating {}", self.dir.display()))?;
            self.manifest.write(&self.dir)?;
        }
        let mut cfg = self.cfg.clone();
        cfg.mode = mode;
        let sha = self.hashes.get(&p.instance.family).map(|(_, h)| h.as_str()).unwrap_or("");
        let tpath = trajectory_path(&self.dir, &p.instance.id, trial);
        let text = header(&cfg, p, trial, sha)
            .and_then(|h| trajectory::file::to_jsonl(&h, t))
            .with_context(|| format!("serialising the trajectory of {}.{trial}", p.instance.id))?;
        std::fs::write(&tpath, text).with_context(|| format!("writing {}", tpath.display()))?;
        // append the line whole (`ResultsFile`): a crash leaves at most a torn last line,
        // which `read_results` ignores; a failed write (a full disk) is cut back off the file
        let rpath = self.dir.join("results.jsonl");
        if st.results.is_none() {
            st.results = Some(ResultsFile::open(&rpath)?);
        }
        if let Some(f) = st.results.as_mut() {
            f.append(&serde_json::to_string(&line)?)?;
        }
        st.stale = true;
        if st.summary_at.is_none_or(|at| at.elapsed() >= SUMMARY_EVERY) {
            self.write_summary(&mut st)?;
        }
        Ok(line)
    }

    /// Rewrite `summary.json` if episodes ended since it was last written.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut st = self.state.lock().map_err(|_| anyhow::anyhow!("recorder unavailable"))?;
        if st.stale { self.write_summary(&mut st) } else { Ok(()) }
    }

    fn write_summary(&self, st: &mut RecState) -> anyhow::Result<()> {
        let mut lines = read_results(&self.dir.join("results.jsonl"))?;
        lines.sort_by(|a, b| (a.instance.as_str(), a.trial).cmp(&(b.instance.as_str(), b.trial)));
        let trials = lines.iter().map(|l| l.trial + 1).max().unwrap_or(1);
        run_summary(&self.dir, &lines, trials, self.cfg.seed).write(&self.dir)?;
        st.stale = false;
        st.summary_at = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("writing the recording's summary failed: {e:#}");
        }
    }
}
