//! The YAML writer of pruned lockfiles: the output of pnpm's lockfile writer (its fork of
//! js-yaml's `dump` with `blankLines: true, lineWidth: -1, noCompatMode: true, noRefs: true,
//! sortKeys: false`).

use std::fmt::Write as _;

use super::{key_string, Mapping, Value};

/// The documents, separated as pnpm 11 does: `---\n<doc>\n---\n<doc>` (one document: as is).
pub(super) fn documents(documents: &[&Value]) -> String {
    let texts: Vec<String> = documents.iter().map(|d| document(d)).collect();
    if texts.len() == 1 {
        return texts.concat();
    }
    format!("---\n{}", texts.join("\n---\n"))
}

/// One document, ending with a newline.
pub(super) fn document(value: &Value) -> String {
    let mut text = node(0, value, true, true, false, None);
    text.push('\n');
    text
}

/// js-yaml's `writeNode`. `single_line` is its `iskey`: the scalar must fit on one line.
fn node(
    level: usize,
    value: &Value,
    block: bool,
    compact: bool,
    single_line: bool,
    key: Option<&str>,
) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => scalar(s, level, single_line, block),
        Value::Sequence(seq) => {
            let flow = key.is_some_and(is_single_line_key);
            if block && !seq.is_empty() && !flow {
                block_sequence(level, seq, compact)
            } else {
                let items: Vec<String> = seq
                    .iter()
                    .map(|v| node(level, v, false, false, true, None))
                    .collect();
                format!("[{}]", items.join(", "))
            }
        }
        Value::Mapping(map) => {
            let flow = key.is_some_and(|k| {
                is_single_line_key(k)
                    || (k == "resolution"
                        && !matches!(
                            map.get("type").and_then(Value::as_str),
                            Some("variations" | "binary")
                        ))
            });
            if block && !map.is_empty() && !flow {
                let double =
                    level == 0 || matches!(key, Some("packages" | "importers" | "snapshots"));
                block_mapping(level, map, compact, double)
            } else {
                flow_mapping(level, map)
            }
        }
        Value::Tagged(t) => node(level, &t.value, block, compact, single_line, key),
    }
}

fn is_single_line_key(key: &str) -> bool {
    matches!(key, "cpu" | "engines" | "os" | "libc")
}

fn next_line(level: usize, double: bool) -> String {
    let mut s = String::from(if double { "\n\n" } else { "\n" });
    s.push_str(&" ".repeat(2 * level));
    s
}

fn block_mapping(level: usize, map: &Mapping, compact: bool, double: bool) -> String {
    let mut out = String::new();
    for (k, v) in map {
        let key = key_string(k);
        if !compact || !out.is_empty() {
            out.push_str(&next_line(level, double));
        }
        let key_text = scalar(&key, level + 1, true, true);
        let explicit = key_text.encode_utf16().count() > 1024;
        if explicit {
            out.push_str("? ");
        }
        out.push_str(&key_text);
        if explicit {
            out.push_str(&next_line(level, false));
        }
        let value_text = node(level + 1, v, true, explicit, false, Some(&key));
        out.push_str(if value_text.starts_with('\n') {
            ":"
        } else {
            ": "
        });
        out.push_str(&value_text);
    }
    if out.is_empty() {
        "{}".to_string()
    } else {
        out
    }
}

fn flow_mapping(level: usize, map: &Mapping) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let key_text = scalar(&key_string(k), level, true, false);
        if key_text.encode_utf16().count() > 1024 {
            out.push_str("? ");
        }
        out.push_str(&key_text);
        out.push_str(": ");
        out.push_str(&node(level, v, false, false, true, None));
    }
    out.push('}');
    out
}

fn block_sequence(level: usize, seq: &[Value], compact: bool) -> String {
    let mut out = String::new();
    for item in seq {
        let text = node(level + 1, item, true, true, false, None);
        if !compact || !out.is_empty() {
            out.push_str(&next_line(level, false));
        }
        out.push_str(if text.starts_with('\n') { "-" } else { "- " });
        out.push_str(&text);
    }
    if out.is_empty() {
        "[]".to_string()
    } else {
        out
    }
}

