//! The results of `cargo xtask bench`: the series measured, the ratios against the targets, and
//! their rendering as one JSON document and as markdown tables.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::measure::Stats;
use super::ours::Phases;
use super::synth::{Spec, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The engine.
    Ours,
    /// The machine's floor on the same files.
    Floor,
    /// A reference figure (the issue's `find` floor).
    Reference,
    /// An alternative a user would pick instead.
    Peer,
}

/// Samples of one measurement, gathered over the runs.
#[derive(Debug)]
pub struct Raw {
    pub id: &'static str,
    pub name: String,
    pub kind: Kind,
    pub command: Option<String>,
    pub samples: Vec<Duration>,
    pub peak_rss_kib: Option<u64>,
    pub files_read: Vec<usize>,
    pub phases: Vec<Phases>,
}

impl Raw {
    pub fn new(
        id: &'static str,
        name: impl Into<String>,
        kind: Kind,
        command: Option<String>,
    ) -> Raw {
        Raw {
            id,
            name: name.into(),
            kind,
            command,
            samples: Vec::new(),
            peak_rss_kib: None,
            files_read: Vec::new(),
            phases: Vec::new(),
        }
    }

    pub fn finish(&self) -> Option<Series> {
        let stats = Stats::of(&self.samples)?;
        let med = |f: fn(&Phases) -> f64| {
            Stats::of_ms(&self.phases.iter().map(f).collect::<Vec<_>>()).map(|s| s.median_ms)
        };
        let phases_ms = if self.phases.is_empty() {
            None
        } else {
            Some(Phases {
                discover: med(|p| p.discover).unwrap_or(0.0),
                list: med(|p| p.list).unwrap_or(0.0),
                hash: med(|p| p.hash).unwrap_or(0.0),
                keys: med(|p| p.keys).unwrap_or(0.0),
                rest: med(|p| p.rest).unwrap_or(0.0),
            })
        };
        Some(Series {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            command: self.command.clone(),
            stats,
            peak_rss_mib: self
                .peak_rss_kib
                .map(|k| super::measure::round3(k as f64 / 1024.0)),
            files_read: self.files_read.last().copied(),
            phases_ms,
        })
    }
}

/// One measurement: the medians of its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub id: &'static str,
    pub name: String,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
    /// Peak RSS of the warm-up run (through `/usr/bin/time`).
    pub peak_rss_mib: Option<f64>,
    /// Files the engine read (not answered by its stat cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_read: Option<usize>,
    /// The engine's phases (`-v`), medians.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<Phases>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    /// `x` for a ratio, ` MB` for memory.
    pub unit: &'static str,
    /// The target, as text (`<= 1.5`), if there is one.
    pub target: Option<String>,
    pub met: Option<bool>,
}

impl Ratio {
    /// `num / den`, checked against `at_most` or `at_least`.
    pub fn of(
        name: &str,
        num: f64,
        den: f64,
        at_most: Option<f64>,
        at_least: Option<f64>,
    ) -> Ratio {
        let value = if den > 0.0 {
            super::measure::round3(num / den)
        } else {
            f64::INFINITY
        };
        let (target, met) = match (at_most, at_least) {
            (Some(m), _) => (Some(format!("<= {m}")), Some(value <= m)),
            (_, Some(l)) => (Some(format!(">= {l}")), Some(value >= l)),
            _ => (None, None),
        };
        Ratio {
            name: name.to_string(),
            value,
            unit: "x",
            target,
            met,
        }
    }

