//! The engine benchmarks: per-instance planning, oracle episode and grading, and the tool
//! catalogue's overhead over direct calls, each next to a FHIR search in the same run.

use super::*;

/// Per-instance cost of planning the oracle tree, running the oracle episode, and grading,
/// next to the cost of one FHIR search in the same run.
pub(super) fn scenario_bench(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_engine::episode::{Workspace, run_and_grade};
    let mut ws = Workspace::open(dir).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let instances = ws.suite.instances().map_err(anyhow::Error::msg)?;
    // warm caches (cohorts, libraries, schema validators)
    for i in &instances {
        ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    }
    let reps = 5;
    let t = Instant::now();
    let mut prepared = Vec::new();
    for _ in 0..reps {
        prepared.clear();
        for i in &instances {
            prepared.push(ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?);
        }
    }
    let plan_ms = t.elapsed().as_secs_f64() * 1e3 / (reps * instances.len()) as f64;
    let t = Instant::now();
    let mut grade_total = 0.0;
    let mut steps = 0usize;
    for _ in 0..reps {
        for p in &prepared {
            let calls = p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect();
            let (traj, _, sb) = run_and_grade(p, &mut emrgym_agent::Oracle::new(calls), 1);
            steps += traj.steps.len();
            let tg = Instant::now();
            std::hint::black_box(emrgym_engine::episode::grade_sandbox(p, &traj, &sb));
            grade_total += tg.elapsed().as_secs_f64();
        }
    }
    let episode_ms = t.elapsed().as_secs_f64() * 1e3 / (reps * instances.len()) as f64;
    let grade_ms = grade_total * 1e3 / (reps * instances.len()) as f64;
    let tmp = tempfile_dir()?;
    let t = Instant::now();
    emrgym_engine::run::execute(
        emrgym_engine::run::RunConfig {
            suite: dir.to_path_buf(),
            ..emrgym_engine::run::RunConfig::default()
        },
        &tmp.join("oracle"),
        false,
    )?;
    let run_s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(vec![
        ("instances".into(), instances.len().to_string()),
        (
            "`emrgym run --agent oracle` over the suite (load, plan, run, grade, write the run directory)".into(),
            format!("{run_s:.2} s"),
        ),
        ("plan the oracle tree (prepare), per instance".into(), format!("{plan_ms:.2} ms")),
        (
            "oracle episode + grade, per instance".into(),
            format!(
                "{episode_ms:.2} ms ({:.1} tool calls)",
                steps as f64 / (reps * instances.len()) as f64
            ),
        ),
        ("grade alone, per instance".into(), format!("{grade_ms:.2} ms")),
    ])
}

/// The tool catalogue's overhead: each calculator or FHIR call made directly and through
/// `Registry::call` (JSON Schema validation, dispatch, observation), in the same run.
pub(super) fn tool_bench() -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_tools::{Registry, fhir_tools::FhirTool};
    let registry = Registry::standard()?;
    let mut rows = Vec::new();
    let cases = [
        (
            "ckd_epi_2021",
            json!({"sex": "female", "age": 70, "creatinine": {"value": 97, "unit": "µmol/L"}}),
        ),
        (
            "apache_ii",
            serde_json::from_str(emrgym_calc::find("apache_ii").map(|c| c.example).unwrap_or("{}"))?,
        ),
        (
            "caprini",
            serde_json::from_str(emrgym_calc::find("caprini").map(|c| c.example).unwrap_or("{}"))?,
        ),
    ];
    for (name, args) in cases {
        let calc = emrgym_calc::find(name).context("calculator")?;
        let direct = per_call_ns(20_000, || {
            std::hint::black_box(emrgym_calc::run(calc, std::hint::black_box(&args)).ok());
        });
        let via = per_call_ns(20_000, || {
            std::hint::black_box(registry.call(name, std::hint::black_box(&args), &mut emrgym_tools::NoFhir));
        });
        rows.push((
            format!("{name}: direct / via registry"),
            format!("{:.1} / {:.1} µs ({:.2}×)", direct / 1e3, via / 1e3, via / direct),
        ));
    }
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").map_err(anyhow::Error::msg)?);
    let cohort = load::load("demo")?.build(&clock);
    let mut sb = Sandbox::fork(
        &cohort,
        SandboxOptions {
            clock,
            ..Default::default()
        },
    );
    let args = json!({"resource_type": "Observation", "params": {"patient": "S3241217", "code": "K", "_sort": "-date", "_count": 1}});
    let req = FhirTool::Search.request(&args).map_err(anyhow::Error::msg)?;
    let direct = per_call_ns(5_000, || {
        std::hint::black_box(emrgym_fhir::rest::handle_read(&sb, "http://b/fhir", &req));
    });
    let mut backend = (&mut sb, "http://b/fhir");
    let via = per_call_ns(5_000, || {
        std::hint::black_box(registry.call("fhir_search", &args, &mut backend));
    });
    rows.push((
        "fhir_search (latest K of a patient): direct / via registry".into(),
        format!("{:.1} / {:.1} µs ({:.2}×)", direct / 1e3, via / 1e3, via / direct),
    ));
    Ok(rows)
}
