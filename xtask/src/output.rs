//! Output helpers shared by the commands: errors, warnings, notes, JSON documents, tables.

use std::io::IsTerminal;

use anyhow::Context as _;

/// Prints an error with its chain of causes, cargo style.
pub fn error(e: &anyhow::Error) {
    let red = std::io::stderr().is_terminal();
    let label = if red {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    eprintln!("{label}: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

pub fn warn(msg: &str) {
    let yellow = std::io::stderr().is_terminal();
    let label = if yellow {
        "\x1b[1;33mwarning\x1b[0m"
    } else {
        "warning"
    };
    eprintln!("{label}: {msg}");
}

pub fn note(msg: &str) {
    eprintln!("note: {msg}");
}

/// Prints a value as one JSON document on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("failed to serialize JSON output")?;
    println!("{text}");
    Ok(())
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
