//! The JSON log line: one object per event, its fields at the top level and
//! the fields of the span it happened in under `span`:
//!
//! ```json
//! {"timestamp":"…","level":"INFO","message":"invocation","component":"hello",
//!  "target":"switchyard::runtime::invoke","span":{"request_id":"…","name":"request"}}
//! ```
//!
//! The same shape as `tracing-subscriber`'s JSON format with flattened
//! events and the current span, written straight into the line buffer. A
//! span's fields are written as JSON once, when the span is created, and
//! copied into each of its events as they are; the stock formatter parses
//! them back into a map for every event.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// Formats span fields as the members of a JSON object, without its
/// braces: `"request_id":"…","method":"GET"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonMembers;

impl<'w> FormatFields<'w> for JsonMembers {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut members = Members::new(&mut writer, first);
        fields.record(&mut members);
        members.result
    }
}

impl<S> FormatEvent<S, JsonMembers> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonMembers>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events forwarded from the `log` crate carry their real target in
        // fields; this gives them their own metadata back.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut members = Members::new(&mut writer, false);
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, meta.target())?;

        let span = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<JsonMembers>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes fields as `"name":value` members, comma-separated.
struct Members<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// No member written yet, so none needs a comma before it.
    first: bool,
    result: fmt::Result,
}

impl<'a, 'w> Members<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>, first: bool) -> Self {
        Members { writer, first, result: Ok(()) }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.writer.write_char(',')?;
            }
            write_string(self.writer, field.name())?;
            self.writer.write_char(':')?;
            value(self.writer)
        })();
    }
}

impl Visit for Members<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_string(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; write those as strings.
        if value.is_finite() {
            self.member(field, |w| write!(w, "{value}"));
        } else {
            self.member(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` arrives here as format arguments; Debug prints them as
        // written.
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Writes `time` as RFC 3339 in UTC with microseconds,
/// `2026-11-23T01:31:06.569766Z`, as `tracing-subscriber` does. The part up
/// to the second is worked out once per second and thread.
fn write_timestamp(w: &mut impl Write, time: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: Cell<Option<(u64, [u8; 19])>> = const { Cell::new(None) };
    }
    // A clock set before 1970 is written as the epoch.
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    let prefix = match SECOND.get() {
        Some((cached, prefix)) if cached == second => prefix,
        _ => {
            let prefix = date_time(second);
            SECOND.set(Some((second, prefix)));
            prefix
        }
    };
    // ASCII digits and separators only, so always UTF-8.
    w.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    let mut fraction = *b".000000Z";
    put_digits(&mut fraction[1..7], since_epoch.subsec_micros().into());
    w.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of a count of seconds since the Unix epoch, UTC.
fn date_time(seconds: u64) -> [u8; 19] {
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], in_day / 3600);
    put_digits(&mut out[14..16], in_day / 60 % 60);
    put_digits(&mut out[17..19], in_day % 60);
    out
}

/// Writes the last `out.len()` decimal digits of `value`, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of a count of days since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, for days on or
/// after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01, so that the leap day ends each 4-year cycle.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` as a JSON string, quotes included.
fn write_string(w: &mut impl Write, value: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(value)?;
    w.write_char('"')
}

/// Escapes what passes through it for use inside a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0; // start of the run not yet written
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[clean..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            clean = i + 1;
        }
        self.0.write_str(&s[clean..])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::telemetry::Captured;

    /// Runs `f` under a JSON-lines subscriber; returns each line parsed.
    fn lines_of(f: impl FnOnce()) -> Vec<Value> {
        let capture = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .fmt_fields(JsonMembers)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        capture
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn fields_are_typed_and_strings_escaped() {
        let lines = lines_of(|| {
            let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é 🦀";
            tracing::warn!(
                text = tricky,
                count = 3u64,
                delta = -2i64,
                ratio = 0.5,
                nan = f64::NAN,
                ok = true,
                debug = ?vec!["a"],
                shown = %"displayed",
                "message with {}", "args"
            );
        });
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "message with args");
        assert_eq!(line["text"], "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é 🦀");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["ok"], true);
        assert_eq!(line["debug"], "[\"a\"]");
        assert_eq!(line["shown"], "displayed");
        assert_eq!(line["target"], module_path!());
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(line.get("span").is_none());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        use std::time::Duration;
        let at = |seconds: u64, micros: u32| {
            let mut out = String::new();
            let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros.into());
            write_timestamp(&mut out, time).unwrap();
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(at(1_709_164_800, 120_000), "2024-02-29T00:00:00.120000Z");
        assert_eq!(at(1_795_397_466, 569_766), "2026-11-23T01:31:06.569766Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        // The cached second is not reused for the next one.
        assert_eq!(at(1_795_397_467, 1), "2026-11-23T01:31:07.000001Z");
        // Every day of 400 years (a whole Gregorian cycle) against a plain
        // count of days through the calendar.
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn events_carry_the_fields_of_their_span_including_later_ones() {
        let lines = lines_of(|| {
            let span =
                tracing::info_span!("request", request_id = "r-1", path = "/a\"b", status = tracing::field::Empty);
            let _entered = span.enter();
            tracing::info!("inside");
            span.record("status", 201u64);
            tracing::info!("after record");
            let quiet = tracing::info_span!("quiet");
            quiet.in_scope(|| tracing::info!("in a span without fields"));
        });
        assert_eq!(lines[0]["span"], json!({ "request_id": "r-1", "path": "/a\"b", "name": "request" }));
        assert_eq!(lines[1]["span"]["status"], 201);
        assert_eq!(lines[1]["span"]["request_id"], "r-1");
        assert_eq!(lines[2]["span"], json!({ "name": "quiet" }));
    }
}
