//! One module per subcommand. Each exposes its clap arguments and a `run` function
//! returning the process exit code; errors bubble up as `anyhow::Error` and are
//! printed once, in `main`.

use std::path::PathBuf;

pub mod ckpt_args;
pub mod convert;
pub mod dag;
pub mod data;
pub mod inspect;
pub mod plan;
pub mod plot;
pub mod replay;
pub mod run;
pub mod runs;
pub mod show;
pub mod soup;
pub mod stage_exec;
pub mod status;
pub mod store;

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The content-addressed store (default: `.tureen` in the current directory).
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
    /// The store directory this invocation uses.
    pub fn store_dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(|| PathBuf::from(".tureen"))
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
