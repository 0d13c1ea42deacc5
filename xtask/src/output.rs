//! Output shared by the commands: how much to say (`-q`, `-v`, `-vv`) and whether to colour
//! (anstream: `--color`, `NO_COLOR`, `CLICOLOR_FORCE`, a terminal), errors (text on stderr and,
//! with `--json`, a JSON error object on stdout), warnings, notes, JSON documents (each with its
//! `schema` version), tables.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI8, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;
use serde::Serialize;

/// The version of every JSON document and event line this CLI prints: bumped only when a
/// field changes meaning or goes away, never for an added field (see docs/json.md).
pub const SCHEMA: u32 = 1;

pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const WARN: Style = AnsiColor::Yellow.on_default().bold();
pub const NOTE: Style = AnsiColor::Cyan.on_default().bold();

/// When to colour (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set (or `CLICOLOR=0`); `CLICOLOR_FORCE` forces it
    Auto,
    Always,
    Never,
}

/// -1 quiet, 0 normal, 1 `-v`, 2 `-vv` (and more).
static LEVEL: AtomicI8 = AtomicI8::new(0);

/// `--progress json`: everything said on stderr is a JSON event line.
static EVENTS: AtomicBool = AtomicBool::new(false);

/// When the process started (event lines say how long after it they come).
static START: OnceLock<Instant> = OnceLock::new();

/// Sets how much to say, how and when to colour, from the global flags.
pub fn configure(quiet: bool, verbose: u8, color: ColorWhen, events: bool) {
    START.get_or_init(Instant::now);
    let level = if quiet { -1 } else { verbose.min(9) as i8 };
    LEVEL.store(level, Ordering::Relaxed);
    EVENTS.store(events, Ordering::Relaxed);
    match color {
        ColorWhen::Auto => {}
        ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
        ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
    }
}

/// `-q` was given: no progress, notes or summaries, only warnings, errors and the result.
pub fn quiet() -> bool {
    LEVEL.load(Ordering::Relaxed) < 0
}

/// At least this many `-v` were given.
pub fn verbose(at: i8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= at
}

/// Whether what goes to stderr is coloured (the choice anstream makes for it).
pub fn colour_stderr() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// `--progress json` is on: stderr carries JSON event lines only.
pub fn events() -> bool {
    EVENTS.load(Ordering::Relaxed)
}

/// One event line on stderr: `{"schema","event","elapsed_ms",…fields}` (see docs/json.md).
pub fn event<T: Serialize>(kind: &str, fields: &T) {
    let mut doc = serde_json::Map::new();
    doc.insert("event".into(), kind.into());
    let elapsed = START.get().map(|s| s.elapsed().as_millis() as u64);
    doc.insert("elapsed_ms".into(), elapsed.unwrap_or(0).into());
    if let Ok(serde_json::Value::Object(f)) = serde_json::to_value(fields) {
        doc.extend(
            f.into_iter()
                .filter(|(k, _)| k != "event" && k != "elapsed_ms"),
        );
    }
    json_line(&mut std::io::stderr().lock(), &doc);
}

/// Prints an error with its chain of causes, cargo style.
pub fn error(e: &anyhow::Error) {
    if events() {
        event("error", &ErrorJson::of(e));
        return;
    }
    let mut err = anstream::stderr().lock();
    let _ = writeln!(err, "{ERROR}error{ERROR:#}: {e}");
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {cause}");
    }
}

/// One line of an error that is not the command's own failure (a build, a rule).
pub fn error_line(msg: &str) {
    if events() {
        return event("error", &serde_json::json!({ "message": msg }));
    }
    let _ = writeln!(anstream::stderr(), "{ERROR}error{ERROR:#}: {msg}");
}

pub fn warn(msg: &str) {
    if events() {
        return event("warning", &serde_json::json!({ "message": msg }));
    }
    let _ = writeln!(anstream::stderr(), "{WARN}warning{WARN:#}: {msg}");
}

/// A note (not with `-q`).
pub fn note(msg: &str) {
    if events() {
        event("note", &serde_json::json!({ "message": msg }));
    } else if !quiet() {
        let _ = writeln!(anstream::stderr(), "{NOTE}note{NOTE:#}: {msg}");
    }
}

/// A line of the story on stderr (not with `-q`).
pub fn info(msg: &str) {
    if events() {
        event("info", &serde_json::json!({ "message": msg }));
    } else if !quiet() {
        let _ = writeln!(anstream::stderr(), "{msg}");
    }
}

