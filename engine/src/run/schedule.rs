//! The one DAG scheduler: jobs wait for the images they build `FROM` and for a free worker, at
//! most one job per image runs at a time, and a job submitted for an image whose build runs waits
//! for it (a follow-up) and marks it superseded. Jobs may be submitted while others run (`watch`
//! submits each batch); [`Scheduler::close`] says no more will come (`images`).
//!
//! Jobs that can no longer run are handed back to be reported as skipped: an image it builds FROM
//! failed or was skipped, the run was cancelled, or another build failed without `--keep-going`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::job::Job;
use super::Outcome;
use crate::digest::ImageKey;

/// What a worker is to do next.
pub(crate) enum Next {
    Run(Job),
    Skip(Job, String),
    /// Closed, and nothing is left to take.
    Done,
}

struct Running {
    key: ImageKey,
    superseded: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Waiting jobs, in submission order (DAG order within a submission).
    queue: Vec<Job>,
    running: HashMap<String, Running>,
    /// The last outcome of each image's job.
    last: HashMap<String, Outcome>,
    /// A job failed (without `keep_going`, nothing more starts).
    failed: bool,
    closed: bool,
}

pub(crate) struct Scheduler {
    state: Mutex<State>,
    wake: Condvar,
    workers: usize,
    keep_going: bool,
    cancel: Arc<AtomicBool>,
}

impl Scheduler {
    pub fn new(workers: usize, keep_going: bool, cancel: Arc<AtomicBool>) -> Scheduler {
        Scheduler {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            workers: workers.max(1),
            keep_going,
            cancel,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job. A waiting job of the same image is replaced; if the image's running build
    /// has the job's key, the job is dropped (that build is what is wanted); if it has another
    /// key, the running build is superseded and the job follows it. Returns why the job waits,
    /// if it cannot start now.
    pub fn submit(&self, job: Job) -> Option<String> {
        let mut st = self.lock();
        st.queue.retain(|j| j.service != job.service);
        if let Some(r) = st.running.get(&job.service) {
            let same = r.key == job.key;
            r.superseded.store(!same, Ordering::SeqCst);
            if same {
                return None;
            }
        }
        let why = self.blocked(&st, &job).or_else(|| {
            (st.running.len() >= self.workers).then(|| "waits for a free job (--jobs)".to_string())
        });
        // Said once per job: by the caller now, or by `next` when it first waits.
        job.announced.store(why.is_some(), Ordering::SeqCst);
        st.queue.push(job);
        drop(st);
        self.wake.notify_all();
        why
    }

    /// No more jobs will be submitted: workers return once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Wakes the workers (after the cancel flag was set).
    pub fn wake(&self) {
        self.wake.notify_all();
    }

    /// Why `job` cannot start, if it cannot (besides a free worker).
    fn blocked(&self, st: &State, job: &Job) -> Option<String> {
        if st.running.contains_key(&job.service) {
            return Some("a build of it is running; one more build follows".to_string());
        }
        let pending =
            |d: &String| st.running.contains_key(d) || st.queue.iter().any(|q| q.service == *d);
        job.deps
            .iter()
            .find(|d| pending(d))
            .map(|d| format!("waits for {d}, which it builds FROM"))
    }

    /// Why `job` will never run, if so. A job planned `cached` always runs (it builds nothing).
    fn doomed(&self, st: &State, job: &Job) -> Option<String> {
        if job.is_cached() {
            return None;
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Some("interrupted".to_string());
        }
        if st.failed && !self.keep_going {
            return Some("another build failed (use --keep-going to go on)".to_string());
        }
        let pending =
            |d: &String| st.running.contains_key(d) || st.queue.iter().any(|q| q.service == *d);
        job.deps
            .iter()
            .find(|d| {
                !pending(d) && matches!(st.last.get(*d), Some(Outcome::Failed | Outcome::Skipped))
            })
            .map(|d| format!("{d} was not built"))
    }

    /// The next job for a worker: one to run, one to report as skipped, or none left. Blocks
    /// while every waiting job waits. `waiting` is told each job that waits (every time).
    pub fn next(&self, waiting: &dyn Fn(&Job, &str)) -> Next {
        let mut st = self.lock();
        loop {
            if let Some(i) = st.queue.iter().position(|j| self.doomed(&st, j).is_some()) {
                let job = st.queue.remove(i);
                let why = self.doomed(&st, &job).unwrap_or_default();
                return Next::Skip(job, why);
            }
            let mut ready = None;
            for (i, j) in st.queue.iter().enumerate() {
                match self.blocked(&st, j) {
                    Some(why) => waiting(j, &why),
                    None if ready.is_none() => ready = Some(i),
                    None => {}
                }
            }
            if let Some(i) = ready {
                let job = st.queue.remove(i);
                job.superseded.store(false, Ordering::SeqCst);
                st.running.insert(
                    job.service.clone(),
                    Running {
                        key: job.key,
                        superseded: job.superseded.clone(),
                    },
                );
                return Next::Run(job);
            }
            if st.queue.is_empty() && st.closed {
                return Next::Done;
            }
            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A job ended (ran, or was reported skipped).
    pub fn finished(&self, service: &str, key: ImageKey, outcome: Outcome) {
        let mut st = self.lock();
        if st.running.get(service).is_some_and(|r| r.key == key) {
            st.running.remove(service);
        }
        if outcome == Outcome::Failed {
            st.failed = true;
        }
        st.last.insert(service.to_string(), outcome);
        drop(st);
        self.wake.notify_all();
    }
}
