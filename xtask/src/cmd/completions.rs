//! `cargo xtask completions SHELL`: a completion script for the CLI, made by clap_complete from
//! the same definition that parses the flags (so it cannot drift from them).

use clap::CommandFactory as _;

use crate::Global;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Completions complete a command word, and `cargo xtask` is two: install a
one-word command first, `xtask() { cargo xtask \"$@\"; }` (bash, zsh) or
`function xtask; cargo xtask $argv; end` (fish), then:
  bash:  source <(cargo xtask completions bash)          (in ~/.bashrc)
  zsh:   source <(cargo xtask completions zsh)           (after compinit, in ~/.zshrc)
  fish:  cargo xtask completions fish | source           (in ~/.config/fish/config.fish)
Pass --name to complete another command name (the binary `target/xtask/xtask` on PATH, an alias)."
)]
pub struct Args {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
    /// The command word the script completes
    #[arg(long, value_name = "NAME", default_value = "xtask")]
    pub name: String,
}

impl Args {
    pub fn run(self, _global: &Global) -> anyhow::Result<i32> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            anyhow::bail!(
                "invalid command name `{}` for completions\n  hint: one word of letters, digits, `-`, `_` or `.`",
                self.name
            );
        }
        let mut cmd = crate::Cli::command();
        clap_complete::generate(self.shell, &mut cmd, self.name, &mut std::io::stdout());
        Ok(0)
    }
}
