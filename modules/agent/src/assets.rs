//! The console's page and script (no build step: served as written).

/// `GET /agent`.
pub const CONSOLE_HTML: &str = include_str!("../web/console.html");
/// `GET /agent/console.js`.
pub const CONSOLE_JS: &str = include_str!("../web/console.js");