    /// A peak RSS in MB (10^6 bytes), checked against `under` MB.
    pub fn memory(name: &str, kib: u64, under: f64) -> Ratio {
        let value = super::measure::round3(kib as f64 * 1024.0 / 1e6);
        Ratio {
            name: name.to_string(),
            value,
            unit: " MB",
            target: Some(format!("< {under} MB")),
            met: Some(value < under),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SizeResult {
    pub size: &'static str,
    pub spec: Spec,
    pub generated: Summary,
    /// Seconds to write the tree and commit it to git (when generated in this run).
    pub generate_s: Option<f64>,
    pub reused: bool,
    /// The distinct files of every context (what the engine stats and hashes; the floors' set).
    pub context_files: usize,
    pub context_bytes: u64,
    /// The sum over services of their context's file count.
    pub context_entries: usize,
    pub threads: usize,
    pub series: Vec<Series>,
    pub ratios: Vec<Ratio>,
}

#[derive(Debug, Serialize)]
pub struct DockerResult {
    pub example: String,
    pub docker: String,
    pub compose: String,
    pub series: Vec<Series>,
    pub ratios: Vec<Ratio>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub mem_total_mib: Option<u64>,
    pub kernel: Option<String>,
    pub filesystem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub format: u32,
    pub date: String,
    pub machine: Machine,
    pub engine_binary: String,
    pub git_commit: Option<String>,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub sizes: Vec<SizeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<super::layout::LayoutResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub speed: Vec<super::fresh::SpeedResult>,
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn fmt_n(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn series_table(out: &mut String, series: &[Series]) {
    out.push_str("| measurement | median | min | max | peak RSS | files read |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for s in series {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            s.name,
            fmt_ms(s.stats.median_ms),
            fmt_ms(s.stats.min_ms),
            fmt_ms(s.stats.max_ms),
            s.peak_rss_mib
                .map(|m| format!("{m:.0} MiB"))
                .unwrap_or_else(|| "-".into()),
            s.files_read.map(fmt_n).unwrap_or_else(|| "-".into()),
        );
    }
}

pub(super) fn ratio_table(out: &mut String, ratios: &[Ratio]) {
    out.push_str("\n| ratio | value | target | met |\n| --- | ---: | --- | --- |\n");
    for r in ratios {
        let _ = writeln!(
            out,
            "| {} | {:.2}{} | {} | {} |",
            r.name,
            r.value,
            r.unit,
            r.target.as_deref().unwrap_or("-"),
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
}

/// The results as markdown: one section per size, then the Docker comparison.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "# cargo xtask bench: {}\n\nMachine: {} CPUs ({}), {} MiB RAM, Linux {}, filesystem {}. Engine: `{}` at {}. {} measured runs per figure after one warm-up run (medians; peak RSS from the warm-up run, through `/usr/bin/time`).{}\n",
        r.date,
        m.cpus,
        m.cpu_model.as_deref().unwrap_or("unknown model"),
        m.mem_total_mib.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        m.kernel.as_deref().unwrap_or("?"),
        m.filesystem.as_deref().unwrap_or("?"),
        r.engine_binary,
        r.git_commit.as_deref().unwrap_or("an unknown commit"),
        r.runs,
        r.peer.as_ref().map(|p| format!(" Peer: {p}.")).unwrap_or_default(),
    );
    for s in &r.sizes {
        let _ = writeln!(
            out,
            "## {}: {} services, {} source files, {} ignored files in node_modules ({} symlinks)\n",
            s.size,
            s.spec.services,
            fmt_n(s.generated.source_files),
            fmt_n(s.generated.ignored_files),
            fmt_n(s.generated.symlinks),
        );
        let _ = writeln!(
            out,
            "The engine considers {} distinct files ({:.1} MiB; {} entries over the {} contexts); floors on {} threads over exactly those files. Tree {}.\n",
            fmt_n(s.context_files),
            s.context_bytes as f64 / (1024.0 * 1024.0),
            fmt_n(s.context_entries),
            s.spec.services,
            s.threads,
            match (s.reused, s.generate_s) {
                (true, _) => "reused from an earlier run".to_string(),
                (false, Some(t)) => format!("generated and committed to git in {t:.1} s"),
                (false, None) => "generated".to_string(),
            }
        );
        series_table(&mut out, &s.series);
        let phases: Vec<&Series> = s.series.iter().filter(|x| x.phases_ms.is_some()).collect();
        if !phases.is_empty() {
            out.push_str("\nWhere the engine's time goes (medians of `-v`; *rest* is process start, plan, output):\n\n");
            out.push_str("| scenario | discover | list | hash | keys | rest |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
            for x in phases {
                if let Some(p) = &x.phases_ms {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        x.name,
                        fmt_ms(p.discover),
                        fmt_ms(p.list),
                        fmt_ms(p.hash),
                        fmt_ms(p.keys),
                        fmt_ms(p.rest)
                    );
                }
            }
        }
        ratio_table(&mut out, &s.ratios);
        out.push('\n');
    }
    if let Some(d) = &r.docker {
        let _ = writeln!(
            out,
            "## Docker: the example ({}) with a real engine\n\nDocker {}; compose: {}.\n",
            d.example, d.docker, d.compose
        );
        series_table(&mut out, &d.series);
        ratio_table(&mut out, &d.ratios);
        out.push('\n');
    }
    if let Some(l) = &r.layout {
        super::layout::markdown(&mut out, l);
    }
    for s in &r.speed {
        super::fresh::markdown(&mut out, s);
    }
    // Each distinct command once, with the measurements that ran it.
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for s in r
        .sizes
        .iter()
        .flat_map(|s| &s.series)
        .chain(r.docker.iter().flat_map(|d| &d.series))
        .chain(r.layout.iter().flat_map(|l| &l.series))
        .chain(r.speed.iter().flat_map(|l| &l.series))
    {
        if let Some(c) = &s.command {
            let c = c.replace('\n', "\\n");
            match commands.iter_mut().find(|(x, _)| *x == c) {
                Some((_, names)) => {
                    if !names.contains(&s.name) {
                        names.push(s.name.clone());
                    }
                }
                None => commands.push((c, vec![s.name.clone()])),
            }
        }
    }
    if !commands.is_empty() {
        out.push_str("Commands:\n\n");
        for (c, names) in commands {
            let _ = writeln!(out, "- `{c}`: {}", names.join("; "));
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM UTC` for a time since the epoch.
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, mi) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_numbers() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_600), "2000-02-29 01:00 UTC");
        assert_eq!(fmt_n(1_234_567), "1,234,567");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_ms(1234.0), "1.23 s");
        assert_eq!(fmt_ms(5.24), "5.2 ms");
    }

    #[test]
    fn ratios_check_their_targets() {
        assert_eq!(Ratio::of("a", 3.0, 2.0, Some(1.5), None).met, Some(true));
        assert_eq!(Ratio::of("a", 4.0, 2.0, Some(1.5), None).met, Some(false));
        assert_eq!(Ratio::of("b", 4.0, 1.0, None, Some(2.0)).met, Some(true));
        assert_eq!(Ratio::of("c", 1.0, 1.0, None, None).met, None);
    }
}
