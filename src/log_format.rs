//! The log line format: tracing's default (`<time>  WARN <target>: <message>`), except ban
//! lines, written `<time> <IP> banned: "Ban: <reason>, banned for <n> s"` so that the IP comes
//! first after the timestamp. fail2ban removes the timestamp and then matches from the start:
//! the operator guide's own filter `<HOST> .* "Ban:.*"` then finds the miner's IP, not the
//! log level, and `deploy/fail2ban/` matches it with or without a syslog prefix.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of ban lines (`tracing::warn!(target: BAN_TARGET, ...)`).
pub const BAN_TARGET: &str = "pastella_pool::ban";

/// The pool's event format (see the module docs).
#[derive(Default)]
pub struct PoolFormat {
    default: Format,
}

impl<S, N> FormatEvent<S, N> for PoolFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if event.metadata().target() != BAN_TARGET {
            return self.default.format_event(ctx, writer, event);
        }
        SystemTime.format_time(&mut writer)?;
        writer.write_char(' ')?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
