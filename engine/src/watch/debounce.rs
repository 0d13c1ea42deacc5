//! The debounce: one small function that coalesces a burst of file events into one batch (as
//! watchexec's `throttle_collect`), so that a save, a rename-on-save or a `git checkout` of
//! thousands of files is handled once.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How a batch is collected.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// A batch ends when no file event came for this long (the trailing quiet period).
    pub quiet: Duration,
    /// ... or when this long has passed since its first file event, so that a never-ending
    /// stream of events still gets handled.
    pub max: Duration,
    /// How long to wait for a first message before returning an empty batch (so the caller can
    /// check its stop flag).
    pub idle: Duration,
}

/// What `collect` got: the messages in arrival order, and whether the sender hung up.
#[derive(Debug)]
pub struct Collected<T> {
    pub messages: Vec<T>,
    pub disconnected: bool,
}

/// Collects one batch from `rx`.
///
/// Waits up to `idle` for a first message. Messages that are not file events (`is_file_event`
/// false: build completions, say) are returned at once, with whatever else is already queued,
/// unless a file event is pending: then the batch goes on until the file events pause for `quiet`
/// (or `max` has passed since the first one), and takes every message that came meanwhile.
pub fn collect<T>(
    rx: &Receiver<T>,
    d: Debounce,
    is_file_event: impl Fn(&T) -> bool,
) -> Collected<T> {
    let mut messages = Vec::new();
    let mut first_file: Option<Instant> = None;
    let mut last_file = Instant::now();
    let mut deadline_idle = Instant::now() + d.idle;
    loop {
        let now = Instant::now();
        let deadline = match first_file {
            Some(first) => (last_file + d.quiet).min(first + d.max),
            None if messages.is_empty() => deadline_idle,
            // Only non-file messages so far: take what is queued, no waiting.
            None => now,
        };
        let wait = deadline.saturating_duration_since(now);
        let next = if wait.is_zero() {
            rx.try_recv().map_err(|e| match e {
                std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            rx.recv_timeout(wait)
        };
        match next {
            Ok(m) => {
                if is_file_event(&m) {
                    let t = Instant::now();
                    first_file.get_or_insert(t);
                    last_file = t;
                }
                messages.push(m);
            }
            Err(RecvTimeoutError::Timeout) => {
                if wait.is_zero() || Instant::now() >= deadline {
                    return Collected {
                        messages,
                        disconnected: false,
                    };
                }
                // A spurious early wake-up: wait the rest.
                deadline_idle = deadline;
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Collected {
                    messages,
                    disconnected: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[derive(Debug, PartialEq)]
    enum M {
        File(u32),
        Other(u32),
    }

    fn d(quiet_ms: u64) -> Debounce {
        Debounce {
            quiet: Duration::from_millis(quiet_ms),
            max: Duration::from_secs(30),
            idle: Duration::from_millis(20),
        }
    }

    fn is_file(m: &M) -> bool {
        matches!(m, M::File(_))
    }

    #[test]
    fn a_burst_is_one_batch_and_a_pause_splits_batches() {
        let (tx, rx) = channel();
        let sender = std::thread::spawn(move || {
            for i in 0..50 {
                tx.send(M::File(i)).expect("send");
                std::thread::sleep(Duration::from_millis(2));
            }
            // A pause far longer than the quiet period, then another burst.
            std::thread::sleep(Duration::from_millis(1500));
            for i in 50..60 {
                tx.send(M::File(i)).expect("send");
            }
        });
        let mut batches = Vec::new();
        while batches.len() < 2 {
            let c = collect(&rx, d(300), is_file);
            if !c.messages.is_empty() {
                batches.push(c.messages);
            }
        }
        sender.join().expect("join");
        assert_eq!(batches[0], (0..50).map(M::File).collect::<Vec<_>>());
        assert_eq!(batches[1], (50..60).map(M::File).collect::<Vec<_>>());
    }

    #[test]
    fn other_messages_come_at_once_and_ride_along_with_files() {
        let (tx, rx) = channel();
        tx.send(M::Other(1)).expect("send");
        tx.send(M::Other(2)).expect("send");
        // Nothing else: the two come back without waiting for a quiet period.
        let c = collect(&rx, d(60_000), is_file);
        assert_eq!(c.messages, vec![M::Other(1), M::Other(2)]);

        // A completion during a burst joins the burst's batch.
        tx.send(M::File(1)).expect("send");
        tx.send(M::Other(3)).expect("send");
        tx.send(M::File(2)).expect("send");
        let c = collect(&rx, d(100), is_file);
        assert_eq!(c.messages, vec![M::File(1), M::Other(3), M::File(2)]);
    }

    #[test]
    fn empty_on_idle_and_reports_hang_up() {
        let (tx, rx) = channel::<M>();
        let c = collect(&rx, d(10), is_file);
        assert!(c.messages.is_empty() && !c.disconnected);
        tx.send(M::File(7)).expect("send");
        drop(tx);
        let c = collect(&rx, d(10), is_file);
        assert_eq!(c.messages, vec![M::File(7)]);
        assert!(c.disconnected);
    }

    #[test]
    fn a_stream_that_never_pauses_is_cut_at_max() {
        let (tx, rx) = channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut i = 0;
            while !s2.load(std::sync::atomic::Ordering::SeqCst) {
                if tx.send(M::File(i)).is_err() {
                    break;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let c = collect(
            &rx,
            Debounce {
                quiet: Duration::from_millis(500),
                max: Duration::from_millis(200),
                idle: Duration::from_secs(5),
            },
            is_file,
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        sender.join().expect("join");
        assert!(
            !c.messages.is_empty(),
            "a batch came out while events kept coming"
        );
    }
}
