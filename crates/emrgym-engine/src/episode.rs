//! Wiring for one episode: load a scenario directory (families, HTN libraries, cohorts),
//! prepare an instance (plan the oracle tree against an untouched fork of its cohort,
//! restrict the tool catalogue), run an agent on a fresh fork and grade the result.
//! `scenarios check`, the episode API and the agent loop build on this.

use emrgym_agent::{Policy, run_episode};
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::{Cohort, Sandbox, SandboxOptions, load};
use emrgym_grade::{Grade, grade};
use emrgym_scenario::htn::guide::{Guidance, guidance};
use emrgym_scenario::htn::library::Library;
use emrgym_scenario::htn::plan::{Globals, Knowledge, Tree, plan, revealed_paths};
use emrgym_scenario::trajectory::{FhirWrite, HtnTransition, Step, ToolCall, ToolResult, Trajectory, json_changes};
use emrgym_scenario::{Instance, Suite};
use emrgym_tools::Registry;
use emrgym_tools::facts::SandboxFacts;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Base URL FHIR tools see in process.
pub const BASE: &str = "http://emrgym.local/fhir";

/// A loaded scenario directory with caches of libraries and cohorts.
pub struct Workspace {
    /// The families.
    pub suite: Suite,
    libraries: BTreeMap<Vec<String>, Result<Arc<Library>, Vec<String>>>,
    cohorts: BTreeMap<String, Result<Arc<Cohort>, Problems>>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("dir", &self.suite.dir).finish()
    }
}

/// An instance ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The instance.
    pub instance: Instance,
    /// Its HTN library.
    pub library: Arc<Library>,
    /// Its cohort.
    pub cohort: Arc<Cohort>,
    /// Clock and variables.
    pub globals: Globals,
    /// The clock as the sandbox uses it.
    pub clock: Clock,
    /// The oracle tree.
    pub oracle: Tree,
    /// The tools the instance allows.
    pub registry: Arc<Registry>,
}

impl Prepared {
    /// Tool calls in the reference plan (`finish` included).
    pub fn reference_len(&self) -> u32 {
        u32::try_from(self.oracle.reference_calls().len()).unwrap_or(u32::MAX)
    }

    /// The step budget an agent gets by default: twice the longer of the reference plan and
    /// the family's `max_steps`, so no instance is unsolvable because of the harness.
    pub fn step_budget(&self) -> u32 {
        self.instance.max_steps.max(self.reference_len()).max(1).saturating_mul(2)
    }
}

/// What is wrong with a scenario directory or an instance: one message per problem, each
/// naming the file, instance or value at fault (its `Display` is one problem per line; it
/// derefs to the messages).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);

impl IntoIterator for Problems {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::ops::Deref for Problems {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl Workspace {
    /// Open a scenario directory (or one family file).
    pub fn open(path: &Path) -> Result<Workspace, Problems> {
        let suite = Suite::load(path).map_err(|es| Problems(es.into_iter().map(|e| e.to_string()).collect()))?;
        Workspace::from_suite(suite)
    }

    /// A workspace over loaded families.
    pub fn from_suite(suite: Suite) -> Result<Workspace, Problems> {
        let registry = Arc::new(Registry::standard().map_err(|e| Problems(vec![e.to_string()]))?);
        Ok(Workspace {
            suite,
            libraries: BTreeMap::new(),
            cohorts: BTreeMap::new(),
            registry,
        })
    }

