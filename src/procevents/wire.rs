//! The proc connector's wire format: `nlmsghdr` + `cn_msg` + `proc_event`, parsed from and
//! built into bytes.
//!
//! Owns: pure functions over `&[u8]` with checked access and typed errors (the kernel is the
//! only sender, but a malformed or truncated datagram must still never panic the daemon).
//! Does not own: the socket, or what the events mean for the guest (see `tracker`).
//!
//! Layouts (all fields native-endian, `include/uapi/linux/cn_proc.h`, `connector.h`):
//! `nlmsghdr` 16 bytes {len u32, type u16, flags u16, seq u32, pid u32};
//! `cn_msg` 20 bytes {idx u32, val u32, seq u32, ack u32, len u16, flags u16};
//! `proc_event` 16-byte header {what u32, cpu u32, timestamp_ns u64} then the union.

/// `CN_IDX_PROC`: the connector index (and multicast group) of the proc connector.
pub const CN_IDX_PROC: u32 = 1;
/// `CN_VAL_PROC`.
pub const CN_VAL_PROC: u32 = 1;
/// `PROC_CN_MCAST_LISTEN`: the op that subscribes a socket.
pub const PROC_CN_MCAST_LISTEN: u32 = 1;

const NLMSG_HDR_LEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One process event the tracker cares about. Pids are host pids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    Fork {
        parent_pid: i32,
        parent_tgid: i32,
        child_pid: i32,
        child_tgid: i32,
    },
    Exec {
        pid: i32,
        tgid: i32,
    },
    Exit {
        pid: i32,
        tgid: i32,
        /// The wait(2)-style status: `code << 8` for an exit, the signal number when killed.
        status: u32,
    },
    /// The kernel's answer to our subscribe request (`err` 0 means subscribed).
    Ack {
        err: u32,
    },
    /// The kernel said netlink messages were lost (`NLMSG_OVERRUN`).
    Overrun,
    /// A well-formed event of a kind we do not track (uid, gid, sid, comm, ptrace, coredump).
    Other {
        what: u32,
    },
}

/// Why a datagram could not be parsed. Parsing stops at the first bad message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {what}: need {need} bytes at offset {at}, have {have}")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
        have: usize,
    },
    #[error("netlink message length {len} at offset {at} is invalid")]
    BadLength { at: usize, len: u32 },
    #[error("netlink error message: errno {errno}")]
    Netlink { errno: i32 },
}

fn slice<'a>(
    buf: &'a [u8],
    at: usize,
    need: usize,
    what: &'static str,
) -> Result<&'a [u8], WireError> {
    at.checked_add(need)
        .and_then(|end| buf.get(at..end))
        .ok_or(WireError::Truncated {
            what,
            at,
            need,
            have: buf.len().saturating_sub(at),
        })
}

fn u32_at(buf: &[u8], at: usize, what: &'static str) -> Result<u32, WireError> {
    let b: [u8; 4] = slice(buf, at, 4, what)?
        .try_into()
        .map_err(|_| WireError::Truncated {
            what,
            at,
            need: 4,
            have: 0,
        })?;
    Ok(u32::from_ne_bytes(b))
}

fn i32_at(buf: &[u8], at: usize, what: &'static str) -> Result<i32, WireError> {
    u32_at(buf, at, what).map(|v| i32::from_ne_bytes(v.to_ne_bytes()))
}

fn u16_at(buf: &[u8], at: usize, what: &'static str) -> Result<u16, WireError> {
    let b: [u8; 2] = slice(buf, at, 2, what)?
        .try_into()
        .map_err(|_| WireError::Truncated {
            what,
            at,
            need: 2,
            have: 0,
        })?;
    Ok(u16::from_ne_bytes(b))
}

