//! `cargo xtask`: the command-line front of the engine. Parses flags and dispatches to one module
//! per command; decisions live in `engine`, and only this crate prints.

mod ci;
mod cmd;
mod output;
mod report;
mod setup;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Build the Docker images of a pnpm monorepo, rebuilding only what changed.
///
/// Each service (a workspace package with a Dockerfile) gets one image. The engine assembles each
/// image's build context itself (exactly what Docker would send for the paths its Dockerfile
/// copies, the lockfile pruned to the packages it holds), hashes it into a key with the base
/// images' digests, the platform and the build arguments, and builds only images whose key is
/// not cached.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Examples:
  cargo xtask images                  build what changed
  cargo xtask images --dry-run        show the plan, and why each image would be built
  cargo xtask explain api-gateway     every input of one image, with digests
  cargo xtask graph --format dot | dot -Tsvg > graph.svg"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The monorepo root [default: the nearest directory above the current one holding
    /// `pnpm-workspace.yaml`, else the bundled example `examples/kc-backend`]
    #[arg(long, global = true, env = "IMAGES_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The local cache directory [default: `<root>/.images-cache`]
    #[arg(long, global = true, env = "IMAGES_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text (`watch`: one JSON object per line);
    /// a failure prints `{"schema":1,"error":{"message","file","line","hint",…}}` there
    #[arg(long, global = true)]
    pub json: bool,
    /// How many builds run at once [default: the number of CPUs]
    #[arg(short = 'j', long, global = true, value_name = "N")]
    pub jobs: Option<usize>,
    /// Say more (repeatable): `-v` phase timings and the decisions (plan, waits, tiers),
    /// `-vv` also every build's log and the Docker commands run
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Say less: no progress, notes or summary, only warnings, errors and the result
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How a run shows progress: `auto` (bars on a terminal, plain lines otherwise; none with
    /// --json or -q), `tty` (bars), `plain` (lines), `json` (one JSON event per line on stderr)
    #[arg(
        long,
        global = true,
        value_enum,
        env = "IMAGES_PROGRESS",
        value_name = "MODE"
    )]
    pub progress: Option<report::Progress>,
    /// When to colour: `auto` (a terminal, unless NO_COLOR is set; CLICOLOR_FORCE forces it),
    /// `always`, `never`
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: output::ColorWhen,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the images whose inputs changed (or show the plan with --dry-run)
    Images(cmd::images::Args),
    /// Show the workspace graph of packages and images
    Graph(cmd::graph::Args),
    /// Show every input of one service's image: the files of its context and their digests
    Explain(cmd::explain::Args),
    /// Render each service's Dockerfile from the template, and lint them (--check: fail if stale)
    Dockerfiles(cmd::dockerfiles::Args),
    /// Look after the local cache: stats, gc, verify
    Cache(cmd::cache::Args),
    /// Keep the images in step with the sources: rebuild the affected images on save
    Watch(cmd::watch::Args),
    /// The services a git diff touches (for CI fan-out)
    Affected(cmd::affected::Args),
    /// Check built images against the architecture's rules
    Verify(cmd::verify::Args),
    /// Measure the engine against the machine's floor and the alternatives
    Bench(cmd::bench::Args),
    /// Make a signing key pair in cosign's format (PREFIX.key encrypted with COSIGN_PASSWORD, PREFIX.pub)
    Keygen(cmd::keygen::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(cmd::completions::Args),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    output::configure(
        cli.global.quiet,
        cli.global.verbose,
        cli.global.color,
        cli.global.progress == Some(report::Progress::Json),
    );
    let result = match cli.command {
        Command::Images(args) => args.run(&cli.global),
        Command::Graph(args) => args.run(&cli.global),
        Command::Explain(args) => args.run(&cli.global),
        Command::Dockerfiles(args) => args.run(&cli.global),
        Command::Cache(args) => args.run(&cli.global),
        Command::Watch(args) => args.run(&cli.global),
        Command::Affected(args) => args.run(&cli.global),
        Command::Verify(args) => args.run(&cli.global),
        Command::Bench(args) => args.run(&cli.global),
        Command::Keygen(args) => args.run(&cli.global),
        Command::Completions(args) => args.run(&cli.global),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            output::error(&e);
            if cli.global.json {
                output::error_json(&e);
            }
            std::process::exit(1);
        }
    }
}

/// A command line clap refused: its usage error (help and version print as usual), and under
/// `--json` also the JSON error object on stdout.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let json = std::env::args_os().any(|a| a == "--json");
    if json
        && !matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        let text = e.render().to_string();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let message = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string();
        let hint = lines
            .map(str::trim)
            .find_map(|l| l.strip_prefix("tip: "))
            .map(str::to_string)
            .unwrap_or_else(|| "see `cargo xtask --help`".to_string());
        let _ = output::json(&serde_json::json!({
            "error": output::ErrorJson { message, file: None, line: None, column: None, hint: Some(hint), causes: Vec::new() }
        }));
    }
    e.exit()
}