/// `value` as a JSON object with `"schema"` first.
pub fn with_schema<T: Serialize>(value: &T) -> anyhow::Result<serde_json::Value> {
    let value = serde_json::to_value(value).context("failed to serialize JSON output")?;
    Ok(match value {
        serde_json::Value::Object(fields) => {
            let mut doc = serde_json::Map::new();
            doc.insert("schema".into(), SCHEMA.into());
            doc.extend(fields.into_iter().filter(|(k, _)| k != "schema"));
            serde_json::Value::Object(doc)
        }
        other => other,
    })
}

/// Prints a value as one JSON document on stdout, with its `schema` version.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let doc = with_schema(value)?;
    let text = serde_json::to_string_pretty(&doc).context("failed to serialize JSON output")?;
    println!("{text}");
    Ok(())
}

/// One JSON object on one line of `out`, with its `schema` version (event streams).
pub fn json_line<T: Serialize>(out: &mut dyn std::io::Write, value: &T) {
    if let Ok(doc) = with_schema(value) {
        if let Ok(line) = serde_json::to_string(&doc) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// An error as data: what `--json` prints on stdout when a command fails.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorJson {
    /// What went wrong (without the hint).
    pub message: String,
    /// The file it is about, when known.
    pub file: Option<String>,
    /// Its line (1-based), when known.
    pub line: Option<usize>,
    /// Its column (1-based), when known.
    pub column: Option<usize>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The causes under the message, outermost first.
    pub causes: Vec<String>,
}

/// Splits a free-form message from its `\n  hint: …` (the CLI's own errors and other crates').
fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once("\n  hint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (text.to_string(), None),
    }
}

impl ErrorJson {
    /// The parts of an error: the file, line and hint of the first engine (or cache) error in
    /// its chain, from that error's fields.
    pub fn of(e: &anyhow::Error) -> ErrorJson {
        let mut doc = ErrorJson {
            message: String::new(),
            file: None,
            line: None,
            column: None,
            hint: None,
            causes: Vec::new(),
        };
        let path = |p: &Path| p.display().to_string();
        for (i, cause) in e.chain().enumerate() {
            let (message, hint) = if let Some(err) = cause.downcast_ref::<engine::Error>() {
                if doc.file.is_none() {
                    doc.file = err.file().map(path);
                    doc.line = err.line();
                    doc.column = err.column();
                }
                (err.message(), err.hint())
            } else if let Some(err) = cause.downcast_ref::<cache::Error>() {
                if doc.file.is_none() {
                    doc.file = err.path().map(path);
                }
                let full = err.to_string();
                let m = split_hint(&full).0;
                (m, err.hint().map(str::to_string))
            } else {
                split_hint(&cause.to_string())
            };
            if doc.hint.is_none() {
                doc.hint = hint;
            }
            if i == 0 {
                doc.message = message;
            } else {
                doc.causes.push(message);
            }
        }
        doc
    }
}

/// Prints `{"schema":…,"error":{…}}` on stdout.
pub fn error_json(e: &anyhow::Error) {
    let _ = json(&serde_json::json!({ "error": ErrorJson::of(e) }));
}

/// A table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_comes_first_and_fields_keep_their_order() {
        let doc = with_schema(&serde_json::json!({"images": [], "engine_checked": true}))
            .expect("serialized");
        let keys: Vec<&String> = doc.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["schema", "images", "engine_checked"]);
        assert_eq!(doc["schema"], SCHEMA);
    }

    #[test]
    fn an_engine_error_gives_its_file_line_and_hint() {
        let e: anyhow::Error = engine::Error::Json {
            path: "/m/a/package.json".into(),
            line: 3,
            column: 5,
            message: "expected `,`".into(),
        }
        .into();
        let e = e.context("failed to analyse the workspace");
        let doc = ErrorJson::of(&e);
        assert_eq!(doc.message, "failed to analyse the workspace");
        assert_eq!(doc.file.as_deref(), Some("/m/a/package.json"));
        assert_eq!((doc.line, doc.column), (Some(3), Some(5)));
        assert!(doc.hint.is_some_and(|h| h.contains("valid JSON")));
        assert_eq!(
            doc.causes,
            ["invalid JSON in `/m/a/package.json` at line 3, column 5: expected `,`"]
        );
        let plain = anyhow::anyhow!("no base\n  hint: pass --base REF");
        let doc = ErrorJson::of(&plain);
        assert_eq!(doc.message, "no base");
        assert_eq!(doc.hint.as_deref(), Some("pass --base REF"));
        assert_eq!(doc.file, None);
    }
}
