//! The steps of one job, in the order that makes the cache trustworthy: local tier, remote tier,
//! build, verify, record (and tag), publish. A step that fails ends the job there: nothing after
//! it happens, so a failed verification records and publishes nothing.

use std::time::Instant;

use super::{hold, Event, ImageReport, Job, Outcome, Runner};
use crate::execute::docker::step_of;
use crate::execute::LocalImage;
use crate::plan::Action;
use crate::record::{self, Entry};
use crate::tier::{Layered, Tier, Want};

impl Runner<'_> {
    fn tiers(&self) -> Layered<'_> {
        Layered::new(
            &self.local,
            self.remote.iter().map(|r| r as &dyn Tier).collect(),
        )
    }

    pub(super) fn warn(&self, message: String) {
        self.emit(Event::Warning { message });
    }

    /// Runs one job to its end.
    pub(super) fn process(&self, job: &Job) -> ImageReport {
        let mut r = ImageReport::new(job);
        let plan = match &job.plan {
            Some(p) => p.clone(),
            None => {
                self.local.refresh();
                let planned = crate::plan::plan_one(
                    job.index,
                    &job.service,
                    &job.image,
                    &job.inputs,
                    &self.local,
                );
                self.store_warnings();
                match planned {
                    Ok(p) => p,
                    Err(e) => {
                        fail(&mut r, format!("cannot plan {}: {e}", job.service));
                        return r;
                    }
                }
            }
        };
        r.reasons = plan.reasons.clone();
        let want = job.want();
        match (plan.action, &plan.image_id) {
            (Action::Cached, Some(id)) => self.cached(job, &want, id.clone(), r),
            _ => {
                if self.cancelled() {
                    r.skipped_because = Some("interrupted".to_string());
                    return r;
                }
                let mut refused = Vec::new();
                // An uncacheable image, or one whose key is incomplete, is never taken from a
                // registry either.
                if !self.opts.force && self.remote.is_some() && job.inputs.cacheable() {
                    match self.remote_tiers(job, &want, &mut r) {
                        Remote::Done => return r,
                        Remote::Build { refused: skip } => refused = skip,
                    }
                }
                self.build(job, &want, r, &refused)
            }
        }
    }

    /// A local hit: tag (the record is already there: an image built FROM it must find it under
    /// `latest`), verify (once per key), publish.
    fn cached(&self, job: &Job, want: &Want<'_>, id: String, mut r: ImageReport) -> ImageReport {
        r.outcome = Outcome::Cached;
        r.image_id = Some(id.clone());
        match self.local.tag(want, &id) {
            Ok(moved) => r.retagged = moved,
            Err(e) => {
                fail(
                    &mut r,
                    format!("cannot tag the cached image of {}: {e}", job.service),
                );
                return r;
            }
        }
        if self.cancelled() || !self.verify(job, &id, &mut r) {
            return r;
        }
        self.publish(job, want, Some(&id), &mut r);
        r
    }

    /// The remote tiers: a hit (with trusted keys, a signed one) is pulled by the digest its
    /// lookup saw, verified, recorded (filling the local tier), tagged and published.
    fn remote_tiers(&self, job: &Job, want: &Want<'_>, r: &mut ImageReport) -> Remote {
        let tiers = self.tiers();
        let search = match tiers.search(want, 1) {
            Ok(s) => s,
            Err(e) => {
                self.warn(e.to_string());
                return Remote::Build {
                    refused: Vec::new(),
                };
            }
        };
        for w in search.warnings {
            self.warn(format!("{w}; building {} here", job.service));
        }
        for (reference, why) in search.untrusted {
            r.reasons
                .push(crate::plan::Reason::RegistryEntryRefused { reference, why });
        }
        let Some((level, hit)) = search.found else {
            return Remote::Build {
                refused: search.refused,
            };
        };
        // Even to publish in the registry that holds it, the entry is pulled (by the digest
        // the lookup checked) and verified first: nothing is published unverified.
        self.emit(Event::Pulling {
            service: job.service.clone(),
            reference: hit.location.clone(),
        });
        let Some(tier) = tiers.tier(level) else {
            return Remote::Build {
                refused: search.refused,
            };
        };
        let pulled = match tier.fetch(want, &hit) {
            Ok(p) => p,
            Err(e) => {
                self.warn(format!(
                    "could not pull {} from {}: {e}; building it here",
                    job.service,
                    tier.describe()
                ));
                return Remote::Build {
                    refused: search.refused,
                };
            }
        };
        self.local.note(&pulled);
        r.image_id = Some(pulled.id.clone());
        r.registry.push(match (&hit.digest, &hit.signed_by) {
            (Some(d), Some(key)) => format!("pulled from {}@{d} (signed by {key})", hit.location),
            (Some(d), None) => format!("pulled from {}@{d}", hit.location),
            _ => format!("pulled from {}", hit.location),
        });
        r.pulled_from = Some(hit.location.clone());
        if !self.verify(job, &pulled.id, r) {
            r.outcome = Outcome::Failed;
            r.error.get_or_insert_with(|| {
                format!(
                    "the image pulled from {} breaks the architecture's rules",
                    hit.location
                )
            });
            return Remote::Done;
        }
        let manifest = job.input_manifest();
        let entry = Entry {
            service: &job.service,
            image: &job.image,
            key: &job.key,
            manifest: &manifest,
            image_id: &pulled.id,
            duration_ms: 0,
            log: None,
        };
        if let Err(e) = tiers.fill(want, &entry) {
            fail(r, format!("cannot record {}: {e}", job.service));
            return Remote::Done;
        }
        r.recorded = true;
        if let Err(e) = self.local.tag(want, &pulled.id) {
            fail(r, format!("cannot tag {}: {e}", job.service));
            return Remote::Done;
        }
        r.outcome = Outcome::Cached;
        self.publish(job, want, Some(&pulled.id), r);
        Remote::Done
    }

    /// Builds, then verifies, records, tags and publishes what was built.
    fn build(
        &self,
        job: &Job,
        want: &Want<'_>,
        mut r: ImageReport,
        refused: &[usize],
    ) -> ImageReport {
        let req = job.request(
            self.opts.cancel.clone(),
            self.layout.work(),
            self.layer_cache(job),
        );
        self.emit(Event::Started {
            service: job.service.clone(),
            key: job.key,
            reasons: r.reasons.clone(),
        });
        let on_line = |line: &str| {
            if let Some(step) = step_of(line) {
                self.emit(Event::Step {
                    service: job.service.clone(),
                    step,
                });
            }
            self.emit(Event::Line {
                service: job.service.clone(),
                line: line.to_string(),
            });
        };
        let t = Instant::now();
        let result = self.build_one(&req, &on_line);
        r.duration = Some(t.elapsed());
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                r.outcome = Outcome::Failed;
                r.superseded = job.is_superseded();
                r.interrupted = e.interrupted;
                r.error = Some(e.message);
                if !e.interrupted {
                    match record::save_failure_log(&self.layout, &job.service, &job.key, &e.log) {
                        Ok(p) => r.log = Some(p),
                        Err(err) => {
                            self.warn(format!("could not save the log of {}: {err}", job.service))
                        }
                    }
                }
                r.log_tail = (!e.log_tail.is_empty()).then_some(e.log_tail);
                return r;
            }
        };
        r.image_id = Some(out.image_id.clone());
        r.outcome = Outcome::Built;
        self.local.note(&LocalImage {
            id: out.image_id.clone(),
            key: Some(job.key.to_hex()),
            tags: Vec::new(),
        });
        if job.is_superseded() {
            r.superseded = true;
            return r;
        }
        self.emit(Event::Built {
            service: job.service.clone(),
            image: job.image.clone(),
            key: job.key,
            image_id: out.image_id.clone(),
        });
        if let (Some(hold), true) = (&self.opts.hold, self.opts.verify) {
            hold.wait(&out.image_id, hold::AT_MOST, &self.opts.cancel);
        }
        if self.opts.verify && self.cancelled() {
            r.interrupted = true;
            fail(&mut r, "interrupted before its verification".to_string());
            return r;
        }
        if !self.verify(job, &out.image_id, &mut r) {
            r.outcome = Outcome::Failed;
            return r;
        }
        if job.is_superseded() {
            r.superseded = true;
            return r;
        }
        let manifest = job.input_manifest();
        let entry = Entry {
            service: &job.service,
            image: &job.image,
            key: &job.key,
            manifest: &manifest,
            image_id: &out.image_id,
            duration_ms: r.duration.map(|d| d.as_millis() as u64).unwrap_or(0),
            log: Some(&out.log),
        };
        if let Err(e) = self.tiers().fill(want, &entry) {
            fail(&mut r, format!("cannot record {}: {e}", job.service));
            return r;
        }
        r.recorded = true;
        if let Err(e) = self.local.tag(want, &out.image_id) {
            fail(&mut r, format!("cannot tag {}: {e}", job.service));
            return r;
        }
        let (done, warnings) = self.tiers().share(want, &entry, refused);
        for w in warnings {
            self.warn(w);
        }
        for message in done {
            self.emit(Event::Registry {
                service: job.service.clone(),
                message: message.clone(),
            });
            r.registry.push(message);
        }
        self.publish(job, want, Some(&out.image_id), &mut r);
        self.export_layers(job, &req, &out.image_id, &mut r);
        r
    }

    /// Verifies an image (when the run verifies); whether it passed. A verification that cannot
    /// be made is a failure, with its error.
    fn verify(&self, job: &Job, image_id: &str, r: &mut ImageReport) -> bool {
        let (Some(verifier), Some(subject), true) =
            (self.backend.verifier, &job.subject, self.opts.verify)
        else {
            return true;
        };
        match verifier.verify(self.layout.dir(), subject, &job.image, &job.key, image_id) {
            Ok(v) => {
                for w in v.warnings {
                    self.warn(w);
                }
                let ok = v.report.ok;
                if !ok {
                    let rules: Vec<&str> = v.report.failures().map(|c| c.rule.name()).collect();
                    r.error = Some(format!(
                        "the image breaks the architecture's rules: {}",
                        rules.join(", ")
                    ));
                }
                r.verify = Some(v.report);
                ok
            }
            Err(e) => {
                r.error = Some(format!("cannot verify {}: {e}", job.service));
                false
            }
        }
    }

    /// Publishes the release tags (with `--push`). `local_id` is the image verified in this
    /// run; an image the registry holds under the key instead is pulled and verified here (the
    /// gate) before its manifest is copied.
    fn publish(&self, job: &Job, want: &Want<'_>, local_id: Option<&str>, r: &mut ImageReport) {
        let Some(p) = &self.publisher else { return };
        let result = {
            let mut gate = |id: &str| -> crate::Result<()> {
                self.local.note(&LocalImage {
                    id: id.to_string(),
                    key: Some(job.key.to_hex()),
                    tags: Vec::new(),
                });
                if self.verify(job, id, r) {
                    Ok(())
                } else {
                    Err(crate::Error::Other(
                        r.error
                            .clone()
                            .unwrap_or_else(|| "its verification failed".to_string()),
                    ))
                }
            };
            p.publish(want, local_id, &mut gate)
        };
        match result {
            Ok(lines) => {
                for message in lines {
                    self.emit(Event::Registry {
                        service: want.service.to_string(),
                        message: message.clone(),
                    });
                    r.registry.push(message);
                }
            }
            Err(e) => {
                r.publish_failed = true;
                r.error = Some(format!("publishing {} failed: {e}", want.service));
            }
        }
    }
}

/// Marks a report failed.
fn fail(r: &mut ImageReport, error: String) {
    r.outcome = Outcome::Failed;
    r.error = Some(error);
}

/// What the remote tiers left to do.
enum Remote {
    /// The job is done (pulled, or published in place, or failed).
    Done,
    /// Build it; the tiers `refused` hold another key's image under this key (never stored over).
    Build { refused: Vec<usize> },
}
