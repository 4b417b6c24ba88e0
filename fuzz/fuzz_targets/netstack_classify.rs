//! `idagent_netstack::classify::classify` over one raw IP packet (TUN, no packet-information
//! header): never panics, and what it reports is consistent with the input.
#![no_main]

use idagent_netstack::classify::{classify, ClassifyError, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Ok(meta) => {
            assert_eq!(meta.len, data.len());
            assert_eq!(meta.src.is_ipv4(), data[0] >> 4 == 4);
            assert_eq!(meta.src.is_ipv4(), meta.dst.is_ipv4());
            // Ports exactly for TCP and UDP.
            let has_ports = matches!(meta.transport, Transport::Tcp { .. } | Transport::Udp);
            assert_eq!(meta.src_port.is_some(), has_ports, "{meta:?}");
            assert_eq!(meta.dst_port.is_some(), has_ports, "{meta:?}");
        }
        Err(ClassifyError::Empty) => assert!(data.is_empty()),
        Err(ClassifyError::NotIp(v)) => assert!(v != 4 && v != 6),
        Err(ClassifyError::Malformed { len, .. }) => assert_eq!(len, data.len()),
    }
});
