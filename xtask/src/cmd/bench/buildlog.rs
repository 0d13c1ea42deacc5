//! Where a build's time went, from BuildKit's own plain progress log (as a record keeps it): the
//! steps it found `CACHED`, the steps it ran and how long each took, the cache import, the export.

use std::collections::BTreeMap;

/// One build's log, summed up.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Breakdown {
    /// Dockerfile steps found in the cache.
    pub cached: usize,
    /// Dockerfile steps that ran, with their time in seconds, in BuildKit's vertex order.
    pub ran: Vec<(String, f64)>,
    /// Importing the cache manifests (`--cache-from`): they are fetched side by side, so the
    /// longest one.
    pub import_s: f64,
    /// `exporting to image`.
    pub export_image_s: f64,
    /// `exporting cache` (inline cache metadata).
    pub export_cache_s: f64,
}

impl Breakdown {
    pub fn of(log: &str) -> Breakdown {
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        let mut done: BTreeMap<u64, f64> = BTreeMap::new();
        let mut cached: BTreeMap<u64, ()> = BTreeMap::new();
        for line in log.lines() {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let Some((n, rest)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            if rest == "CACHED" {
                cached.insert(n, ());
            } else if let Some(t) = rest.strip_prefix("DONE ") {
                if let Ok(s) = t.trim_end_matches('s').parse::<f64>() {
                    done.insert(n, s);
                }
            } else if !rest.starts_with("sha256:") && !names.contains_key(&n) {
                names.insert(n, rest.to_string());
            }
        }
        let mut b = Breakdown::default();
        for (n, name) in &names {
            let t = done.get(n).copied();
            if is_step(name) {
                if cached.contains_key(n) {
                    b.cached += 1;
                } else if let Some(t) = t {
                    b.ran.push((name.clone(), t));
                }
            } else if name.starts_with("importing cache manifest") {
                b.import_s = b.import_s.max(t.unwrap_or(0.0));
            } else if name.starts_with("exporting to image") {
                b.export_image_s += t.unwrap_or(0.0);
            } else if name.starts_with("exporting cache") {
                b.export_cache_s += t.unwrap_or(0.0);
            }
        }
        b
    }

    /// The time of the `RUN` steps that ran and download (an install, corepack's pnpm), and of
    /// the other steps that ran.
    pub fn network_and_other_s(&self) -> (f64, f64) {
        let mut net = 0.0;
        let mut other = 0.0;
        for (name, t) in &self.ran {
            let run = name.split_once("] ").map(|(_, i)| i).unwrap_or("");
            if run.starts_with("RUN ") && (run.contains(" install") || run.contains("corepack")) {
                net += t;
            } else {
                other += t;
            }
        }
        (net, other)
    }

    /// One line: what was cached, what ran, the import and the export.
    pub fn line(&self) -> String {
        let (net, other) = self.network_and_other_s();
        let ran: Vec<String> = self
            .ran
            .iter()
            .filter(|(_, t)| *t >= 0.5)
            .map(|(name, t)| format!("{} {t:.1}s", short(name)))
            .collect();
        format!(
            "{} steps CACHED, {} ran: installs {net:.1}s, other steps {other:.1}s{}{}{}; cache import {:.1}s; image export {:.1}s; inline cache export {:.1}s",
            self.cached,
            self.ran.len(),
            if ran.is_empty() { "" } else { " (of 0.5s or more: " },
            ran.join(", "),
            if ran.is_empty() { "" } else { ")" },
            self.import_s,
            self.export_image_s,
            self.export_cache_s
        )
    }
}

/// Whether a vertex is a Dockerfile step (`[stage 2/4] RUN ...`), not BuildKit's own
/// (`[internal] load metadata for docker.io/library/node:18-alpine`).
fn is_step(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(inner, _)| inner.rsplit_once(' '))
        .and_then(|(_, n)| n.split_once('/'))
        .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
}

/// A step's first words: `[s 1/2] RUN corepack enable && corepack prepare` -> `[s 1/2] RUN corepack enable`.
fn short(step: &str) -> String {
    let words: Vec<&str> = step.split_whitespace().collect();
    let (head, rest) = match words.iter().position(|w| w.ends_with(']')) {
        Some(i) => (words[..=i].join(" "), &words[i + 1..]),
        None => (String::new(), &words[..]),
    };
    let rest: Vec<&str> = rest
        .iter()
        .take_while(|w| **w != "&&")
        .take(4)
        .copied()
        .collect();
    format!("{head} {}", rest.join(" ")).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "#1 [internal] load remote build context
#1 DONE 0.0s

#3 [internal] load metadata for docker.io/library/node:18-alpine
#3 DONE 0.3s

#4 importing cache manifest from r/a:layers-builder
#4 sha256:604d3b4a
#4 DONE 0.1s

#33 importing cache manifest from r/a:layers
#33 DONE 0.4s

#26 [deps 4/4] RUN pnpm install --frozen-lockfile
#26 sha256:088bec04
#26 CACHED

#28 [builder 2/4] COPY --from=shared-builder /app/shared/dist shared/dist
#28 pulling sha256:da0c 0.1s done
#28 CACHED

#30 [builder 4/4] RUN pnpm --filter @kodingcaravan/student-service build
#30 1.785 > tsc -p tsconfig.json
#30 DONE 6.0s

#12 [base 2/3] RUN corepack enable && corepack prepare pnpm@8.15.0 --activate
#12 DONE 1.5s

#31 [runtime 9/9] COPY --from=builder /app/services/x/dist /app/service/dist
#31 DONE 0.1s

#35 exporting to image
#35 exporting layers done
#35 DONE 0.2s

#36 exporting cache
#36 preparing build cache for export 4.5s done
#36 DONE 4.5s
";

    #[test]
    fn a_log_is_summed_up_by_step() {
        let b = Breakdown::of(LOG);
        assert_eq!(b.cached, 2);
        assert_eq!(
            b.ran,
            [
                (
                    "[base 2/3] RUN corepack enable && corepack prepare pnpm@8.15.0 --activate"
                        .to_string(),
                    1.5
                ),
                (
                    "[builder 4/4] RUN pnpm --filter @kodingcaravan/student-service build"
                        .to_string(),
                    6.0
                ),
                (
                    "[runtime 9/9] COPY --from=builder /app/services/x/dist /app/service/dist"
                        .to_string(),
                    0.1
                ),
            ]
        );
        assert_eq!(b.import_s, 0.4);
        assert_eq!(b.export_image_s, 0.2);
        assert_eq!(b.export_cache_s, 4.5);
        let (net, other) = b.network_and_other_s();
        assert!((net - 1.5).abs() < 1e-9 && (other - 6.1).abs() < 1e-9);
        assert_eq!(
            b.line(),
            "2 steps CACHED, 3 ran: installs 1.5s, other steps 6.1s (of 0.5s or more: [base 2/3] RUN corepack enable 1.5s, [builder 4/4] RUN pnpm --filter @kodingcaravan/student-service 6.0s); cache import 0.4s; image export 0.2s; inline cache export 4.5s"
        );
    }

    #[test]
    fn an_empty_log_is_all_zero() {
        assert_eq!(Breakdown::of(""), Breakdown::default());
    }
}
