//! Which parser refuses which malformed message. Prints a Markdown table.

use std::convert::TryFrom;

use bytes::Bytes;
use sip_parse_bench::malformed;

fn ours(raw: &str) -> bool {
    sip_parse_bench::ours_parse(Bytes::copy_from_slice(raw.as_bytes())).is_none()
}

fn rsipstack(raw: &str) -> bool {
    rsipstack::sip::SipMessage::try_from(raw.as_bytes()).is_err()
}

fn ezk(raw: &str) -> bool {
    sip_parse_bench::ezk_parse(raw.as_bytes()).is_none()
}

fn main() {
    println!("| malformed message | switchboard-sip | ezk-sip-types | rsipstack |");
    println!("|---|---|---|---|");
    let mut totals = [0; 3];
    let cases = malformed();
    for (name, raw) in &cases {
        let r = [ours(raw), ezk(raw), rsipstack(raw)];
        for (t, refused) in totals.iter_mut().zip(r) {
            *t += usize::from(refused);
        }
        let mark = |b: bool| if b { "refused" } else { "**accepted**" };
        println!("| {name} | {} | {} | {} |", mark(r[0]), mark(r[1]), mark(r[2]));
    }
    println!("| **refused** | {}/{n} | {}/{n} | {}/{n} |", totals[0], totals[1], totals[2], n = cases.len());
}
