//! One module per subcommand. Each exposes its clap arguments and a `run` function
//! returning the process exit code; errors bubble up as `anyhow::Error` and are
//! printed once, in `main`.

use std::path::{Path, PathBuf};

pub mod ckpt_args;
pub mod completions;
pub mod convert;
pub mod dag;
pub mod data;
pub mod diff;
pub mod discover;
pub mod init;
pub mod inspect;
pub mod load;
pub mod logs;
pub mod output;
pub mod plan;
pub mod plot;
pub mod replay;
pub mod report;
pub mod run;
pub mod runs;
pub mod show;
pub mod soup;
pub mod stage_exec;
pub mod status;
pub mod store;
pub mod version;

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The content-addressed store (default: the nearest `.tureen` above the pipeline
    /// file, else above the current directory).
    #[arg(long, global = true, env = "TUREEN_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl Global {
    /// The store directory this invocation uses, found from the current directory
    /// (`.tureen` here when none exists yet, or when the search fails).
    pub fn store_dir(&self) -> PathBuf {
        match self.locate_store(None) {
            Ok(at) => at.path,
            Err(e) => {
                tracing::warn!("{e:#}; using {}", discover::STORE_NAME);
                PathBuf::from(discover::STORE_NAME)
            }
        }
    }

    /// The store for a command on `pipeline` (or on none), logged at `-v`.
    pub fn locate_store(&self, pipeline: Option<&Path>) -> anyhow::Result<discover::StoreLocation> {
        let cwd = std::env::current_dir()?;
        let at = discover::locate(self.store.as_deref(), pipeline, &cwd)?;
        tracing::info!("store {at}");
        Ok(at)
    }

    /// The store of a command that only reads one: an error when there is none.
    pub fn existing_store(&self) -> anyhow::Result<PathBuf> {
        let at = self.locate_store(None)?;
        if at.how == discover::How::New {
            anyhow::bail!(
                "no tureen store: no {} in {} or any directory above it (give --store DIR, \
                 or run a pipeline first)",
                discover::STORE_NAME,
                std::env::current_dir()?.display()
            );
        }
        Ok(at.path)
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the level chosen by `-v`/`-q`.
pub fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Escape codes only where they show as colour: on a terminal, and not with NO_COLOR
    // (anstream's rules, as clap's help follows them).
    let ansi = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
}
