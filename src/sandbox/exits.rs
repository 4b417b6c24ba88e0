//! Exit records where the kernel's proc connector does not answer (a non-initial network
//! namespace: a CI job in a container, a Kubernetes pod): the guest init reports every
//! process it reaps over the control connection (see `idagent_guest::ctl`), and this thread
//! turns the reports into `exit` events with `source: "init"`. The supervisor adds the
//! `exit_group` of every other process.
//!
//! Init is ours but runs inside the guest; its reports are parsed strictly and bounded, and a
//! malformed line is a notice, never a panic.

use crate::audit::{AuditSink, EventBody, ExitEvent, Notice};
use idagent_guest::ctl::{InitReport, ReportReader};

/// Malformed report lines recorded one by one before the rest are only counted.
const MAX_MALFORMED_NOTICES: u32 = 8;

/// Reads init's reports until it closes the connection (it exits with the guest). Returns the
/// command's exit code (128 + signal for a signal) when init named the command (`MAIN`) and
/// reported its exit.
pub(crate) fn spawn(
    mut reader: ReportReader,
    sink: AuditSink,
) -> std::thread::JoinHandle<Option<i64>> {
    std::thread::Builder::new()
        .name("init-reports".into())
        .spawn(move || {
            let mut malformed = 0u32;
            let (mut main, mut main_exit) = (None, None);
            while let Some(report) = reader.next_report() {
                match report {
                    Ok(InitReport::Main(pid)) => main = Some(pid),
                    Ok(InitReport::Exit { pid, code, signal }) => {
                        if main == Some(pid) {
                            main_exit = code
                                .map(i64::from)
                                .or(signal.map(|s| 128 + i64::from(s)));
                        }
                        sink.emit(EventBody::Exit(ExitEvent {
                            pid,
                            code,
                            signal,
                            exe: None,
                            source: Some("init".into()),
                        }))
                    }
                    Ok(InitReport::Lost(n)) => sink.emit(EventBody::Notice(Notice {
                        what: "init_reports_lost".into(),
                        detail: format!(
                            "the guest init could not report {n} exit(s): the host was not reading fast enough"
                        ),
                    })),
                    Err(e) => {
                        malformed += 1;
                        if malformed <= MAX_MALFORMED_NOTICES {
                            sink.emit(EventBody::Notice(Notice {
                                what: "init_report_malformed".into(),
                                detail: e.to_string(),
                            }));
                        }
                    }
                }
            }
            main_exit
        })
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot spawn the init report reader");
            std::thread::spawn(|| None)
        })
}
