//! Measuring: child processes timed from spawn to exit (their peak memory through GNU
//! `/usr/bin/time`), the machine's floors over a list of files (a parallel `lstat` sweep and a
//! parallel read-and-blake3), and the statistics of samples.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// GNU time, which reports a child's peak RSS (`%M`, KiB) from `wait4`'s rusage.
pub const TIME: &str = "/usr/bin/time";

/// A command to run as a child process, by argument vector (no shell).
#[derive(Debug, Clone)]
pub struct Proc {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

/// One run of a child.
#[derive(Debug)]
pub struct Outcome {
    /// From spawn to exit.
    pub wall: Duration,
    /// Peak resident set size, when measured.
    pub peak_rss_kib: Option<u64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Proc {
    pub fn new(program: impl Into<PathBuf>) -> Proc {
        Proc {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Proc {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Proc {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Proc {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Proc {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The command line, for messages and the results file.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self, time_out: Option<&Path>) -> Command {
        let mut c = match time_out {
            Some(out) => {
                let mut c = Command::new(TIME);
                c.arg("-f").arg("%M").arg("-o").arg(out).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        c.args(&self.args);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c.env_remove("IMAGES_ROOT").env_remove("IMAGES_CACHE_DIR");
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs to completion; a non-zero exit is an error carrying the command, its status and the
    /// tail of its stderr. With `memory`, runs it under `/usr/bin/time` to read its peak RSS
    /// (GNU time's own overhead is then included in `wall`).
    pub fn run(&self, memory: bool, scratch: &Path) -> anyhow::Result<Outcome> {
        let time_out = memory.then(|| scratch.join("time.out"));
        let mut cmd = self.command(time_out.as_deref());
        let t = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("failed to run `{}`", self.display()))?;
        let wall = t.elapsed();
        if !out.status.success() {
            anyhow::bail!(
                "`{}` failed ({}):\n{}",
                self.display(),
                out.status,
                tail(&out.stderr, 20)
            );
        }
        let peak_rss_kib = match &time_out {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("failed to read `{}`", p.display()))?;
                let kib = text
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().parse::<u64>().ok())
                    .with_context(|| {
                        format!(
                            "`{TIME} -f %M` wrote no peak RSS in `{}`: {text}",
                            p.display()
                        )
                    })?;
                Some(kib)
            }
            None => None,
        };
        Ok(Outcome {
            wall,
            peak_rss_kib,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// The last `n` lines of some output, indented.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fails loudly when GNU time is missing: peak memory is part of the benchmark.
pub fn check_time() -> anyhow::Result<()> {
    let ok = Command::new(TIME)
        .args(["-f", "%M", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        anyhow::bail!(
            "`{TIME}` (GNU time) is needed to measure peak memory\n  hint: `apt-get install time`"
        );
    }
    Ok(())
}

/// The files a floor runs over: absolute paths, and whether each is a symlink.
pub struct FileSet {
    pub paths: Vec<PathBuf>,
    pub symlink: Vec<bool>,
}

/// Runs `work` over every index of `n` items on `threads` threads, handing out batches of 64
/// (work stealing, as rayon does); `work` returns a value folded with xor so nothing is elided.
fn parallel(
    n: usize,
    threads: usize,
    work: &(dyn Fn(usize, &mut Vec<u8>) -> std::io::Result<u64> + Sync),
) -> anyhow::Result<(Duration, u64)> {
    const BATCH: usize = 64;
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let results: Vec<std::io::Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> std::io::Result<u64> {
                    let mut buf = Vec::new();
                    let mut acc = 0u64;
                    loop {
                        let start = next.fetch_add(BATCH, Ordering::Relaxed);
                        if start >= n {
                            return Ok(acc);
                        }
                        for i in start..(start + BATCH).min(n) {
                            acc ^= work(i, &mut buf)?;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a floor thread panicked")))
            })
            .collect()
    });
    let wall = t.elapsed();
    let mut acc = 0;
    for r in results {
        acc ^= r.context("a floor measurement failed")?;
    }
    Ok((wall, std::hint::black_box(acc)))
}

/// The stat floor: `lstat` of every file, in parallel.
pub fn stat_floor(files: &FileSet, threads: usize) -> anyhow::Result<Duration> {
    let work = |i: usize, _: &mut Vec<u8>| -> std::io::Result<u64> {
        let m = std::fs::symlink_metadata(&files.paths[i])?;
        Ok(m.len())
    };
    Ok(parallel(files.paths.len(), threads, &work)?.0)
}

/// The read-and-hash floor: open, read and blake3 every file (a symlink: its target), in
/// parallel, with one reused buffer per thread.
pub fn hash_floor(files: &FileSet, threads: usize) -> anyhow::Result<Duration> {
    let work = |i: usize, buf: &mut Vec<u8>| -> std::io::Result<u64> {
        use std::io::Read as _;
        let p = &files.paths[i];
        let digest = if files.symlink[i] {
            let t = std::fs::read_link(p)?;
            engine::digest::FileDigest::of_bytes(t.as_os_str().as_encoded_bytes())
        } else {
            buf.clear();
            std::fs::File::open(p)?.read_to_end(buf)?;
            engine::digest::FileDigest::of_bytes(buf)
        };
        Ok(u64::from(digest.as_bytes()[0]))
    };
    Ok(parallel(files.paths.len(), threads, &work)?.0)
}

/// Median, min and max of samples, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Stats::of_ms(&ms)
    }

    pub fn of_ms(ms: &[f64]) -> Option<Stats> {
        if ms.is_empty() {
            return None;
        }
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median_ms: round3(median),
            min_ms: round3(sorted[0]),
            max_ms: round3(sorted[n - 1]),
            samples_ms: ms.iter().map(|v| round3(*v)).collect(),
        })
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let d = |ms: u64| Duration::from_millis(ms);
        let s = Stats::of(&[d(5), d(1), d(3)]).expect("stats");
        assert_eq!((s.median_ms, s.min_ms, s.max_ms), (3.0, 1.0, 5.0));
        let s = Stats::of(&[d(4), d(1), d(3), d(2)]).expect("stats");
        assert_eq!(s.median_ms, 2.5);
        assert!(Stats::of(&[]).is_none());
    }
}
