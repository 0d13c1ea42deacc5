//! Holding a built image's verification while a driver puts it into service: `watch --up` serves
//! a rebuilt image before it is verified, and the verification (`docker save` of the image, a
//! container run) competes with the new container's start for the same cores. On the example
//! (2 cores) the replacement took 1.3-1.9 s beside the verification and 0.8 s without it, and
//! nothing waits on the verification meanwhile but `latest`, which moves only after it.
//!
//! The driver holds an image id synchronously, from the run's `Built` event (so before the run
//! asks); the run waits before verifying it until the driver releases it, the run is cancelled,
//! or [`AT_MOST`] passes. A hold never changes what is verified, recorded or published: only when.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a verification waits for a release (a service that never answers its health
/// check must not keep its image from being verified for the health check's whole timeout).
pub const AT_MOST: Duration = Duration::from_secs(10);

/// How often a wait looks at the cancel flag.
const TICK: Duration = Duration::from_millis(100);

/// Image ids whose verification waits (a count: the same id may be held twice).
#[derive(Debug, Default)]
pub struct Hold {
    held: Mutex<HashMap<String, usize>>,
    released: Condvar,
}

impl Hold {
    /// Holds the verification of `image_id` until [`Hold::release`].
    pub fn hold(&self, image_id: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held.entry(image_id.to_string()).or_default() += 1;
    }

    /// Releases one hold of `image_id` (nothing when it is not held).
    pub fn release(&self, image_id: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(image_id) {
            *n -= 1;
            if *n == 0 {
                held.remove(image_id);
            }
        }
        self.released.notify_all();
    }

    /// Whether `image_id` is held.
    pub fn is_held(&self, image_id: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.contains_key(image_id)
    }

    /// Waits while `image_id` is held, at most `limit`, or until `cancel` is set; how long it
    /// waited. A wait that ends on `limit` leaves the hold in place: a later release ends it.
    pub fn wait(&self, image_id: &str, limit: Duration, cancel: &AtomicBool) -> Duration {
        let start = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains_key(image_id) && !cancel.load(Ordering::SeqCst) {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            held = match self.released.wait_timeout(held, left.min(TICK)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_image_not_held_is_not_waited_for() {
        let h = Hold::default();
        let w = h.wait("sha256:a", Duration::from_secs(5), &AtomicBool::new(false));
        assert!(w < Duration::from_secs(1), "{w:?}");
    }

    #[test]
    fn a_wait_ends_when_the_last_hold_is_released() {
        let h = Arc::new(Hold::default());
        h.hold("sha256:a");
        h.hold("sha256:a");
        h.hold("sha256:b");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                h.wait("sha256:a", Duration::from_secs(30), &AtomicBool::new(false));
                tx.send(()).expect("the test waits");
            })
        };
        h.release("sha256:a");
        h.release("sha256:b");
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "one hold of a is left: the wait goes on"
        );
        h.release("sha256:a");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the last release ends the wait");
        waiter.join().expect("the waiter ends");
        assert!(!h.is_held("sha256:a"));
        // A release of what is not held does nothing.
        h.release("sha256:a");
        assert!(!h.is_held("sha256:a"));
    }

    #[test]
    fn a_wait_ends_at_its_limit_or_on_cancel_and_the_hold_stays() {
        let h = Arc::new(Hold::default());
        h.hold("sha256:a");
        let w = h.wait(
            "sha256:a",
            Duration::from_millis(250),
            &AtomicBool::new(false),
        );
        assert!(w >= Duration::from_millis(250), "{w:?}");
        assert!(h.is_held("sha256:a"));

        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (h, cancel) = (Arc::clone(&h), Arc::clone(&cancel));
            std::thread::spawn(move || {
                h.wait("sha256:a", Duration::from_secs(60), &cancel);
                tx.send(()).expect("the test waits");
            })
        };
        cancel.store(true, Ordering::SeqCst);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a cancelled run does not wait");
        waiter.join().expect("the waiter ends");
    }
}
