//! The store benchmarks' data and timings: the deterministic synthetic cohort, fork timing,
//! the search query sequence, and the cohort generator against the same size.

use super::*;

pub(super) const CODES: &[(&str, &str)] = &[
    ("2823-3", "K"),
    ("19123-9", "MG"),
    ("2339-0", "GLU"),
    ("4548-4", "A1C"),
    ("2160-0", "CREAT"),
    ("2951-2", "NA"),
    ("718-7", "HGB"),
    ("6690-2", "WBC"),
    ("777-3", "PLT"),
    ("1742-6", "ALT"),
];

/// Write a deterministic synthetic cohort (Patient.ndjson, Observation.ndjson) unless the
/// same one is already there. Returns the number of resources.
pub(super) fn synth(dir: &Path, patients: usize, per: usize) -> anyhow::Result<usize> {
    let marker = dir.join("COHORT");
    let want = format!("patients={patients} obs_per_patient={per} v1\n");
    let total = patients + patients * per;
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(total);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("sekmet.db"));
    let mut pf = std::io::BufWriter::new(std::fs::File::create(dir.join("Patient.ndjson"))?);
    for p in 0..patients {
        let r = json!({"resourceType":"Patient","id":format!("P{p:05}"),"identifier":[{"system":"http://emrgym.dev/fhir/sid/mrn","value":format!("S{:07}", 1_000_000 + p)}],
            "name":[{"family":format!("Family{}", p % 97),"given":[format!("Given{p}")]}],"gender": if p % 2 == 0 {"female"} else {"male"},"birthDate":format!("{}-0{}-1{}", 1930 + p % 70, 1 + p % 9, p % 10)});
        writeln!(pf, "{r}")?;
    }
    pf.flush()?;
    let mut of = std::io::BufWriter::new(std::fs::File::create(dir.join("Observation.ndjson"))?);
    let base = parse_instant("2023-11-13T10:15:00Z").map_err(anyhow::Error::msg)?;
    for p in 0..patients {
        for i in 0..per {
            let h = splitmix64((p * per + i) as u64);
            let (loinc, local) = CODES[(h % CODES.len() as u64) as usize];
            let minutes = (h >> 8) % (3 * 365 * 24 * 60);
            let t = base - chrono::Duration::minutes(minutes as i64);
            let value = ((h >> 40) % 1000) as f64 / 100.0;
            let r = json!({"resourceType":"Observation","id":format!("O{p:05}-{i:05}"),"status":"final",
                "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
                "code":{"coding":[{"system":"http://loinc.org","code":loinc},{"system":"http://emrgym.dev/fhir/CodeSystem/flowsheet","code":local}],"text":local},
                "subject":{"reference":format!("Patient/P{p:05}")},
                "effectiveDateTime": t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
                "valueQuantity":{"value":value,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}});
            writeln!(of, "{r}")?;
        }
    }
    of.flush()?;
    std::fs::write(&marker, want)?;
    Ok(total)
}

pub(super) fn time_forks(cohort: &std::sync::Arc<emrgym_fhir::Cohort>, n: usize) -> f64 {
    let t = Instant::now();
    let mut keep = 0usize;
    for i in 0..n {
        let s = Sandbox::fork(
            cohort,
            SandboxOptions {
                seed: i as u64,
                ..Default::default()
            },
        );
        keep = keep.wrapping_add(s.writes().len());
        std::hint::black_box(&s);
    }
    std::hint::black_box(keep);
    t.elapsed().as_nanos() as f64 / n as f64
}

pub(super) fn query(i: usize, patients: usize) -> String {
    let h = splitmix64(1_000_000 + i as u64);
    let p = (h % patients as u64) as usize;
    let (_, local) = CODES[((h >> 20) % CODES.len() as u64) as usize];
    format!("Observation?patient=P{p:05}&code={local}&_sort=-date&_count=20")
}

/// The generator against the flat synthetic cohort of the same size, in the same run.
pub(super) fn fixtures_bench(a: &BenchArgs) -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_fixtures::{Config, Generator};
    let gen_dir = a.data.join("generated");
    let cfg = Config {
        patients: a.patients,
        ..Config::default()
    }
    .medagentbench_scale();
    let t = Instant::now();
    let stats = Generator::new(cfg).map_err(anyhow::Error::msg)?.write_ndjson(&gen_dir)?;
    let gen_s = t.elapsed().as_secs_f64();
    let total = stats.total();
    let flat_dir = a.data.join("flat");
    let _ = std::fs::remove_file(flat_dir.join("COHORT"));
    let per = (total - a.patients) / a.patients.max(1);
    let t = Instant::now();
    let flat_total = synth(&flat_dir, a.patients, per)?;
    let flat_s = t.elapsed().as_secs_f64();
    let first_patient = std::fs::read_to_string(gen_dir.join("Patient.ndjson"))?
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["id"].as_str().map(String::from))
        .context("no patient generated")?;
    let (gen_cold, gen_first, gen_rss) = cold_start(
        &gen_dir,
        &format!("Observation?patient={first_patient}&code=K&_sort=-date&_count=20"),
    )?;
    let (flat_cold, flat_first, flat_rss) = cold_start(&flat_dir, &query(0, a.patients))?;
    let size = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    Ok(vec![
        ("resources (generated / flat)".into(), format!("{total} / {flat_total}")),
        (
            "NDJSON size (generated / flat)".into(),
            format!("{} MB / {} MB", size(&gen_dir) >> 20, size(&flat_dir) >> 20),
        ),
        (
            "generate + write (generated / flat)".into(),
            format!("{gen_s:.2} s / {flat_s:.2} s ({:.2}x)", gen_s / flat_s),
        ),
        (
            "serve: listening, median of 3 (generated / flat)".into(),
            format!("{gen_cold:.2} s / {flat_cold:.2} s ({:.2}x)", gen_cold / flat_cold),
        ),
        (
            "serve: spawn to first search answered (generated / flat)".into(),
            format!("{gen_first:.2} s / {flat_first:.2} s ({:.2}x)", gen_first / flat_first),
        ),
        (
            "serve: RSS when answering (generated / flat)".into(),
            format!("{} MiB / {} MiB", gen_rss >> 10, flat_rss >> 10),
        ),
    ])
}