    /// The full tool catalogue.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The library made of these files (cached).
    pub fn library(&mut self, files: &[String]) -> Result<Arc<Library>, Problems> {
        if let Some(l) = self.libraries.get(files) {
            return l.clone().map_err(Problems);
        }
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            match self.suite.library_text(f) {
                Ok(t) => texts.push((self.suite.dir.join(f).display().to_string(), t)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let result = if errors.is_empty() {
            Library::load(&texts)
                .map(Arc::new)
                .map_err(|es| es.into_iter().map(|e| e.to_string()).collect())
        } else {
            Err(errors)
        };
        self.libraries.insert(files.to_vec(), result.clone());
        result.map_err(Problems)
    }

    /// A cohort by name or path (cached).
    pub fn cohort(&mut self, name: &str, clock: &Clock) -> Result<Arc<Cohort>, Problems> {
        if let Some(c) = self.cohorts.get(name) {
            return c.clone();
        }
        let path = self.suite.dir.join(name);
        let source = if path.exists() {
            path.display().to_string()
        } else {
            name.to_string()
        };
        let r = load::load(&source)
            .map(|b| b.build(clock))
            .map_err(|e| Problems(vec![format!("cohort '{name}': {e}")]));
        self.cohorts.insert(name.to_string(), r.clone());
        r
    }

    /// Plan an instance's oracle tree and restrict the catalogue.
    pub fn prepare(&mut self, inst: &Instance) -> Result<Prepared, Problems> {
        let now = parse_instant(&inst.now).map_err(|e| Problems(vec![format!("{}: now '{}': {e}", inst.id, inst.now)]))?;
        let clock = Clock::fixed(now);
        let library = self.library(&inst.library)?;
        let cohort = self.cohort(&inst.cohort, &clock)?;
        let names: Vec<&str> = inst.tools.iter().map(String::as_str).collect();
        let registry = Arc::new(
            self.registry
                .subset(&names)
                .map_err(|e| Problems(vec![format!("{}: {e}", inst.id)]))?,
        );
        let now_fixed = emrgym_scenario::htn::expr::parse_datetime(&inst.now)
            .ok_or_else(|| Problems(vec![format!("{}: now '{}' is not a date-time", inst.id, inst.now)]))?;
        let globals = Globals {
            vars: inst.vars.clone().into_iter().collect(),
            now: now_fixed,
        };
        let mut facts = SandboxFacts::new(fork(&cohort, &clock, 0));
        let oracle = plan(&library, &inst.root.task, &inst.root.args, &globals, &mut facts, &Knowledge::Oracle);
        Ok(Prepared {
            instance: inst.clone(),
            library,
            cohort,
            globals,
            clock,
            oracle,
            registry,
        })
    }
}

/// A fresh sandbox of `cohort` with a fixed clock.
pub fn fork(cohort: &Arc<Cohort>, clock: &Clock, seed: u64) -> Sandbox {
    Sandbox::fork(
        cohort,
        SandboxOptions {
            seed,
            clock: clock.clone(),
            ..SandboxOptions::default()
        },
    )
}

/// Run `policy` on a fresh fork of the instance's cohort and grade the episode.
pub fn run_and_grade(p: &Prepared, policy: &mut dyn Policy, seed: u64) -> (Trajectory, Grade, Sandbox) {
    let mut sb = fork(&p.cohort, &p.clock, seed);
    let traj = {
        let mut backend = (&mut sb, BASE);
        run_episode(policy, &p.registry, &mut backend, p.instance.max_steps)
    };
    let g = grade_sandbox(p, &traj, &sb);
    (traj, g, sb)
}

/// The one end of every episode (`run`, the episode API, MCP, replay): attach each step's
/// FHIR writes from the sandbox's write log, record the HTN transitions (re-planned on a fork
/// seeded like the episode), and grade the sandbox the agent wrote into, unless the episode
/// ended in an infrastructure failure, which is reported apart and never graded.
pub fn finalize(p: &Prepared, seed: u64, traj: &mut Trajectory, sandbox: &Sandbox) -> Option<Grade> {
    attach_writes(traj, sandbox);
    traj.htn = htn_transitions(p, seed, &traj.steps);
    (!traj.end.is_infrastructure()).then(|| grade_sandbox(p, traj, sandbox))
}

/// Grade a trajectory that was already executed into `sandbox`.
pub fn grade_sandbox(p: &Prepared, traj: &Trajectory, sandbox: &Sandbox) -> Grade {
    grade(&p.instance.id, &p.library, &p.oracle, &p.instance.answer, traj, &sandbox.diff())
}

/// Start from any subtask: a fresh fork with the oracle's prefix applied, i.e. every
/// reference call that comes before node `path` in the reference plan (the `finish` call
/// excluded), and the steps that prefix produced. Errors name an unknown path.
pub fn materialize(p: &Prepared, path: &str, seed: u64) -> Result<(Sandbox, Trajectory), String> {
    let target = p
        .oracle
        .find(path)
        .ok_or_else(|| format!("no node '{path}' in the plan of {}", p.instance.id))?;
    // the first primitive at or under the target in execution order
    let under = |mut n: usize| loop {
        if n == target {
            return true;
        }
        match p.oracle.nodes[n].parent {
            Some(q) => n = q,
            None => return false,
        }
    };
    let linear = p.oracle.linear();
    let stop = linear.iter().position(|n| under(*n)).unwrap_or(linear.len());
    let prefix: Vec<_> = linear[..stop]
        .iter()
        .filter_map(|n| p.oracle.nodes[*n].call.clone())
        .filter(|c| c.name != "finish")
        .collect();
    let mut sb = fork(&p.cohort, &p.clock, seed);
    let traj = {
        let mut backend = (&mut sb, BASE);
        let mut script = emrgym_agent::Script::new(prefix);
        run_episode(&mut script, &p.registry, &mut backend, u32::MAX)
    };
    if let Some(bad) = traj.steps.iter().find(|s| !s.result.ok) {
        return Err(format!("the oracle prefix failed at {}: {}", bad.call.name, bad.result.content));
    }
    Ok((sb, traj))
}

/// The sandbox's writes as the guidance sees them: created and updated resources (their
/// versions shared with the sandbox, not copied).
pub fn written(sandbox: &Sandbox) -> Vec<emrgym_core::Write> {
    sandbox.diff().into_iter().filter(|w| w.after.is_some()).collect()
}

/// What the agent is told about an instance (its FHIR tools act on [`BASE`]).
pub fn briefing(p: &Prepared) -> emrgym_agent::model::Briefing {
    emrgym_agent::model::Briefing {
        instruction: p.instance.instruction.clone(),
        context: p.instance.context.clone(),
        now: p.instance.now.clone(),
        fhir_base: BASE.into(),
    }
}

/// The task as one text, as `emrgym run` gives it to a model with native tool calling
/// (system prompt, then the task), naming `fhir_base` as the record's address: the prompt
/// external agents are given.
pub fn task_prompt(p: &Prepared, fhir_base: &str) -> String {
    use emrgym_agent::model::{ToolProtocol, system_prompt, user_prompt};
    let mut b = briefing(p);
    b.fhir_base = fhir_base.to_string();
    format!(
        "{}\n\n{}",
        system_prompt(&b, ToolProtocol::Native, &serde_json::Value::Null),
        user_prompt(&b)
    )
}

/// Guidance as the agent reads it: the steps that can be done now, None when there are none.
pub fn guidance_text(g: &Guidance) -> Option<String> {
    if g.next.is_empty() {
        return None;
    }
    Some(format!(
        "Next step{}: {}",
        if g.next.len() > 1 { "s (any order)" } else { "" },
        g.next.iter().map(|s| s.instruction.clone()).collect::<Vec<_>>().join(" | ")
    ))
}

/// The planner's guidance over an episode: the steps released given only what the agent's
/// own tool results have revealed (never a branch it has not seen the data for).
pub struct Guide<'a> {
    p: &'a Prepared,
    facts: SandboxFacts,
}

impl<'a> Guide<'a> {
    /// Guidance for an instance.
    pub fn new(p: &'a Prepared) -> Guide<'a> {
        Guide {
            p,
            facts: SandboxFacts::new(fork(&p.cohort, &p.clock, 0)),
        }
    }

    /// The guidance after `steps`, with `sandbox` holding their writes.
    pub fn at(&mut self, steps: &[Step], sandbox: &Sandbox) -> Guidance {
        let revealed = revealed_paths(&self.p.oracle, steps);
        let tree = plan(
            &self.p.library,
            &self.p.instance.root.task,
            &self.p.instance.root.args,
            &self.p.globals,
            &mut self.facts,
            &Knowledge::Revealed(revealed),
        );
        guidance(&self.p.library, &tree, steps, &written(sandbox), false)
    }
}

/// Execute `calls` in order into a fresh fork (seeded like the episode), as a replay does:
/// the sandbox afterwards and the steps with the results the tools give now.
pub fn execute_calls(p: &Prepared, seed: u64, calls: &[ToolCall]) -> (Sandbox, Vec<Step>) {
    let mut sb = fork(&p.cohort, &p.clock, seed);
    let mut steps = Vec::with_capacity(calls.len());
    for c in calls {
        let obs = match emrgym_tools::fhir_tools::rest_request(&c.arguments) {
            // a REST request the agent sent directly: sent again as it was
            Some((req, base)) => emrgym_tools::fhir_tools::observe(&c.name, emrgym_fhir::rest::handle(&mut sb, &base, &req)),
            None => {
                let mut backend = (&mut sb, BASE);
                p.registry.call(&c.name, &c.arguments, &mut backend)
            }
        };
        steps.push(Step::new(
            c.clone(),
            ToolResult {
                ok: obs.ok,
                status: obs.status,
                content: obs.content,
            },
        ));
    }
    (sb, steps)
}

/// The HTN transitions of an episode: the steps the planner releases before the first call
/// and after each call, recorded whenever they change. The calls are re-executed into a
/// fresh fork seeded like the episode, so each point sees the writes made so far.
pub fn htn_transitions(p: &Prepared, seed: u64, steps: &[Step]) -> Vec<HtnTransition> {
    let mut sb = fork(&p.cohort, &p.clock, seed);
    let mut guide = Guide::new(p);
    let mut out: Vec<HtnTransition> = Vec::new();
    for k in 0..=steps.len() {
        let next: Vec<String> = guide.at(&steps[..k], &sb).next.into_iter().map(|s| s.path).collect();
        if out.last().is_none_or(|h| h.next != next) {
            out.push(HtnTransition { after_step: k, next });
        }
        if let Some(s) = steps.get(k) {
            match emrgym_tools::fhir_tools::rest_request(&s.call.arguments) {
                Some((req, base)) => {
                    emrgym_fhir::rest::handle(&mut sb, &base, &req);
                }
                None => {
                    let mut backend = (&mut sb, BASE);
                    p.registry.call(&s.call.name, &s.call.arguments, &mut backend);
                }
            }
        }
    }
    out
}

/// Attach to each step the FHIR writes it made, from the sandbox's write log: a write
/// belongs to the step whose result returned that resource version; an update carries the
/// fields that changed from the version before.
pub fn attach_writes(traj: &mut Trajectory, sandbox: &Sandbox) {
    for s in &mut traj.steps {
        s.writes.clear();
    }
    for w in sandbox.writes() {
        let v = &w.version;
        let Some(resource) = v.resource() else { continue };
        let vid = v.version_id.to_string();
        let owner = traj.steps.iter().rposition(|s| {
            s.result.ok
                && s.result.content.get("resourceType").and_then(Value::as_str) == Some(&*v.ty)
                && s.result.content.get("id").and_then(Value::as_str) == Some(&*v.id)
                && s.result.content.pointer("/meta/versionId").and_then(Value::as_str) == Some(vid.as_str())
        });
        let Some(i) = owner else { continue };
        let before = (v.version_id > 1)
            .then(|| sandbox.vread(&v.ty, &v.id, &(v.version_id - 1).to_string()).ok())
            .flatten()
            .and_then(|b| b.resource());
        traj.steps[i].writes.push(FhirWrite {
            interaction: if before.is_some() { "update" } else { "create" }.into(),
            resource_type: v.ty.to_string(),
            id: v.id.to_string(),
            version: v.version_id,
            changes: before.map(|b| json_changes(&b, &resource)).unwrap_or_default(),
            resource: Some((*resource).clone()),
        });
    }
}
