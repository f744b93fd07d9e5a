//! Running a pipeline: keys in dependency order, cache hits restored, the rest executed
//! in parallel within the declared resources, everything recorded.
//!
//! A stage's key needs its inputs' digests, and an upstream stage's output digests are
//! only known once it ran or was found in the cache. So keys are computed as the run
//! goes, each stage once all its upstreams are done; a re-run upstream that produced the
//! same bytes leaves the downstream key unchanged (early cutoff).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tureen_artifacts::{Digest, Store};

use crate::cache::{self, ArtifactRecord, OutputRecord};
use crate::job::{self, JobArtifact, JobEvent, JobInput, JobResult, JobStatus, StageJob};
use crate::key::{Fingerprint, InputDigests, KEY_FORMAT};
use crate::kind::KindRegistry;
use crate::pipeline::{Executor, Input, Pipeline, Ref, Select, Stage, Target};
use crate::progress::{Mode, Progress};
use crate::record::{self, RunRecord, StageRecord};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages to run even if cached.
    pub force: Vec<String>,
    /// Run only these stages and their ancestors (empty: all).
    pub only: Vec<String>,
    /// Plan only: say what would run and why; execute nothing, write nothing.
    pub dry_run: bool,
    /// Maximum number of stages running at once.
    pub jobs: usize,
    /// GPU ids to hand out (`None`: from `TUREEN_GPUS`, `CUDA_VISIBLE_DEVICES`, or
    /// `nvidia-smi -L`, asked only when a stage needs a GPU).
    pub gpus: Option<Vec<u32>>,
    /// Ignore the action cache entirely and do not write it (replays).
    pub no_cache: bool,
    /// `-P` overrides as given (recorded).
    pub overrides: Vec<String>,
    pub progress: Mode,
    /// This tureen binary (command stages get it as `$TUREEN`; Slurm jobs run it; worker
    /// programs such as `tureen-torch` are looked for beside it).
    pub tureen_exe: PathBuf,
    /// Recorded in the run record as the reason for the run (e.g. `replay of X`).
    pub purpose: Option<String>,
    /// Lines of a failed stage's log to print.
    pub tail_lines: usize,
    /// More entries for the record's `tools` (the command line's build: git commit,
    /// profile, libtorch).
    pub tools: BTreeMap<String, String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: Vec::new(),
            only: Vec::new(),
            dry_run: false,
            jobs: default_jobs(),
            gpus: None,
            no_cache: false,
            overrides: Vec::new(),
            progress: Mode::Auto,
            tureen_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tureen")),
            purpose: None,
            tail_lines: 20,
            tools: BTreeMap::new(),
        }
    }
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What a stage will do / did, for plans and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Up to date: restored from the cache.
    Cached,
    /// Runs (or would run), with the reasons.
    Run(Vec<String>),
    /// Would run because an upstream runs; its key is not known yet.
    Blocked(String),
    Failed(String),
    /// Not run because an upstream failed or the run was interrupted.
    Skipped(String),
    /// Not selected by `--only`.
    Excluded,
}

/// One line of a plan.
#[derive(Debug, Clone)]
pub struct PlanLine {
    pub stage: String,
    pub kind: String,
    pub decision: Decision,
    pub key: Option<Digest>,
}

