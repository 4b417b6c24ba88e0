//! `idagent-guest`: code that runs inside the guest container, and the wire protocol it shares
//! with the host.
//!
//! - [`filter`]: the seccomp BPF program and its installation with a notification listener.
//! - [`ctl`]: the init ↔ host control protocol (hello + listener fd, then `GO`/`ABORT`), both
//!   halves.
//! - [`landlock`]: the Landlock plan (rules and their file format) and applying it, which makes
//!   the kernel refuse the command's writes and execs outside the plan.
//! - [`init`]: `idagent guest-init`, the container's PID 1.
//!
//! Does not own: handling the notifications (the host's `idagent::supervisor`).

pub mod ctl;
pub mod filter;
pub mod init;
pub mod landlock;
