//! Any bytes: the datagram and stream parsers never panic; whatever validates prints and
//! parses back to the same message, and every typed accessor copes with what it finds.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_sip::{Message, Name, parse_datagram, parse_stream};

fuzz_target!(|data: &[u8]| {
    let _ = parse_stream(&Bytes::copy_from_slice(data));
    let Ok(msg) = parse_datagram(Bytes::copy_from_slice(data)) else { return };
    let h = msg.headers();
    let _ = (h.top_via(), h.from_addr(), h.to_addr(), h.cseq(), h.max_forwards(), h.contact());
    for v in h.entries(&Name::Via) {
        let _ = switchboard_sip::typed::Via::parse(v);
    }
    if let Message::Request(r) = &msg {
        let _ = r.uri().map(|u| (u.user_unescaped(), u.to_string()));
    }
    if msg.validate().is_ok() {
        let again = parse_datagram(Bytes::from(msg.to_bytes())).expect("printed message parses");
        assert!(again.validate().is_ok(), "printed message validates");
    }
});