/// js-yaml's representation of numbers (JavaScript's `toString`).
fn number(n: &serde_norway::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    if f == 0.0 && f.is_sign_negative() {
        return "-0.0".to_string();
    }
    let abs = f.abs();
    if abs >= 1e21 || abs < 1e-6 && abs != 0.0 {
        // JavaScript: `1e+21`, `1.5e-7`; js-yaml then adds a dot to a mantissa without one.
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent = if exponent.starts_with('-') {
            exponent.to_string()
        } else {
            format!("+{exponent}")
        };
        let dot = if mantissa.contains('.') { "" } else { "." };
        return format!("{mantissa}{dot}e{exponent}");
    }
    format!("{f}")
}

#[derive(Debug, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// js-yaml's `writeScalar` for a string.
pub(super) fn scalar(s: &str, level: usize, single_line: bool, in_block: bool) -> String {
    if s.is_empty() {
        return "''".to_string();
    }
    match style(s, single_line, in_block) {
        Style::Plain => s.to_string(),
        Style::Single => format!("'{}'", s.replace('\'', "''")),
        Style::Double => format!("\"{}\"", escape(s)),
        Style::Literal => {
            let indent = 2 * level.max(1);
            let mut body = indent_lines(s, indent);
            if body.ends_with('\n') {
                body.pop();
            }
            format!("|{}{body}", block_header(s))
        }
    }
}

/// js-yaml's `chooseScalarStyle` with no line width (pnpm's `lineWidth: -1`).
fn style(s: &str, single_line: bool, in_block: bool) -> Style {
    let first = s.chars().next().map_or(0, u32::from);
    let last = s.chars().next_back().map_or(0, u32::from);
    let mut plain = is_plain_safe_first(first) && is_plain_safe_last(last);
    let mut has_line_break = false;
    let mut prev = None;
    for c in s.chars().map(u32::from) {
        if !single_line && c == 0x0A {
            has_line_break = true;
        } else if !is_printable(c) {
            return Style::Double;
        }
        plain = plain && is_plain_safe(c, prev, in_block);
        prev = Some(c);
    }
    if has_line_break {
        // js-yaml would write `|+` here, whose content takes in the blank lines that pnpm's
        // writer puts after some entries: double quotes read back exactly.
        if s.ends_with("\n\n") || s == "\n" {
            Style::Double
        } else {
            Style::Literal
        }
    } else if plain && !is_ambiguous(s) {
        Style::Plain
    } else {
        Style::Single
    }
}

fn is_whitespace(c: u32) -> bool {
    c == 0x20 || c == 0x09
}

fn is_printable(c: u32) -> bool {
    (0x20..=0x7E).contains(&c)
        || ((0xA1..=0xD7FF).contains(&c) && c != 0x2028 && c != 0x2029)
        || ((0xE000..=0xFFFD).contains(&c) && c != 0xFEFF)
        || (0x10000..=0x10FFFF).contains(&c)
}

fn is_ns_char_or_whitespace(c: u32) -> bool {
    is_printable(c) && c != 0xFEFF && c != 0x0D && c != 0x0A
}

/// js-yaml's `isPlainSafe`, except that `:` followed by one of `,?[]{}` is not safe in flow
/// context (js-yaml writes `{a: b:{}` there, which libyaml refuses to read).
fn is_plain_safe(c: u32, prev: Option<u32>, in_block: bool) -> bool {
    let c_ns_or_ws = is_ns_char_or_whitespace(c);
    let c_ns = c_ns_or_ws && !is_whitespace(c);
    let prev_colon = prev == Some(u32::from(':'));
    let flow_indicator = matches!(char::from_u32(c), Some(',' | '[' | ']' | '{' | '}'));
    if !in_block && prev_colon && (flow_indicator || c == u32::from('?')) {
        return false;
    }
    let sharp = c == u32::from('#');
    // ns-plain-safe: any ns-char in block context, no flow indicator in flow context.
    let plain_safe = c_ns_or_ws && (in_block || !flow_indicator);
    let after_ns_char = prev.is_some_and(|p| is_ns_char_or_whitespace(p) && !is_whitespace(p));
    (plain_safe && !sharp && !prev_colon) || (after_ns_char && sharp) || (prev_colon && c_ns)
}