/// The result of [`run`].
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` for dry runs (nothing is written).
    pub record: Option<RunRecord>,
    pub plan: Vec<PlanLine>,
    pub succeeded: bool,
    pub interrupted: bool,
}

#[derive(Debug, Clone)]
enum State {
    Waiting,
    Queued,
    Running,
    Done(BTreeMap<String, OutputRecord>),
    Failed,
    Skipped,
    Excluded,
}

struct Ctx<'a> {
    pipeline: &'a Pipeline,
    registry: &'a KindRegistry,
    store: &'a Store,
    opts: &'a RunOptions,
    run_id: String,
    run_dir: PathBuf,
    force: Vec<bool>,
    /// Earlier run records of this pipeline, newest first (loaded on first need).
    history: Option<Vec<RunRecord>>,
    pipeline_abs: PathBuf,
}

/// Runs (or, with `dry_run`, plans) the pipeline against the store.
pub fn run(
    pipeline: &Pipeline,
    registry: &KindRegistry,
    store_dir: &Path,
    opts: &RunOptions,
    cancel: &AtomicBool,
) -> anyhow::Result<RunOutcome> {
    let n = pipeline.stages.len();
    let resolve_names = |names: &[String], flag: &str| -> anyhow::Result<Vec<usize>> {
        names
            .iter()
            .map(|s| {
                pipeline.stage_index(s).ok_or_else(|| {
                    let all: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
                    let hint = crate::diag::suggest(s, all.iter().copied())
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    anyhow::anyhow!(
                        "{flag} {s}: no such stage in {}{hint}",
                        pipeline.file.display()
                    )
                })
            })
            .collect()
    };
    let forced = resolve_names(&opts.force, "--force")?;
    let only = resolve_names(&opts.only, "--only")?;
    let selected = if only.is_empty() {
        vec![true; n]
    } else {
        pipeline.with_ancestors(&only)
    };

    // A dry run must not create a store: plan against an empty scratch one instead.
    let scratch;
    let store_root = if opts.dry_run && !store_dir.join("objects").is_dir() {
        scratch = tempfile::tempdir()?;
        scratch.path().to_path_buf()
    } else {
        store_dir.to_path_buf()
    };
    let store = Store::open(&store_root)
        .with_context(|| format!("cannot open the store {}", store_root.display()))?;
    let store_ref = &store;
    let run_id = record::new_run_id();
    let mut force = vec![false; n];
    for i in forced {
        force[i] = true;
    }
    let mut ctx = Ctx {
        pipeline,
        registry,
        store: store_ref,
        opts,
        run_dir: store_ref.root().join("runs").join(&run_id),
        run_id,
        force,
        history: None,
        pipeline_abs: std::path::absolute(&pipeline.file).unwrap_or_else(|_| pipeline.file.clone()),
    };
    if opts.dry_run {
        return Ok(plan(&mut ctx, &selected));
    }
    // Objects a run creates are unreferenced until its cache entries and record are
    // written: keep `tureen store gc` out until the run ends.
    let _gc_guard = store
        .lock_shared()
        .context("cannot take the store's shared lock")?;
    execute(&mut ctx, &selected, cancel)
}

impl Ctx<'_> {
    fn history(&mut self) -> &[RunRecord] {
        if self.history.is_none() {
            let root = self.store.root();
            let records = record::list_runs(root)
                .into_iter()
                .take(200)
                .filter_map(|id| RunRecord::read(&RunRecord::path(root, &id)).ok())
                .filter(|r| r.pipeline == self.pipeline_abs)
                .collect();
            self.history = Some(records);
        }
        self.history.as_deref().unwrap_or(&[])
    }

    /// Why stage `i` with fingerprint `fp` is not a cache hit.
    fn why(&mut self, i: usize, fp: &Fingerprint) -> Vec<String> {
        let name = self.pipeline.stages[i].name.clone();
        let mut why = Vec::new();
        if self.force[i] {
            why.push("forced (--force)".to_string());
        }
        if self.opts.no_cache {
            why.push("cache disabled (replay)".to_string());
            return why;
        }
        let last = self.history().iter().find_map(|r| {
            r.stages
                .iter()
                .find(|s| s.name == name && matches!(s.status.as_str(), "ran" | "cached"))
                .and_then(|s| {
                    s.fingerprint
                        .clone()
                        .map(|f| (r.run_id.clone(), f, r.params.clone()))
                })
        });
        match last {
            None => why.push("never ran (no earlier record)".to_string()),
            Some((run, old, old_params)) => {
                let stage = &self.pipeline.stages[i];
                let mut diff = Vec::new();
                for name in &stage.param_refs {
                    let (now, then) = (self.pipeline.params.get(name), old_params.get(name));
                    if now != then {
                        let show = |v: Option<&serde_json::Value>| {
                            v.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into())
                        };
                        diff.push(format!("param {name}: {} -> {}", show(then), show(now)));
                    }
                }
                let stage_diff = fp.diff(&old);
                if diff.is_empty() {
                    diff = stage_diff;
                } else {
                    // Stage params that only changed through the top-level ones are
                    // consequences, not causes.
                    diff.extend(stage_diff.into_iter().filter(|d| !d.starts_with("param ")));
                }
                if diff.is_empty() {
                    if !self.force[i] {
                        why.push(format!("no complete cache entry (same inputs as run {run}; outputs removed or the run did not finish)"));
                    }
                } else {
                    why.extend(diff);
                }
            }
        }
        why
    }
}

/// Digests of a stage's inputs, given the outputs of finished upstreams.
fn fingerprint(
    ctx: &Ctx<'_>,
    stage: &Stage,
    states: &[State],
) -> anyhow::Result<(Fingerprint, BTreeMap<String, JobInput>)> {
    let kind = ctx
        .registry
        .get(&stage.kind)
        .ok_or_else(|| anyhow::anyhow!("kind `{}` is not registered", stage.kind))?;
    let mut inputs = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for (name, input) in &stage.inputs {
        let value = match input {
            Input::One(r) => resolve_ref(ctx, r, states)?,
            Input::List(refs) => {
                let mut all = Vec::new();
                for r in refs {
                    match resolve_ref(ctx, r, states)? {
                        JobInput::One(a) => all.push(a),
                        JobInput::Series(items) => all.extend(items),
                    }
                }
                JobInput::Series(all)
            }
        };
        digests.insert(
            name.clone(),
            match &value {
                JobInput::One(a) => InputDigests::One(a.digest),
                JobInput::Series(items) => {
                    InputDigests::Series(items.iter().map(|a| a.digest).collect())
                }
            },
        );
        inputs.insert(name.clone(), value);
    }
    let mut deps = Vec::new();
    for r in &stage.deps {
        let digest = match resolve_ref(ctx, r, states)? {
            JobInput::One(a) => a.digest,
            JobInput::Series(items) => {
                let joined: Vec<String> = items.iter().map(|a| a.digest.to_string()).collect();
                Digest::of_bytes(joined.join("\n").as_bytes())
            }
        };
        deps.push((r.text.clone(), digest));
    }
    let fp = Fingerprint {
        format: KEY_FORMAT,
        kind: stage.kind.clone(),
        code_version: kind.code_version().to_string(),
        params: stage.params.clone(),
        inputs: digests,
        deps,
        env: stage.env.clone(),
    };
    Ok((fp, inputs))
}

fn resolve_ref(ctx: &Ctx<'_>, r: &Ref, states: &[State]) -> anyhow::Result<JobInput> {
    match &r.target {
        Target::File { path, rel } => {
            let meta = std::fs::metadata(path).with_context(|| format!("input `{rel}`"))?;
            let digest = if meta.is_dir() {
                tree_digest(ctx.store, path).with_context(|| format!("input `{rel}`"))?
            } else {
                ctx.store
                    .hash_file_cached(path)
                    .with_context(|| format!("input `{rel}`"))?
            };
            Ok(JobInput::One(JobArtifact {
                digest,
                tree: meta.is_dir(),
                path: Some(path.clone()),
            }))
        }
        Target::Output {
            stage,
            output,
            select,
        } => {
            let State::Done(outputs) = &states[*stage] else {
                anyhow::bail!(
                    "internal: `{}` resolved before its upstream finished",
                    r.text
                );
            };
            let rec = outputs.get(output).ok_or_else(|| {
                anyhow::anyhow!("`{}`: the recorded outputs have no `{output}`", r.text)
            })?;
            let art = |a: &ArtifactRecord| JobArtifact {
                digest: a.digest,
                tree: a.tree,
                path: None,
            };
            match (rec, select) {
                (OutputRecord::One(a), _) => Ok(JobInput::One(art(a))),
                (OutputRecord::Series { series }, Select::Whole) => {
                    Ok(JobInput::Series(series.iter().map(art).collect()))
                }
                (OutputRecord::Series { series }, Select::Index(i)) => {
                    let idx = if *i < 0 { series.len() as i64 + i } else { *i };
                    let a = usize::try_from(idx)
                        .ok()
                        .and_then(|k| series.get(k))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "`{}`: index {i} is out of range: the series has {} elements",
                                r.text,
                                series.len()
                            )
                        })?;
                    Ok(JobInput::One(art(a)))
                }
                (OutputRecord::Series { series }, Select::Range(a, b)) => {
                    let end = b.unwrap_or(series.len());
                    if *a > end || end > series.len() {
                        anyhow::bail!(
                            "`{}`: range out of bounds: the series has {} elements",
                            r.text,
                            series.len()
                        );
                    }
                    Ok(JobInput::Series(series[*a..end].iter().map(art).collect()))
                }
            }
        }
    }
}

/// The digest a directory would have as a tree object, without storing it.
fn tree_digest(store: &Store, dir: &Path) -> anyhow::Result<Digest> {
    let mut tree = tureen_artifacts::store::Tree::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        for entry in
            std::fs::read_dir(&abs).with_context(|| format!("cannot list {}", abs.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if ty.is_file() {
                tree.files
                    .insert(child_rel, store.hash_file_cached(&entry.path())?);
            } else {
                anyhow::bail!(
                    "{}: symlinks and special files are not supported in inputs",
                    entry.path().display()
                );
            }
        }
    }
    Ok(Digest::of_bytes(&tree.to_bytes()))
}

/// Where an output appears in the workspace: a declared path, else
/// `outputs/<stage>/<name><ext>` for single artifacts. Series stay in the store.
fn workspace_dest(
    pipeline: &Pipeline,
    stage: &Stage,
    name: &str,
    rec: &OutputRecord,
) -> Option<PathBuf> {
    if let Some(rel) = stage.workspace_paths.get(name) {
        return Some(pipeline.root.join(rel));
    }
    let OutputRecord::One(a) = rec else {
        return None;
    };
    let ext = a
        .file_name
        .as_deref()
        .and_then(|f| Path::new(f).extension())
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    Some(
        pipeline
            .root
            .join("outputs")
            .join(&stage.name)
            .join(format!("{name}{ext}")),
    )
}

/// Puts the stage's outputs in the workspace unless they are already there.
fn materialize(
    ctx: &Ctx<'_>,
    stage: &Stage,
    outputs: &BTreeMap<String, OutputRecord>,
) -> anyhow::Result<()> {
    for (name, rec) in outputs {
        let Some(dest) = workspace_dest(ctx.pipeline, stage, name, rec) else {
            continue;
        };
        let OutputRecord::One(a) = rec else { continue };
        let current = match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_file() && !a.tree => ctx.store.hash_file_cached(&dest).ok(),
            Ok(m) if m.is_dir() && a.tree => tree_digest(ctx.store, &dest).ok(),
            Ok(_) => None,
            Err(_) => None,
        };
        if current == Some(a.digest) {
            continue;
        }
        remove_path(&dest)?;
        ctx.store.materialize(&a.digest, &dest).with_context(|| {
            format!(
                "stage `{}`: cannot materialize output `{name}` at {}",
                stage.name,
                dest.display()
            )
        })?;
    }
    Ok(())
}

fn remove_path(p: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            make_writable(p);
            std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// Read-only directories (materialized trees) need write permission to be emptied.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
            make_writable(&entry.path());
        }
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}

fn plan(ctx: &mut Ctx<'_>, selected: &[bool]) -> RunOutcome {
    let p = ctx.pipeline;
    let mut states: Vec<State> = selected
        .iter()
        .map(|&s| if s { State::Waiting } else { State::Excluded })
        .collect();
    let mut lines = Vec::new();
    for i in p.topo_order() {
        let stage = &p.stages[i];
        if !selected[i] {
            lines.push(PlanLine {
                stage: stage.name.clone(),
                kind: stage.kind.clone(),
                decision: Decision::Excluded,
                key: None,
            });
            continue;
        }
        let blocked: Vec<&str> = stage
            .upstream
            .iter()
            .filter(|&&u| !matches!(states[u], State::Done(_)))
            .map(|&u| p.stages[u].name.as_str())
            .collect();
        if !blocked.is_empty() {
            lines.push(PlanLine {
                stage: stage.name.clone(),
                kind: stage.kind.clone(),
                decision: Decision::Blocked(format!("upstream {} will run (may still be cached afterwards if its outputs do not change)", blocked.join(", "))),
                key: None,
            });
            states[i] = State::Queued;
            continue;
        }
        let (decision, key) = match fingerprint(ctx, stage, &states) {
            Err(e) => (Decision::Failed(format!("{e:#}")), None),
            Ok((fp, _)) => {
                let key = fp.key();
                let hit = if ctx.force[i] || ctx.opts.no_cache {
                    None
                } else {
                    cache::lookup(ctx.store, &key)
                };
                match hit {
                    Some(entry) => {
                        states[i] = State::Done(entry.outputs);
                        (Decision::Cached, Some(key))
                    }
                    None => {
                        states[i] = State::Queued;
                        (Decision::Run(ctx.why(i, &fp)), Some(key))
                    }
                }
            }
        };
        lines.push(PlanLine {
            stage: stage.name.clone(),
            kind: stage.kind.clone(),
            decision,
            key,
        });
    }
    let ok = !lines
        .iter()
        .any(|l| matches!(l.decision, Decision::Failed(_)));
    RunOutcome {
        record: None,
        plan: lines,
        succeeded: ok,
        interrupted: false,
    }
}

enum Msg {
    Event(usize, JobEvent),
    Done(usize, anyhow::Result<JobResult>),
}

/// Local resources: stage slots, CPUs, memory, GPU ids.
struct Pool {
    jobs: usize,
    cpus: u32,
    memory: Option<u64>,
    gpus: Option<Vec<u32>>,
    gpus_known: bool,
    explicit_gpus: Option<Vec<u32>>,
}

impl Pool {
    fn new(opts: &RunOptions) -> Pool {
        Pool {
            jobs: opts.jobs.max(1),
            cpus: default_jobs() as u32,
            memory: None,
            gpus: None,
            gpus_known: false,
            explicit_gpus: opts.gpus.clone(),
        }
    }

    fn total_cpus() -> u32 {
        default_jobs() as u32
    }

    fn ensure_gpus(&mut self) -> &mut Vec<u32> {
        if !self.gpus_known {
            self.gpus_known = true;
            self.gpus = Some(self.explicit_gpus.clone().unwrap_or_else(detect_gpus));
        }
        self.gpus.get_or_insert_with(Vec::new)
    }

    /// Takes what `stage` needs, or `None` if it must wait. `running == 0` means
    /// nothing else holds anything, so a stage asking for more than exists runs alone
    /// instead of waiting forever (GPUs excepted: those are an error).
    fn take(&mut self, stage: &Stage, running: usize) -> Result<Option<Vec<u32>>, String> {
        if stage.executor == Executor::Slurm {
            return Ok(Some(Vec::new()));
        }
        if self.jobs == 0 {
            return Ok(None);
        }
        let cpus = stage.resources.cpus.min(Pool::total_cpus());
        if cpus > self.cpus && running > 0 {
            return Ok(None);
        }
        if let Some(mem) = stage.resources.memory {
            let free = *self.memory.get_or_insert_with(total_memory);
            if mem > free && running > 0 {
                return Ok(None);
            }
        }
        let want = stage.resources.gpus as usize;
        let mut gpus = Vec::new();
        if want > 0 {
            let pool = self.ensure_gpus();
            if pool.len() < want {
                if running == 0 {
                    return Err(format!(
                        "stage `{}` needs {want} GPU(s) but {} are available (set --gpus or TUREEN_GPUS)",
                        stage.name,
                        pool.len()
                    ));
                }
                return Ok(None);
            }
            gpus = pool.drain(..want).collect();
        }
        self.jobs -= 1;
        self.cpus = self.cpus.saturating_sub(cpus);
        if let (Some(mem), Some(free)) = (stage.resources.memory, self.memory.as_mut()) {
            *free = free.saturating_sub(mem);
        }
        Ok(Some(gpus))
    }

    fn give(&mut self, stage: &Stage, gpus: Vec<u32>) {
        if stage.executor == Executor::Slurm {
            return;
        }
        self.jobs += 1;
        self.cpus += stage.resources.cpus.min(Pool::total_cpus());
        if let (Some(mem), Some(free)) = (stage.resources.memory, self.memory.as_mut()) {
            *free += mem;
        }
        if let Some(pool) = self.gpus.as_mut() {
            pool.extend(gpus);
            pool.sort_unstable();
        }
    }
}

/// GPU ids: `TUREEN_GPUS` (e.g. `0,1`), else `CUDA_VISIBLE_DEVICES`, else one per
/// line of `nvidia-smi -L`, else none.
fn detect_gpus() -> Vec<u32> {
    let parse =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|t| t.trim().parse().ok()).collect() };
    if let Ok(v) = std::env::var("TUREEN_GPUS") {
        return parse(&v);
    }
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return parse(&v);
    }
    match std::process::Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => {
            let n = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            (0..n as u32).collect()
        }
        _ => Vec::new(),
    }
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(u64::MAX)
}

fn tools(registry: &KindRegistry) -> BTreeMap<String, String> {
    let mut tools = BTreeMap::new();
    tools.insert("tureen".to_string(), env!("CARGO_PKG_VERSION").to_string());
    for name in registry.names() {
        if let Some(k) = registry.get(name) {
            tools.insert(format!("kind:{name}"), k.code_version().to_string());
        }
    }
    tools.insert(
        "os".to_string(),
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    );
    tools
}

fn execute(
    ctx: &mut Ctx<'_>,
    selected: &[bool],
    cancel: &AtomicBool,
) -> anyhow::Result<RunOutcome> {
    let p = ctx.pipeline;
    let n = p.stages.len();
    let opts = ctx.opts;
    let mut progress = Progress::new(opts.progress);
    let mut rec = RunRecord {
        run_id: ctx.run_id.clone(),
        pipeline: ctx.pipeline_abs.clone(),
        pipeline_digest: p.source_digest.clone(),
        status: "running".into(),
        params: p.params.clone(),
        overrides: opts.overrides.clone(),
        options: json!({
            "force": opts.force, "only": opts.only, "jobs": opts.jobs, "no_cache": opts.no_cache,
            "purpose": opts.purpose,
        }),
        started: record::now_rfc3339(),
        ended: None,
        host: record::hostname(),
        user: record::username(),
        store: Some(ctx.store.root().to_path_buf()),
        tools: tools(ctx.registry)
            .into_iter()
            .chain(opts.tools.clone())
            .collect(),
        stages: Vec::new(),
    };
    rec.write(ctx.store.root())
        .context("cannot write the run record")?;

    let order = p.topo_order();
    let position: HashMap<usize, usize> =
        order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    let downstream = p.downstream();
    let mut states: Vec<State> = selected
        .iter()
        .map(|&s| if s { State::Waiting } else { State::Excluded })
        .collect();
    let mut pending_up: Vec<usize> = p
        .stages
        .iter()
        .map(|s| s.upstream.iter().filter(|&&u| selected[u]).count())
        .collect();
    let mut stage_recs: Vec<Option<StageRecord>> = vec![None; n];
    // Stages whose upstreams are done, by topological position.
    let mut evaluate: BTreeSet<(usize, usize)> = BTreeSet::new();
    for &i in &order {
        if selected[i] && pending_up[i] == 0 {
            evaluate.insert((position[&i], i));
        }
    }
    let mut runnable: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut jobs: HashMap<usize, StageJob> = HashMap::new();
    let mut pool = Pool::new(opts);
    let mut held_gpus: HashMap<usize, Vec<u32>> = HashMap::new();
    let mut started_at: HashMap<usize, Instant> = HashMap::new();
    let mut running = 0usize;
    let mut failed = false;
    let (tx, rx) = mpsc::channel::<Msg>();
    let registry = ctx.registry;

    std::thread::scope(|scope| -> anyhow::Result<()> {
        loop {
            // 1. Stages whose upstreams are all done: key, cache, queue.
            while let Some((_, i)) = evaluate.pop_first() {
                let stage = &p.stages[i];
                let (fp, inputs) = match fingerprint(ctx, stage, &states) {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = format!("{e:#}");
                        progress.error(&format!("{}: FAILED before running: {msg}", stage.name));
                        stage_recs[i] = Some(stage_record(
                            stage,
                            "failed",
                            None,
                            None,
                            Vec::new(),
                            Some(msg),
                        ));
                        states[i] = State::Failed;
                        failed = true;
                        skip_downstream(i, &downstream, &mut states, &mut stage_recs, p);
                        continue;
                    }
                };
                let key = fp.key();
                let hit = if ctx.force[i] || opts.no_cache {
                    None
                } else {
                    cache::lookup(ctx.store, &key)
                };
                if let Some(entry) = hit {
                    if let Err(e) = materialize(ctx, stage, &entry.outputs) {
                        let msg = format!("{e:#}");
                        progress.error(&format!("{}: FAILED: {msg}", stage.name));
                        stage_recs[i] = Some(stage_record(
                            stage,
                            "failed",
                            Some(key),
                            Some(fp),
                            Vec::new(),
                            Some(msg),
                        ));
                        states[i] = State::Failed;
                        failed = true;
                        skip_downstream(i, &downstream, &mut states, &mut stage_recs, p);
                        continue;
                    }
                    let mut sr = stage_record(
                        stage,
                        "cached",
                        Some(key),
                        Some(fp),
                        vec!["up to date".into()],
                        None,
                    );
                    sr.inputs = input_record(stage, &inputs);
                    sr.outputs = entry.outputs.clone();
                    stage_recs[i] = Some(sr);
                    progress.println(&format!("{}: cached", stage.name));
                    states[i] = State::Done(entry.outputs);
                    release_downstream(
                        i,
                        &downstream,
                        &mut pending_up,
                        &states,
                        &mut evaluate,
                        &position,
                    );
                    continue;
                }
                let why = ctx.why(i, &fp);
                let mut sr = stage_record(stage, "running", Some(key), Some(fp.clone()), why, None);
                sr.inputs = input_record(stage, &inputs);
                sr.log = Some(format!("runs/{}/{}.log", ctx.run_id, stage.name));
                stage_recs[i] = Some(sr);
                let job = StageJob {
                    run_id: ctx.run_id.clone(),
                    stage: stage.name.clone(),
                    kind: stage.kind.clone(),
                    key,
                    fingerprint: fp,
                    params: stage.params.clone(),
                    inputs,
                    outputs: job::job_outputs(&stage.outputs),
                    store: ctx.store.root().to_path_buf(),
                    workspace: p.root.clone(),
                    env: stage.env.clone(),
                    gpus: Vec::new(),
                    log: ctx.run_dir.join(format!("{}.log", stage.name)),
                    metrics: ctx.run_dir.join(format!("{}.metrics.jsonl", stage.name)),
                    tensorboard: Some(ctx.run_dir.join("tensorboard").join(&stage.name)),
                    attempts: stage.retries + 1,
                    use_cache: !opts.no_cache,
                    force: ctx.force[i],
                };
                jobs.insert(i, job);
                states[i] = State::Queued;
                runnable.insert((position[&i], i));
            }

            // 2. Start what fits.
            if !cancel.load(Ordering::Relaxed) {
                let candidates: Vec<(usize, usize)> = runnable.iter().copied().collect();
                for (pos, i) in candidates {
                    let stage = &p.stages[i];
                    let gpus = match pool.take(stage, running) {
                        Ok(Some(g)) => g,
                        Ok(None) => continue,
                        Err(msg) => {
                            runnable.remove(&(pos, i));
                            progress.error(&format!("{}: FAILED: {msg}", stage.name));
                            if let Some(sr) = stage_recs[i].as_mut() {
                                sr.status = "failed".into();
                                sr.error = Some(msg);
                            }
                            states[i] = State::Failed;
                            failed = true;
                            skip_downstream(i, &downstream, &mut states, &mut stage_recs, p);
                            continue;
                        }
                    };
                    runnable.remove(&(pos, i));
                    let mut job = jobs.remove(&i).expect("queued stages have jobs");
                    job.gpus = gpus.clone();
                    held_gpus.insert(i, gpus);
                    std::fs::create_dir_all(&ctx.run_dir)
                        .with_context(|| format!("cannot create {}", ctx.run_dir.display()))?;
                    if let Some(sr) = stage_recs[i].as_mut() {
                        sr.started = Some(record::now_rfc3339());
                        sr.executor = match stage.executor {
                            Executor::Local => "local".into(),
                            Executor::Slurm => "slurm".into(),
                        };
                    }
                    let why = stage_recs[i]
                        .as_ref()
                        .map(|s| s.why.join("; "))
                        .unwrap_or_default();
                    progress.started(&stage.name, &format!("running ({why})"));
                    started_at.insert(i, Instant::now());
                    states[i] = State::Running;
                    running += 1;
                    let tx = tx.clone();
                    let slurm = (stage.executor == Executor::Slurm)
                        .then(|| (p.slurm.clone(), stage.resources.clone(), stage.retries));
                    let exe = opts.tureen_exe.clone();
                    scope.spawn(move || {
                        let events = tx.clone();
                        let mut observer = move |e: JobEvent| {
                            let _ = events.send(Msg::Event(i, e));
                        };
                        let result = match slurm {
                            None => crate::worker::execute_here(
                                &job,
                                registry,
                                &exe,
                                cancel,
                                &mut observer,
                            ),
                            // The Slurm job runs tureen itself, or the kind's worker.
                            Some((options, resources, retries)) => crate::worker::program_for(
                                &job, registry, &exe,
                            )
                            .and_then(|worker| {
                                crate::slurm_dispatch::run(
                                    &job,
                                    &options,
                                    &resources,
                                    retries,
                                    worker.as_deref().unwrap_or(&exe),
                                    cancel,
                                    &mut observer,
                                )
                            }),
                        };
                        let _ = tx.send(Msg::Done(i, result));
                    });
                }
            }

            if running == 0
                && (runnable.is_empty() || cancel.load(Ordering::Relaxed))
                && evaluate.is_empty()
            {
                break;
            }

            // 3. Wait for news.
            match rx.recv_timeout(Duration::from_millis(200)) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Event(i, e)) => {
                    let name = &p.stages[i].name;
                    match e {
                        JobEvent::Line(l) => progress.message(name, &l),
                        JobEvent::Progress(d, t) => progress.fraction(name, d, t),
                        JobEvent::Waiting(w) => progress.println(&format!("{name}: {w}")),
                        JobEvent::Attempt(a) if a > 1 => {
                            progress.println(&format!("{name}: retrying (attempt {a})"))
                        }
                        JobEvent::Attempt(_) => {}
                    }
                }
                Ok(Msg::Done(i, result)) => {
                    running -= 1;
                    let stage = &p.stages[i];
                    pool.give(stage, held_gpus.remove(&i).unwrap_or_default());
                    let secs = started_at
                        .get(&i)
                        .map(|t| t.elapsed().as_secs_f64())
                        .unwrap_or_default();
                    let result = result.unwrap_or_else(|e| JobResult {
                        status: JobStatus::Failed,
                        outputs: BTreeMap::new(),
                        error: Some(format!("{e:#}")),
                        attempts: 0,
                        started: record::now_rfc3339(),
                        ended: record::now_rfc3339(),
                        seconds: secs,
                        resumed_from: 0,
                    });
                    let sr = stage_recs[i].as_mut().expect("running stages have records");
                    sr.ended = Some(record::now_rfc3339());
                    sr.seconds = Some(secs);
                    sr.attempts = result.attempts;
                    match result.status {
                        JobStatus::Ran | JobStatus::Cached => {
                            if let Err(e) = materialize(ctx, stage, &result.outputs) {
                                progress.finished(
                                    &stage.name,
                                    &format!("{}: FAILED: {e:#}", stage.name),
                                );
                                let sr = stage_recs[i].as_mut().expect("record");
                                sr.status = "failed".into();
                                sr.error = Some(format!("{e:#}"));
                                states[i] = State::Failed;
                                failed = true;
                                skip_downstream(i, &downstream, &mut states, &mut stage_recs, p);
                                continue;
                            }
                            let sr = stage_recs[i].as_mut().expect("record");
                            sr.status = if result.status == JobStatus::Ran {
                                "ran".into()
                            } else {
                                "cached".into()
                            };
                            sr.exit_status = Some(0);
                            sr.outputs = result.outputs.clone();
                            let note = match (result.status, result.attempts, result.resumed_from) {
                                (JobStatus::Cached, ..) => {
                                    " (finished meanwhile by another run)".to_string()
                                }
                                (_, a, _) if a > 1 => format!(" after {a} attempts"),
                                (_, _, r) if r > 0 => format!(" (resumed from {r} checkpoint(s))"),
                                _ => String::new(),
                            };
                            progress.finished(
                                &stage.name,
                                &format!("{}: done in {secs:.2}s{note}", stage.name),
                            );
                            states[i] = State::Done(result.outputs);
                            release_downstream(
                                i,
                                &downstream,
                                &mut pending_up,
                                &states,
                                &mut evaluate,
                                &position,
                            );
                        }
                        JobStatus::Failed | JobStatus::Cancelled => {
                            let cancelled = result.status == JobStatus::Cancelled;
                            sr.status = if cancelled {
                                "cancelled".into()
                            } else {
                                "failed".into()
                            };
                            sr.exit_status = Some(1);
                            sr.error = result.error.clone();
                            let log = ctx.run_dir.join(format!("{}.log", stage.name));
                            let mut msg = format!(
                                "{}: {} after {secs:.2}s: {}",
                                stage.name,
                                if cancelled { "INTERRUPTED" } else { "FAILED" },
                                result.error.as_deref().unwrap_or("unknown error")
                            );
                            if !cancelled {
                                let tail = tail(&log, opts.tail_lines);
                                if !tail.is_empty() {
                                    msg.push_str(&format!(
                                        "\n--- last lines of {} ---\n{tail}",
                                        log.display()
                                    ));
                                }
                            }
                            progress.finished(&stage.name, &msg);
                            states[i] = State::Failed;
                            failed = true;
                            skip_downstream(i, &downstream, &mut states, &mut stage_recs, p);
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    progress.clear();

    let interrupted = cancel.load(Ordering::Relaxed);
    for &i in &order {
        if stage_recs[i].is_none() && selected[i] {
            let stage = &p.stages[i];
            let status = if interrupted { "cancelled" } else { "skipped" };
            stage_recs[i] = Some(stage_record(stage, status, None, None, Vec::new(), None));
            let _ = &states[i];
        }
    }
    rec.stages = order.iter().filter_map(|&i| stage_recs[i].take()).collect();
    rec.status = if interrupted {
        "interrupted".into()
    } else if failed {
        "failed".into()
    } else {
        "succeeded".into()
    };
    rec.ended = Some(record::now_rfc3339());
    rec.write(ctx.store.root())
        .context("cannot write the run record")?;
    let plan = rec
        .stages
        .iter()
        .map(|s| PlanLine {
            stage: s.name.clone(),
            kind: s.kind.clone(),
            decision: match s.status.as_str() {
                "cached" => Decision::Cached,
                "ran" => Decision::Run(s.why.clone()),
                "failed" => Decision::Failed(s.error.clone().unwrap_or_default()),
                _ => Decision::Skipped(s.status.clone()),
            },
            key: s.key,
        })
        .collect();
    Ok(RunOutcome {
        succeeded: !failed && !interrupted,
        interrupted,
        record: Some(rec),
        plan,
    })
}

fn stage_record(
    stage: &Stage,
    status: &str,
    key: Option<Digest>,
    fp: Option<Fingerprint>,
    why: Vec<String>,
    error: Option<String>,
) -> StageRecord {
    StageRecord {
        name: stage.name.clone(),
        kind: stage.kind.clone(),
        status: status.to_string(),
        key,
        why,
        fingerprint: fp,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        started: None,
        ended: None,
        seconds: None,
        attempts: 0,
        executor: match stage.executor {
            Executor::Local => "local".into(),
            Executor::Slurm => "slurm".into(),
        },
        exit_status: None,
        error,
        log: None,
    }
}

fn input_record(
    stage: &Stage,
    inputs: &BTreeMap<String, JobInput>,
) -> BTreeMap<String, record::RecordedInput> {
    let mut out = BTreeMap::new();
    for (name, input) in &stage.inputs {
        let refs: Vec<&str> = input.refs().iter().map(|r| r.text.as_str()).collect();
        if let Some(artifacts) = inputs.get(name) {
            out.insert(
                name.clone(),
                record::RecordedInput {
                    refs: refs.join(", "),
                    artifacts: artifacts.clone(),
                },
            );
        }
    }
    out
}

fn release_downstream(
    i: usize,
    downstream: &[Vec<usize>],
    pending_up: &mut [usize],
    states: &[State],
    evaluate: &mut BTreeSet<(usize, usize)>,
    position: &HashMap<usize, usize>,
) {
    for &d in &downstream[i] {
        if matches!(states[d], State::Excluded) {
            continue;
        }
        pending_up[d] = pending_up[d].saturating_sub(1);
        if pending_up[d] == 0 && matches!(states[d], State::Waiting) {
            evaluate.insert((position[&d], d));
        }
    }
}

fn skip_downstream(
    i: usize,
    downstream: &[Vec<usize>],
    states: &mut [State],
    recs: &mut [Option<StageRecord>],
    p: &Pipeline,
) {
    let mut stack: Vec<usize> = downstream[i].clone();
    while let Some(d) = stack.pop() {
        if matches!(states[d], State::Waiting) {
            states[d] = State::Skipped;
            let mut sr = stage_record(&p.stages[d], "skipped", None, None, Vec::new(), None);
            sr.error = Some(format!("upstream `{}` failed", p.stages[i].name));
            recs[d] = Some(sr);
            stack.extend(downstream[d].iter().copied());
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