/// Parses every netlink message in one datagram. Messages that are not from the proc
/// connector are skipped.
pub fn parse_datagram(buf: &[u8]) -> Result<Vec<ProcEvent>, WireError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while buf.len().saturating_sub(at) >= NLMSG_HDR_LEN {
        let len = u32_at(buf, at, "nlmsghdr")?;
        let ty = u16_at(buf, at + 4, "nlmsghdr")?;
        let len_usize = usize::try_from(len).map_err(|_| WireError::BadLength { at, len })?;
        if len_usize < NLMSG_HDR_LEN {
            return Err(WireError::BadLength { at, len });
        }
        let msg = slice(buf, at, len_usize, "netlink message")?;
        let payload = msg.get(NLMSG_HDR_LEN..).unwrap_or_default();
        match ty {
            NLMSG_ERROR => {
                let errno = i32_at(payload, 0, "nlmsgerr")?;
                if errno != 0 {
                    return Err(WireError::Netlink { errno });
                }
            }
            NLMSG_OVERRUN => out.push(ProcEvent::Overrun),
            NLMSG_DONE => {
                if let Some(ev) = parse_cn_msg(payload)? {
                    out.push(ev);
                }
            }
            _ => {}
        }
        // NLMSG_ALIGN: messages are padded to 4 bytes.
        let step = len_usize
            .checked_add(3)
            .map(|n| n & !3)
            .unwrap_or(usize::MAX);
        at = at.saturating_add(step);
    }
    Ok(out)
}

/// Parses one `cn_msg` (header plus its `proc_event`). `None` for other connector users.
pub fn parse_cn_msg(buf: &[u8]) -> Result<Option<ProcEvent>, WireError> {
    let idx = u32_at(buf, 0, "cn_msg")?;
    let val = u32_at(buf, 4, "cn_msg")?;
    let data_len = usize::from(u16_at(buf, 16, "cn_msg")?);
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return Ok(None);
    }
    let data = slice(buf, CN_MSG_LEN, data_len, "cn_msg data")?;
    parse_proc_event(data).map(Some)
}

/// Parses one `proc_event`.
pub fn parse_proc_event(buf: &[u8]) -> Result<ProcEvent, WireError> {
    let what = u32_at(buf, 0, "proc_event")?;
    // cpu (4) and timestamp_ns (8) are not used; check they are present anyway.
    slice(buf, 0, PROC_EVENT_HDR_LEN, "proc_event")?;
    let d = PROC_EVENT_HDR_LEN;
    Ok(match what {
        PROC_EVENT_NONE => ProcEvent::Ack {
            err: u32_at(buf, d, "ack event")?,
        },
        PROC_EVENT_FORK => ProcEvent::Fork {
            parent_pid: i32_at(buf, d, "fork event")?,
            parent_tgid: i32_at(buf, d + 4, "fork event")?,
            child_pid: i32_at(buf, d + 8, "fork event")?,
            child_tgid: i32_at(buf, d + 12, "fork event")?,
        },
        PROC_EVENT_EXEC => ProcEvent::Exec {
            pid: i32_at(buf, d, "exec event")?,
            tgid: i32_at(buf, d + 4, "exec event")?,
        },
        PROC_EVENT_EXIT => ProcEvent::Exit {
            pid: i32_at(buf, d, "exit event")?,
            tgid: i32_at(buf, d + 4, "exit event")?,
            status: u32_at(buf, d + 8, "exit event")?,
        },
        other => ProcEvent::Other { what: other },
    })
}