fn is_plain_safe_first(c: u32) -> bool {
    is_printable(c)
        && c != 0xFEFF
        && !is_whitespace(c)
        && !matches!(
            char::from_u32(c),
            Some(
                '-' | '?'
                    | ':'
                    | ','
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '#'
                    | '&'
                    | '*'
                    | '!'
                    | '|'
                    | '='
                    | '>'
                    | '\''
                    | '"'
                    | '%'
                    | '@'
                    | '`'
            )
        )
}

fn is_plain_safe_last(c: u32) -> bool {
    !is_whitespace(c) && c != u32::from(':')
}

/// Whether a plain scalar would be read as something other than a string by js-yaml's default
/// schema (null, bool, int, float, timestamp, merge), or by serde_norway (which reads a few
/// more spellings of numbers, e.g. `+.5`: quoting those too keeps the text readable back).
pub(super) fn is_ambiguous(s: &str) -> bool {
    s.parse::<serde_norway::Number>().is_ok()
        || matches!(
            s,
            "~" | "null"
                | "Null"
                | "NULL"
                | "true"
                | "True"
                | "TRUE"
                | "false"
                | "False"
                | "FALSE"
                | "<<"
        )
        || is_yaml_int(s)
        || is_yaml_float(s)
        || is_yaml_timestamp(s)
}

/// js-yaml's `resolveYamlInteger`.
fn is_yaml_int(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    if b[0] == b'-' || b[0] == b'+' {
        i = 1;
    }
    let radix_digits = |rest: &[u8], ok: fn(u8) -> bool| -> bool {
        let mut has_digits = false;
        for &c in rest {
            if c == b'_' {
                continue;
            }
            if !ok(c) {
                return false;
            }
            has_digits = true;
        }
        has_digits && rest.last() != Some(&b'_')
    };
    if b.get(i) == Some(&b'0') {
        if i + 1 == b.len() {
            return true;
        }
        i += 1;
        match b[i] {
            b'b' => return radix_digits(&b[i + 1..], |c| c == b'0' || c == b'1'),
            b'x' => return radix_digits(&b[i + 1..], |c| c.is_ascii_hexdigit()),
            b'o' => return radix_digits(&b[i + 1..], |c| (b'0'..=b'7').contains(&c)),
            _ => {}
        }
    }
    if b.get(i) == Some(&b'_') {
        return false;
    }
    let rest = &b[i.min(b.len())..];
    let mut has_digits = false;
    for &c in rest {
        if c == b'_' {
            continue;
        }
        if !c.is_ascii_digit() {
            return false;
        }
        has_digits = true;
    }
    has_digits && rest.last() != Some(&b'_')
}

/// js-yaml's `YAML_FLOAT_PATTERN`, and no `_` at the end.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    if b.last() == Some(&b'_') {
        return false;
    }
    let digits = |i: &mut usize, extra: u8| {
        let start = *i;
        while *i < b.len() && (b[*i].is_ascii_digit() || b[*i] == extra) {
            *i += 1;
        }
        *i > start
    };
    let exponent = |i: &mut usize| -> bool {
        if *i < b.len() && (b[*i] == b'e' || b[*i] == b'E') {
            *i += 1;
            if *i < b.len() && (b[*i] == b'-' || b[*i] == b'+') {
                *i += 1;
            }
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            return *i > start;
        }
        true
    };
    // [-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
    let first = {
        let mut i = 0;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if i < b.len() && b[i].is_ascii_digit() {
            digits(&mut i, b'_');
            if i < b.len() && b[i] == b'.' {
                i += 1;
                digits(&mut i, b'_');
            }
            exponent(&mut i) && i == b.len()
        } else {
            false
        }
    };
    // \.[0-9_]+(?:[eE][-+]?[0-9]+)?
    let second = {
        let mut i = 0;
        if b.first() == Some(&b'.') {
            i += 1;
            digits(&mut i, b'_') && exponent(&mut i) && i == b.len()
        } else {
            false
        }
    };
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    first
        || second
        || matches!(unsigned, ".inf" | ".Inf" | ".INF")
        || matches!(s, ".nan" | ".NaN" | ".NAN")
}

