//! `eventbus completions SHELL`: a completion script from the command's own
//! definition (clap_complete), so it never lags behind the options.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `eventbus completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub(crate) fn run<C: CommandFactory>(args: CompletionsArgs) -> Result<()> {
    let mut command = C::command();
    clap_complete::generate(args.shell, &mut command, "eventbus", &mut std::io::stdout());
    Ok(())
}
