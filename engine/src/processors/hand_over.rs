//! Handing data that was already acknowledged to the next component.
//!
//! `batch` and `tail_sampling` answer their callers before their data moves on (the client got
//! its OK when the data was buffered), so a refusal from the next component cannot be passed
//! back to anyone. A retryable refusal (a full sending queue, memory pressure) is therefore
//! waited out: the payload is offered again with a backoff, and meanwhile the component's own
//! buffers fill and its callers wait — back-pressure instead of loss. The Collector drops such
//! data; sluice's promise is that nothing acknowledged is lost without being counted, and
//! nothing is lost at all while the destination eventually takes it.

use std::time::Duration;

use tokio::time::Instant;

use crate::component::{ConsumeError, Consumer};
use crate::payload::Payload;

/// How long a payload refused with a retryable error is still offered once shutdown began:
/// exporters stop after the processors and keep draining meanwhile, so a full queue usually
/// makes room; a destination that stays down must not hold shutdown forever.
pub const SHUTDOWN_RETRY_FOR: Duration = Duration::from_secs(5);
/// The first wait before a refused payload is offered again; it doubles up to
/// [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(10);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(1);

/// Hands `payload` to `next`, offering it again while the refusal is retryable; gives up
/// (returning the refusal) on a permanent one, or when a retryable one still stands
/// [`SHUTDOWN_RETRY_FOR`] after `stopping()` first said true. `component` names the caller
/// in the debug log.
pub async fn offer_until_taken(
    next: &dyn Consumer,
    payload: Payload,
    stopping: impl Fn() -> bool,
    component: &str,
) -> Result<(), ConsumeError> {
    let mut wait = RETRY_FIRST_WAIT;
    let mut give_up_at: Option<Instant> = None;
    loop {
        // A payload's columns are shared buffers: the clone is a handful of pointers.
        let refusal = match next.consume(payload.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        if stopping() {
            let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_RETRY_FOR);
            if Instant::now() >= deadline {
                return Err(refusal);
            }
        }
        tracing::debug!(component, error = %refusal, items = payload.item_count(),
            wait_ms = wait.as_millis() as u64,
            "the next component refused acknowledged data for now; offering it again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX_WAIT);
    }
}
