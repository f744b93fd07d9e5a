//! `tureen completions SHELL` and `tureen man [-o DIR]`: shell completions
//! (`clap_complete`) and man pages (`clap_mangen`) generated from the command line's
//! own definition, so they never fall behind it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write `tureen.1` and one page per subcommand (`tureen-run.1`, ...) into this
    /// directory instead of printing `tureen.1`.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// Prints the completion script, e.g. `tureen completions bash > /etc/bash_completion.d/tureen`.
pub fn completions(args: CompletionsArgs, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
    let name = cli.get_name().to_string();
    clap_complete::generate(args.shell, &mut cli, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Prints `tureen.1`, or writes every page into `--output`.
pub fn man(args: ManArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    match args.output {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
