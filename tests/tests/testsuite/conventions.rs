//! The conventions users already know, tested as they meet them: the real binary on real pipes,
//! and on a pseudo-terminal where a terminal changes what is shown. Colours (`NO_COLOR`,
//! `CLICOLOR_FORCE`, `--color`), `-q`, `-v`/`-vv`, `--progress auto|tty|plain|json`, shell
//! completions loaded by bash, zsh and fish themselves, JSON errors, and the `schema` version of
//! every JSON document.

use std::path::Path;
use std::process::{Command, Output};

use tests::{copy_example, project, xtask_bin, xtask_tty, Fixture};

/// The SGR sequence anstyle writes for a bold red label (`error:`).
const RED_BOLD: &str = "\x1b[1m\x1b[31m";

/// `xtask --root root ARGS` on pipes with `env` set (colour variables cleared first).
fn run(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(xtask_bin());
    cmd.arg("--root").arg(root).args(args);
    for k in [
        "IMAGES_ROOT",
        "IMAGES_CACHE_DIR",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "IMAGES_PROGRESS",
        "GITHUB_STEP_SUMMARY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("failed to run xtask")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A workspace whose `services/a/package.json` is not JSON (line 3).
fn malformed() -> Fixture {
    project()
        .shared()
        .service("a", &[])
        .file(
            "services/a/package.json",
            "{\n  \"name\": \"@fx/a\",\n  \"version\": 1.0.0\n}\n",
        )
        .build()
}

#[test]
fn colours_follow_the_terminal_no_color_and_clicolor_force() {
    let p = malformed();
    // A terminal: the label is coloured.
    let tty = xtask_tty(p.root(), &["graph"], &[]);
    assert!(!tty.status.success());
    assert!(
        tty.tty.contains(&format!("{RED_BOLD}error")),
        "no coloured label on a terminal: {:?}",
        tty.tty
    );
    // NO_COLOR on a terminal: not one escape sequence.
    let plain = xtask_tty(p.root(), &["graph"], &[("NO_COLOR", "1")]);
    assert!(plain.tty.contains("error: invalid JSON"), "{:?}", plain.tty);
    assert!(
        !plain.tty.contains('\x1b'),
        "NO_COLOR coloured: {:?}",
        plain.tty
    );
    // --color never on a terminal, even with CLICOLOR_FORCE.
    let never = xtask_tty(
        p.root(),
        &["--color", "never", "graph"],
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(!never.tty.contains('\x1b'), "{:?}", never.tty);
    // A pipe: no colour by default; CLICOLOR_FORCE colours it; NO_COLOR wins over it.
    let pipe = run(p.root(), &["graph"], &[]);
    assert!(
        stderr(&pipe).starts_with("error: invalid JSON"),
        "{}",
        stderr(&pipe)
    );
    let forced = run(p.root(), &["graph"], &[("CLICOLOR_FORCE", "1")]);
    assert!(
        stderr(&forced).starts_with(&format!("{RED_BOLD}error")),
        "{:?}",
        stderr(&forced)
    );
    let both = run(
        p.root(),
        &["graph"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert!(!stderr(&both).contains('\x1b'), "{:?}", stderr(&both));
    let always = run(p.root(), &["--color", "always", "graph"], &[]);
    assert!(stderr(&always).contains(RED_BOLD), "{:?}", stderr(&always));
}

#[test]
fn a_json_error_names_the_file_line_and_hint() {
    let p = malformed();
    for cmd in [&["graph"][..], &["images", "--dry-run"], &["explain", "a"]] {
        let mut args = vec!["--json"];
        args.extend_from_slice(cmd);
        let out = run(p.root(), &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{cmd:?}: stdout is not one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(doc["schema"], 1, "{doc}");
        let e = &doc["error"];
        let file = e["file"].as_str().expect("file");
        assert!(file.ends_with("services/a/package.json"), "{doc}");
        assert_eq!(e["line"], 3, "{doc}");
        assert!(e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid JSON") && !m.contains("hint:")));
        assert!(
            e["hint"].as_str().is_some_and(|h| h.contains("valid JSON")),
            "{doc}"
        );
        // The text for people is still on stderr.
        assert!(
            stderr(&out).contains("error: invalid JSON"),
            "{}",
            stderr(&out)
        );
    }
    // An error without a file: `file` and `line` are null, the hint is there.
    let fx = project().shared().service("a", &[]).build();
    let unknown = run(fx.root(), &["--json", "explain", "nope"], &[]);
    assert!(!unknown.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&unknown.stdout).expect("json");
    assert_eq!(doc["error"]["message"], "unknown service `nope`");
    assert!(doc["error"]["file"].is_null() && doc["error"]["line"].is_null());
    assert_eq!(doc["error"]["hint"], "the services are: a");
    // A command line clap refuses: still a JSON error (exit 2, as clap's usage errors).
    let usage = run(fx.root(), &["--json", "graph", "--format", "svg"], &[]);
    assert_eq!(usage.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&usage.stdout).expect("json");
    assert_eq!(doc["schema"], 1);
    assert!(doc["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("svg")));
    // Under --progress json the error is an event line on stderr, and nothing else is there.
    let events = run(
        p.root(),
        &["--progress", "json", "images", "--dry-run"],
        &[],
    );
    let lines: Vec<serde_json::Value> = stderr(&events)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().expect("an event");
    assert_eq!(last["event"], "error");
    assert_eq!(last["schema"], 1);
    assert_eq!(last["line"], 3);
}

#[test]
fn every_json_document_carries_its_schema() {
    let ex = copy_example();
    for args in [
        &["graph", "--format", "json"][..],
        &["--json", "graph"],
        &["explain", "api-gateway", "--json"],
        &["images", "--dry-run", "--json"],
        &["--json", "cache", "stats"],
        &["--json", "dockerfiles", "--check"],
    ] {
        let out = run(ex.root(), args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e})"));
        assert_eq!(doc["schema"], 1, "{args:?}: {doc}");
        let keys: Vec<&String> = doc.as_object().expect("object").keys().collect();
        assert_eq!(keys[0], "schema", "{args:?}: schema comes first");
    }
    // The fields the contract names keep their meaning beside it.
    let plan = run(ex.root(), &["images", "--dry-run", "--json"], &[]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("json");
    assert_eq!(plan["images"].as_array().map(Vec::len), Some(4));
}

#[test]
fn quiet_and_verbose() {
    let ex = copy_example();
    // -q: nothing on stderr for a command that succeeds; the result (stdout) stays.
    let quiet = run(ex.root(), &["-q", "dockerfiles", "--check"], &[]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "", "-q printed on stderr");
    let normal = run(ex.root(), &["dockerfiles", "--check"], &[]);
    assert!(stderr(&normal).contains("Dockerfiles up to date"));
    let q_plan = run(ex.root(), &["images", "--dry-run", "-q"], &[]);
    assert!(String::from_utf8_lossy(&q_plan.stdout).starts_with("SERVICE"));
    assert!(
        !stderr(&q_plan).contains("to build"),
        "-q kept the summary: {}",
        stderr(&q_plan)
    );
    // -q still says what went wrong.
    let p = malformed();
    let q_err = run(p.root(), &["-q", "graph"], &[]);
    assert!(stderr(&q_err).contains("error: invalid JSON"));
    // -v: the phase timings.
    let v = run(ex.root(), &["-v", "images", "--dry-run"], &[]);
    assert!(
        stderr(&v)
            .lines()
            .any(|l| l.starts_with("discover ") && l.contains(", keys ")),
        "{}",
        stderr(&v)
    );
    assert!(!stderr(&normal).contains("discover "));
    // -v and -q contradict each other.
    let both = run(ex.root(), &["-v", "-q", "graph"], &[]);
    assert_eq!(both.status.code(), Some(2));
}

/// Whether `shell` runs here; the test fails with how to get it when not.
fn require_shell(shell: &str) {
    let ok = Command::new(shell)
        .args(["-c", "exit 0"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs `{shell}` (Debian's package; scripts/test.sh installs it)"
    );
}

/// A directory holding `xtask` (the binary under test), to put first on PATH.
fn bin_dir() -> std::path::PathBuf {
    xtask_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

fn path_with_xtask() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn bash_completion_loads_and_completes() {
    require_shell("bash");
    assert_eq!(
        xtask_bin().file_name().and_then(|n| n.to_str()),
        Some("xtask")
    );
    // Loaded as the help says (`source <(…)`), then asked as bash asks it on TAB.
    let script = r#"
source <(xtask completions bash) || exit 3
complete -p xtask || exit 4
complete_line() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _xtask xtask "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf '%s\n' "${COMPREPLY[@]}"; }
echo "--1"; complete_line xtask im
echo "--2"; complete_line xtask affected --format ''
echo "--3"; complete_line xtask --prog
"#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env("PATH", path_with_xtask())
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("-F _xtask xtask"), "{text}");
    let section = |n: &str| {
        text.split(&format!("--{n}\n"))
            .nth(1)
            .and_then(|s| s.split("\n--").next())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(section("1"), ["images"], "{text}");
    for f in ["text", "json", "github-matrix", "gitlab-pipeline"] {
        assert!(section("2").iter().any(|c| c == f), "{f} missing: {text}");
    }
    assert_eq!(section("3"), ["--progress"], "{text}");
}

#[test]
fn zsh_completion_loads_and_completes() {
    require_shell("zsh");
    let dir = tempfile::tempdir().expect("tempdir");
    let script_path = dir.path().join("_xtask");
    let out = run(Path::new("."), &["completions", "zsh"], &[]);
    assert!(out.status.success());
    std::fs::write(&script_path, &out.stdout).expect("write");
    // zsh parses it...
    let parse = Command::new("zsh")
        .arg("-n")
        .arg(&script_path)
        .output()
        .expect("zsh");
    assert!(parse.status.success(), "{}", stderr(&parse));
    // ... and completes with it: an interactive zsh on a pseudo-terminal (zpty), after
    // compinit, is typed `xtask affected --format ` and TAB twice, listing the formats.
    let driver = format!(
        r#"
zmodload zsh/zpty || exit 3
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source {script}'
zpty -w z 'zstyle ":completion:*" list-prompt ""; setopt no_beep'
zpty -w z 'print -r -- registered=${{_comps[xtask]}}'
zpty -w -n z $'xtask affected --format \t\t'
sleep 3
out=""
while zpty -r -t z line; do out+="$line"; done
zpty -d z
print -r -- "$out"
"#,
        script = script_path.display()
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &driver])
        .env("PATH", path_with_xtask())
        .env("HOME", dir.path())
        .output()
        .expect("zsh");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("registered=_xtask"), "{text}");
    for f in ["github-matrix", "gitlab-pipeline"] {
        assert!(text.contains(f), "zsh did not list {f}: {text}");
    }
}

#[test]
fn fish_completion_loads_and_completes() {
    require_shell("fish");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("fish")
        .args([
            "--no-config",
            "-c",
            "xtask completions fish | source; or exit 3; complete -C 'xtask im'; echo ==; complete -C 'xtask affected --format '",
        ])
        .env("PATH", path_with_xtask())
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .expect("fish");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let (first, second) = text.split_once("==\n").expect("two answers");
    assert!(first.starts_with("images\t"), "{text}");
    for f in ["github-matrix", "gitlab-pipeline", "json", "text"] {
        assert!(
            second.lines().any(|l| l.split('\t').next() == Some(f)),
            "{f}: {text}"
        );
    }
}

#[test]
fn completions_name_a_command_word() {
    let out = run(
        Path::new("."),
        &["completions", "bash", "--name", "kc images"],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    let named = run(
        Path::new("."),
        &["completions", "fish", "--name", "kci"],
        &[],
    );
    assert!(String::from_utf8_lossy(&named.stdout).contains("complete -c kci"));
}

/// A one-service fixture whose images carry a prefix of this test; removed when dropped.
struct Built {
    fx: Fixture,
    prefix: String,
}

impl Drop for Built {
    fn drop(&mut self) {
        tests::remove_images(&self.prefix);
    }
}

const LOG_MARKER: &str = "conventions-log-line";

fn one_service() -> Built {
    let prefix = format!("kct-{}-conv-", std::process::id());
    let fx = project()
        .file("services/a/package.json", "{ \"name\": \"@fx/a\" }\n")
        .file("services/a/src/index.js", "console.log('a');\n")
        .file(
            "services/a/Dockerfile",
            &format!("FROM node:18-alpine\nCOPY services/a/ /app/\nRUN echo {LOG_MARKER}\n"),
        )
        .file("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"))
        .build();
    Built { fx, prefix }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON event per line ({e}): {l:?}\n{text}"))
        })
        .collect()
}

#[test]
fn a_run_in_each_progress_mode() {
    tests::require_docker();
    let _lock = tests::docker_lock();
    let b = one_service();
    let root = b.fx.root();

    // A terminal (`auto`): bars, coloured, and with -vv the commands and the build's log.
    let tty = xtask_tty(root, &["images", "--no-verify", "-vv"], &[]);
    assert!(tty.status.success(), "{}", tty.tty);
    assert!(tty.tty.contains("\x1b[2K"), "no bars drawn: {:?}", tty.tty);
    assert!(
        tty.tty.contains("\x1b[36m"),
        "bars not coloured: {:?}",
        tty.tty
    );
    assert!(tty.tty.contains("built in "), "{:?}", tty.tty);
    assert!(
        tty.tty
            .lines()
            .any(|l| l.contains("$ ") && l.contains(" build ") && l.contains("--iidfile")),
        "-vv shows no docker build command: {}",
        tty.tty
    );
    assert!(
        tty.tty
            .lines()
            .any(|l| l.contains("[a] ") && l.contains(LOG_MARKER)),
        "-vv shows no build log: {}",
        tty.tty
    );

    // JSON events on stderr (pipes), and the job summary GitHub would show.
    // (Outside the monorepo: a root-level file is an input of every image.)
    let ci_dir = tempfile::tempdir().expect("tempdir");
    let summary = ci_dir.path().join("step-summary.md");
    let summary_env = summary.to_string_lossy().to_string();
    let json = run(
        root,
        &["images", "--no-verify", "--force", "--progress", "json"],
        &[("GITHUB_STEP_SUMMARY", summary_env.as_str())],
    );
    assert!(json.status.success(), "{}", stderr(&json));
    assert!(json.stdout.is_empty(), "stdout is for --json only");
    let events = json_lines(&stderr(&json));
    assert!(events
        .iter()
        .all(|e| e["schema"] == 1 && e["elapsed_ms"].is_u64()));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} event: {kinds:?}"))
    };
    assert!(at("plan") < at("started") && at("started") < at("step"));
    assert!(at("step") < at("finished") && at("finished") < at("summary"));
    assert!(!kinds.contains(&"log"), "log lines need -vv: {kinds:?}");
    let plan = &events[at("plan")];
    assert_eq!(plan["images"][0]["service"], "a");
    assert_eq!(plan["images"][0]["action"], "build");
    let finished = &events[at("finished")];
    assert_eq!(finished["action"], "built");
    assert!(finished["image_id"]
        .as_str()
        .is_some_and(|i| i.starts_with("sha256:")));
    let total = &events[at("summary")];
    assert_eq!(
        (total["built"].as_u64(), total["exit_code"].as_i64()),
        (Some(1), Some(0))
    );
    let md = std::fs::read_to_string(&summary).expect("the job summary was written");
    assert!(
        md.contains("| service | image | key | plan | result | time | why |"),
        "{md}"
    );
    assert!(
        md.lines()
            .any(|l| l.starts_with("| a | ") && l.contains("| build | built |")),
        "{md}"
    );

    // Plain lines with -v: the decisions (cached, and its key), then the summary.
    let plain = run(
        root,
        &["images", "--no-verify", "-v", "--progress", "plain"],
        &[],
    );
    assert!(plain.status.success(), "{}", stderr(&plain));
    let text = stderr(&plain);
    assert!(text.contains("   a is cached (key "), "{text}");
    assert!(text.contains("   cached a"), "{text}");
    assert!(text.contains("0 built, 1 cached"), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    // The job summary grows by one run.
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert_eq!(md.matches("### cargo xtask images").count(), 1);

    // -q: nothing at all on success.
    let quiet = run(root, &["images", "--no-verify", "-q"], &[]);
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "");

    // `tty` where there is none: plain lines, with a warning.
    let no_tty = run(root, &["images", "--no-verify", "--progress", "tty"], &[]);
    let text = stderr(&no_tty);
    assert!(
        text.starts_with("warning: --progress tty: stderr is not a terminal"),
        "{text}"
    );
    assert!(text.contains("   cached a"), "{text}");

    // On a terminal, --progress plain draws no bars; NO_COLOR bars have no colour.
    let plain_tty = xtask_tty(
        root,
        &["images", "--no-verify", "--force", "--progress", "plain"],
        &[],
    );
    assert!(plain_tty.status.success(), "{}", plain_tty.tty);
    assert!(!plain_tty.tty.contains("\x1b[2K"), "{:?}", plain_tty.tty);
    assert!(
        plain_tty.tty.contains("   building a"),
        "{:?}",
        plain_tty.tty
    );
    let no_colour = xtask_tty(
        root,
        &["images", "--no-verify", "--force"],
        &[("NO_COLOR", "1")],
    );
    assert!(no_colour.status.success(), "{}", no_colour.tty);
    assert!(no_colour.tty.contains("\x1b[2K"), "{:?}", no_colour.tty);
    assert!(!no_colour.tty.contains("\x1b[36m"), "{:?}", no_colour.tty);
}
