//! A bound on the bytes of request bodies held at once, all connections together.
//!
//! Bodies are buffered whole before they are parsed, so without a global bound 200
//! clients each announcing a 4 MiB body drove the process past its container limit.
//! A request reserves its `Content-Length` before a byte of its body is read (a body
//! without a length reserves as its bytes arrive); past the bound it waits briefly for
//! room and is then shed with a 503, its body unread.
//!
//! Bodies larger than [`SMALL_BODY`] may hold only three quarters of the budget: the
//! rest is kept for the few-KB reviews kube-apiserver sends, so that a flood of slow
//! large uploads cannot starve them. Permits count KiB, so the budget is not bounded
//! by `u32` bytes.

use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;

/// Bodies up to this size may use the whole budget; larger ones three quarters.
pub(super) const SMALL_BODY: usize = 64 * 1024;

/// The budget: one semaphore for every body, one for the large ones.
pub(super) struct BodyBudget {
    all: Semaphore,
    large: Semaphore,
    wait: Duration,
}

/// No room was found in time.
#[derive(Debug)]
pub(super) struct Shed;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// A budget of `bytes`, where a request waits at most `wait` for room.
    pub(super) fn new(bytes: usize, wait: Duration) -> Self {
        let total = kib(bytes) as usize;
        Self {
            all: Semaphore::new(total),
            large: Semaphore::new(total - total / 4),
            wait,
        }
    }

    /// An empty reservation, released when dropped.
    pub(super) fn reservation(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            all: 0,
            large: 0,
        }
    }
}

/// Room held in the budget by one request.
pub(super) struct Reservation<'a> {
    budget: &'a BodyBudget,
    all: u32,
    large: u32,
}

impl Reservation<'_> {
    /// Holds room for `bytes` bytes in total, waiting at most the budget's wait.
    pub(super) async fn grow_to(&mut self, bytes: usize) -> Result<(), Shed> {
        let deadline = Instant::now() + self.budget.wait;
        let want = kib(bytes);
        let want_large = if bytes > SMALL_BODY { want } else { 0 };
        if want_large > self.large {
            acquire(&self.budget.large, want_large - self.large, deadline).await?;
            self.large = want_large;
        }
        if want > self.all {
            acquire(&self.budget.all, want - self.all, deadline).await?;
            self.all = want;
        }
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.all.add_permits(self.all as usize);
        self.budget.large.add_permits(self.large as usize);
    }
}

/// Takes `n` permits: at once if they are free (even with others waiting: a small
/// request must not queue behind a large one), else waiting in line until `deadline`.
async fn acquire(semaphore: &Semaphore, n: u32, deadline: Instant) -> Result<(), Shed> {
    match semaphore.try_acquire_many(n) {
        Ok(permits) => {
            permits.forget();
            return Ok(());
        }
        Err(TryAcquireError::Closed) => return Err(Shed),
        Err(TryAcquireError::NoPermits) => {}
    }
    match tokio::time::timeout_at(deadline, semaphore.acquire_many(n)).await {
        Ok(Ok(permits)) => {
            permits.forget();
            Ok(())
        }
        _ => Err(Shed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_bodies_leave_room_for_small_ones() {
        let budget = BodyBudget::new(16 << 20, Duration::from_millis(20));
        let mut large = Vec::new();
        for _ in 0..3 {
            let mut r = budget.reservation();
            r.grow_to(4 << 20).await.unwrap();
            large.push(r);
        }
        // A fourth large body would pass three quarters of the budget.
        assert!(budget.reservation().grow_to(4 << 20).await.is_err());
        // Small ones still fit, up to the whole budget.
        let mut small = Vec::new();
        for _ in 0..64 {
            let mut r = budget.reservation();
            r.grow_to(SMALL_BODY).await.unwrap();
            small.push(r);
        }
        assert!(budget.reservation().grow_to(1).await.is_err());
        // Released on drop.
        drop(large.pop());
        budget.reservation().grow_to(4 << 20).await.unwrap();
    }

    #[tokio::test]
    async fn a_reservation_grows_as_bytes_arrive() {
        let budget = BodyBudget::new(8 << 20, Duration::from_millis(20));
        let mut r = budget.reservation();
        for len in (0..=(6 << 20)).step_by(100_000) {
            r.grow_to(len).await.unwrap();
        }
        // Past 6 MiB (three quarters of 8), a growing body is shed.
        assert!(r.grow_to(7 << 20).await.is_err());
        drop(r);
        assert_eq!(budget.all.available_permits(), 8192);
        assert_eq!(budget.large.available_permits(), 6144);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_room_freed_in_time() {
        let budget = std::sync::Arc::new(BodyBudget::new(8 << 20, Duration::from_secs(5)));
        let mut first = budget.reservation();
        first.grow_to(6 << 20).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reservation().grow_to(4 << 20).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert!(waiter.await.unwrap());
    }
}
