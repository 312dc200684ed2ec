//! The wall clock as the rest of ebb stores it. A leaf: events, state,
//! the controller and the drivers all stamp times, and none of them should
//! import another just for this.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