/// js-yaml's `YAML_DATE_REGEXP` and `YAML_TIMESTAMP_REGEXP`.
fn is_yaml_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, min: usize, max: usize| -> bool {
        let start = *i;
        while *i < b.len() && *i - start < max && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start >= min
    };
    let byte = |i: &mut usize, c: u8| -> bool {
        if b.get(*i) == Some(&c) {
            *i += 1;
            true
        } else {
            false
        }
    };
    // YYYY-MM-DD exactly
    if b.len() == 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
    {
        return true;
    }
    if !(digits(&mut i, 4, 4)
        && byte(&mut i, b'-')
        && digits(&mut i, 1, 2)
        && byte(&mut i, b'-')
        && digits(&mut i, 1, 2))
    {
        return false;
    }
    if !(byte(&mut i, b'T') || byte(&mut i, b't')) {
        let start = i;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if !(digits(&mut i, 1, 2)
        && byte(&mut i, b':')
        && digits(&mut i, 2, 2)
        && byte(&mut i, b':')
        && digits(&mut i, 2, 2))
    {
        return false;
    }
    if byte(&mut i, b'.') {
        digits(&mut i, 0, usize::MAX);
    }
    if i == b.len() {
        return true;
    }
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if byte(&mut i, b'Z') {
        return i == b.len();
    }
    if !(byte(&mut i, b'-') || byte(&mut i, b'+')) || !digits(&mut i, 1, 2) {
        return false;
    }
    if byte(&mut i, b':') && !digits(&mut i, 2, 2) {
        return false;
    }
    i == b.len()
}

/// js-yaml's `escapeString` for double-quoted scalars.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        let c = u32::from(ch);
        let seq = match c {
            0x00 => Some("\\0"),
            0x07 => Some("\\a"),
            0x08 => Some("\\b"),
            0x09 => Some("\\t"),
            0x0A => Some("\\n"),
            0x0B => Some("\\v"),
            0x0C => Some("\\f"),
            0x0D => Some("\\r"),
            0x1B => Some("\\e"),
            0x22 => Some("\\\""),
            0x5C => Some("\\\\"),
            0x85 => Some("\\N"),
            0xA0 => Some("\\_"),
            0x2028 => Some("\\L"),
            0x2029 => Some("\\P"),
            _ => None,
        };
        match seq {
            Some(seq) => out.push_str(seq),
            None if is_printable(c) => out.push(ch),
            None if c <= 0xFF => {
                let _ = write!(out, "\\x{c:02X}");
            }
            None if c <= 0xFFFF => {
                let _ = write!(out, "\\u{c:04X}");
            }
            None => {
                let _ = write!(out, "\\U{c:08X}");
            }
        }
    }
    out
}

/// js-yaml's `blockHeader`: indentation indicator and chomping of a literal scalar (never `+`:
/// such strings are double-quoted).
fn block_header(s: &str) -> String {
    let indicator = if s.trim_start_matches('\n').starts_with(' ') {
        "2"
    } else {
        ""
    };
    let chomp = if s.ends_with('\n') { "" } else { "-" };
    format!("{indicator}{chomp}\n")
}

/// js-yaml's `indentString`: indents every non-empty line.
fn indent_lines(s: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        if !line.is_empty() && line != "\n" {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    out
}