/// The message that subscribes a socket to proc events (`op` = [`PROC_CN_MCAST_LISTEN`]).
pub fn subscribe_message(port_id: u32, op: u32) -> Vec<u8> {
    let total = NLMSG_HDR_LEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    // nlmsghdr
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&port_id.to_ne_bytes());
    // cn_msg
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&4u16.to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&op.to_ne_bytes());
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds one datagram carrying a proc_event `what` with `fields` as its union body.
    pub(crate) fn event_datagram(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&what.to_ne_bytes());
        data.extend_from_slice(&0u32.to_ne_bytes()); // cpu
        data.extend_from_slice(&123u64.to_ne_bytes()); // timestamp
        for f in fields {
            data.extend_from_slice(&f.to_ne_bytes());
        }
        let total = NLMSG_HDR_LEN + CN_MSG_LEN + data.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0; 2 + 4 + 4]);
        m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(data.len() as u16).to_ne_bytes());
        m.extend_from_slice(&[0; 2]);
        m.extend_from_slice(&data);
        m
    }

    #[test]
    fn parses_fork_exec_exit_and_ack() {
        let fork = event_datagram(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        assert_eq!(
            parse_datagram(&fork),
            Ok(vec![ProcEvent::Fork {
                parent_pid: 10,
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            }])
        );
        let exec = event_datagram(PROC_EVENT_EXEC, &[11, 11]);
        assert_eq!(
            parse_datagram(&exec),
            Ok(vec![ProcEvent::Exec { pid: 11, tgid: 11 }])
        );
        let exit = event_datagram(PROC_EVENT_EXIT, &[11, 11, 7 << 8, 17, 10, 10]);
        assert_eq!(
            parse_datagram(&exit),
            Ok(vec![ProcEvent::Exit {
                pid: 11,
                tgid: 11,
                status: 7 << 8
            }])
        );
        let ack = event_datagram(PROC_EVENT_NONE, &[0]);
        assert_eq!(parse_datagram(&ack), Ok(vec![ProcEvent::Ack { err: 0 }]));
        let uid = event_datagram(0x4, &[1, 1, 0, 0]);
        assert_eq!(parse_datagram(&uid), Ok(vec![ProcEvent::Other { what: 4 }]));
    }

    #[test]
    fn two_messages_in_one_datagram() {
        let mut d = event_datagram(PROC_EVENT_EXEC, &[5, 5]);
        d.extend(event_datagram(PROC_EVENT_EXEC, &[6, 6]));
        assert_eq!(parse_datagram(&d).map(|v| v.len()), Ok(2));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = event_datagram(PROC_EVENT_EXIT, &[11, 11, 9, 17, 10, 10]);
        for cut in 0..full.len() {
            let part = &full[..cut];
            // Shorter than a header parses as nothing; anything else must be a typed error.
            let r = parse_datagram(part);
            if cut < NLMSG_HDR_LEN {
                assert_eq!(r, Ok(vec![]));
            } else {
                assert!(r.is_err(), "cut {cut}: {r:?}");
            }
        }
        // A cn_msg that claims more data than the message carries.
        let mut lying = event_datagram(PROC_EVENT_EXEC, &[5, 5]);
        lying[NLMSG_HDR_LEN + 16] = 0xff;
        assert!(matches!(
            parse_datagram(&lying),
            Err(WireError::Truncated { .. })
        ));
        // A length smaller than the header, and a huge one.
        let mut bad = full.clone();
        bad[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(matches!(
            parse_datagram(&bad),
            Err(WireError::BadLength { .. })
        ));
        bad[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_datagram(&bad).is_err());
    }

    #[test]
    fn other_connectors_are_skipped_and_overrun_reported() {
        let mut d = event_datagram(PROC_EVENT_EXEC, &[5, 5]);
        d[NLMSG_HDR_LEN] = 9; // cn idx
        assert_eq!(parse_datagram(&d), Ok(vec![]));
        let mut o = vec![0u8; NLMSG_HDR_LEN];
        o[..4].copy_from_slice(&16u32.to_ne_bytes());
        o[4..6].copy_from_slice(&NLMSG_OVERRUN.to_ne_bytes());
        assert_eq!(parse_datagram(&o), Ok(vec![ProcEvent::Overrun]));
    }

    #[test]
    fn subscribe_message_round_trips_as_a_cn_msg() {
        let m = subscribe_message(42, PROC_CN_MCAST_LISTEN);
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0, "t"), Ok(40));
        assert_eq!(u32_at(&m, 12, "t"), Ok(42));
        assert_eq!(u32_at(&m, 36, "t"), Ok(PROC_CN_MCAST_LISTEN));
    }
}
