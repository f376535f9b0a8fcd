//! The subscription heartbeat (README, "Production Redis").
//!
//! A partition can keep the subscription's TCP connection open while nothing arrives on it: the
//! instance would keep serving decisions other instances invalidated. So every process with
//! listeners publishes a heartbeat on the channel every interval: a message like any other
//! (signed with the signing key, with the sender's sequence and timestamp, so a forged or
//! replayed one is refused, see `pubsub.rs`, "Replays"), of kind `heartbeat`, delivered to no
//! listener. The subscriber expects to hear something, its own heartbeat at least, within
//! `heartbeat_misses` intervals. When it does not, the subscription is treated as lost: every
//! listener drops its L1, `heartbeat_losses` counts it, a warning is logged, and the
//! subscriber reconnects (a new connection, as after any lost subscription, drops the L1s once
//! more). It stays lost, dropping the L1s again after each silent period, until it hears a
//! verified message again.
//!
//! The heartbeat uses its own bound (at least one second, at most the interval) and never
//! trips the circuit breaker: it is background work, not a request's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use super::{handle, L2};
use crate::error::{Error, Result};

/// The default interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The default number of silent intervals after which the subscription is lost.
pub const DEFAULT_MISSES: u32 = 3;

/// The interval of `heartbeat_seconds` (`None` or 0: off).
///
/// # Errors
/// `Error::Config` for a value that is not finite, negative, or outside `[0.05, 3600]`.
pub fn interval(seconds: Option<f64>) -> Result<Option<Duration>> {
    match seconds {
        None | Some(0.0) => Ok(None),
        Some(s) if s.is_finite() && (0.05..=3600.0).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(Error::config(format!(
            "heartbeat_seconds must be 0 (off) or between 0.05 and 3600, got {s}"
        ))),
    }
}

/// What the heartbeat did, as relaxed atomics.
#[derive(Debug, Default)]
pub struct Heartbeats {
    pub sent: AtomicU64,
    /// Verified heartbeats heard (this process's own included).
    pub received: AtomicU64,
    /// Times the subscription was treated as lost because nothing was heard.
    pub losses: AtomicU64,
    /// Lost and not heard from since.
    pub lost: AtomicBool,
}

impl Heartbeats {
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

/// Publishes a heartbeat every interval while `l2` lives in this process, the first once the
/// subscription is up (so this process hears it).
pub(super) async fn publish(l2: Weak<L2>, pid: u32) {
    for _ in 0..500 {
        match l2.upgrade() {
            Some(this) if !this.bus.subscribed() => {}
            Some(_) => break,
            None => return,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        let Some(this) = l2.upgrade() else { return };
        let Some(every) = this.config.heartbeat else {
            return;
        };
        if std::process::id() != pid || this.bus.started.load(Ordering::Relaxed) != pid {
            return;
        }
        let bound = every.min(Duration::from_secs(1).max(this.config.timeout));
        if let Some(h) = handle() {
            if let Some(conn) = this.manager(&h) {
                let wire = this.encode_heartbeat(super::unix_ms());
                let channel = this.config.channel.clone();
                let sent = L2::call(conn, bound, |mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(wire)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
                // A failure is only noticed by the subscribers, as silence.
                if sent.is_ok() {
                    this.bus.heartbeats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(this);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(interval(None).unwrap(), None);
        assert_eq!(interval(Some(0.0)).unwrap(), None);
        assert_eq!(
            interval(Some(0.5)).unwrap(),
            Some(Duration::from_millis(500))
        );
        for bad in [-1.0, 0.01, f64::NAN, f64::INFINITY, 4000.0] {
            assert!(interval(Some(bad)).is_err(), "{bad}");
        }
    }
}
