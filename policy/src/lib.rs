//! idagent's policy crate (placeholder; being written).
#![forbid(unsafe_code)]
