//! The widget's files, compiled into the binary: the loader (`/c2c.js`), the media client
//! (`/client/<version>.js`, cached forever: its URL changes with its content) and the demo
//! shop page.

/// The loader: renders the button, opens the panel, fetches the media client on click.
pub const LOADER: &str = include_str!("../web/c2c.js");
/// The media client: WebSocket signalling, RTCPeerConnection, dial pad.
pub const CLIENT: &str = include_str!("../web/client.js");
/// The demo shop (`/demo/shop`).
pub const DEMO_SHOP: &str = include_str!("../web/shop.html");

/// A short content hash of the media client: its immutable URL.
pub fn client_version() -> String {
    // FNV-1a 64: stable across builds and platforms, no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in CLIENT.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
