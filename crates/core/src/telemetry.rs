//! The one place logging is set up. `WRITEBACK_LOG` is an EnvFilter
//! directive (default `info`); `WRITEBACK_LOG_FORMAT=json` switches to JSON
//! lines. Messages are lowercase with structured fields (`operation_id`,
//! `tenant`, `domain`, `agent_id`), and no secret is ever a field.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call is a no-op (tests call it
/// from many places).
pub fn init() {
    let filter =
        EnvFilter::try_from_env("WRITEBACK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WRITEBACK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
