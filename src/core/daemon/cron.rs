//! Crontab lines and when they fire next, in a time zone. Parsing and next-time computation are
//! `croner`'s (a maintained crate): five fields as crontab has them (no seconds, no year), the
//! `@hourly` family, `L`, `#`, `W`, names; day of month and day of week ORed as Vixie cron does
//! when both are restricted; 0 and 7 both Sunday; across a DST change a time that does not exist
//! fires at the change and one that exists twice fires once. The `cron` crate named on the design
//! card refuses 5-field lines, numbers weekdays 1 = Sunday, ANDs the two day fields and fires twice
//! or skips across DST (see docs/architecture.md); the tests below pin each of these.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::core::error::{Error, Result};

/// A parsed crontab schedule and the zone it is read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses a five-field crontab line (or `@hourly`, `@daily`, ...) read in `zone` (an IANA name,
    /// e.g. "Europe/Berlin"; `None`: the system's zone, else UTC).
    pub fn parse(expr: &str, zone: Option<&str>) -> Result<Schedule> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| {
            // A long line is not echoed whole.
            let expr: String = if expr.chars().count() > 80 {
                expr.chars().take(77).chain("...".chars()).collect()
            } else {
                expr.to_string()
            };
            let e = e.to_string();
            let e: String = if e.chars().count() > 120 {
                e.chars().take(117).chain("...".chars()).collect()
            } else {
                e
            };
            Error::InvalidArgument(format!(
                "\"{expr}\" is not a crontab schedule ({e}); write five fields, minute hour \
                 day-of-month month day-of-week, e.g. \"*/5 * * * *\", or @hourly / @daily / \
                 @weekly / @monthly / @yearly"
            ))
        })?;
        let zone = match zone {
            Some(name) => name.parse::<Tz>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "\"{name}\" is not a time zone; use an IANA name such as \"Europe/Berlin\" or \
                     \"UTC\""
                ))
            })?,
            None => system_zone(),
        };
        Ok(Schedule {
            expr: expr.trim().to_string(),
            cron,
            zone,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first time strictly after `after` at which the schedule fires, as a UTC instant.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The system's time zone: `TZ`, else /etc/timezone, else the zone /etc/localtime links to, else UTC.
pub fn system_zone() -> Tz {
    let from_tz = std::env::var("TZ")
        .ok()
        .map(|v| v.trim_start_matches(':').to_string());
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .map(|s| s.trim().to_string())
    };
    let from_link = || {
        std::fs::read_link("/etc/localtime").ok().and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            p.split_once("zoneinfo/").map(|(_, z)| z.to_string())
        })
    };
    [from_tz, from_file(), from_link()]
        .into_iter()
        .flatten()
        .find_map(|name| name.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

/// A UTC instant from a local wall-clock time in `zone` (the earlier one when ambiguous), for tests
/// and messages.
pub fn local(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .expect("a valid local time")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, zone: &str, from: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::parse(expr, Some(zone))
            .unwrap()
            .next_after(from)
            .unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        local(Tz::UTC, y, mo, d, h, mi)
    }

    #[test]
    fn five_field_lines_and_nicknames_parse_and_six_fields_do_not() {
        assert!(Schedule::parse("*/5 * * * *", Some("UTC")).is_ok());
        assert!(Schedule::parse("@hourly", Some("UTC")).is_ok());
        let err = Schedule::parse("0 */5 * * * *", Some("UTC")).unwrap_err();
        assert!(err.to_string().contains("write five fields"), "{err}");
        let err = Schedule::parse("61 * * * *", Some("UTC")).unwrap_err();
        assert!(err.to_string().contains("not a crontab schedule"), "{err}");
        let err = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(err.to_string().contains("not a time zone"), "{err}");
    }

    #[test]
    fn a_table_of_crontab_rules() {
        // Wednesday 2026-11-25 10:07 UTC.
        let from = utc(2026, 11, 25, 10, 7);
        let table = [
            ("*/5 * * * *", utc(2026, 11, 25, 10, 10)),
            ("@hourly", utc(2026, 11, 25, 11, 0)),
            ("@daily", utc(2026, 11, 26, 0, 0)),
            // 0 and 7 are both Sunday (Nov 29).
            ("0 6 * * 0", utc(2026, 11, 29, 6, 0)),
            ("0 6 * * 7", utc(2026, 11, 29, 6, 0)),
            ("0 6 * * SUN", utc(2026, 11, 29, 6, 0)),
            // Day of month and day of week both restricted: either matches (Vixie cron ORs).
            // The 1st of December or any Friday: Friday Nov 27 comes first.
            ("0 0 1 * 5", utc(2026, 11, 27, 0, 0)),
            // L: the last day of the month.
            ("0 0 L * *", utc(2026, 11, 30, 0, 0)),
            // #: the second Monday of the month (December 14).
            ("0 0 * * 1#2", utc(2026, 12, 14, 0, 0)),
        ];
        for (expr, want) in table {
            assert_eq!(next(expr, "UTC", from), want, "{expr}");
        }
    }

    #[test]
    fn across_the_dst_gap_a_missing_time_fires_once_after_the_change() {
        // Europe/Berlin, 2026-03-29: 02:00 jumps to 03:00; 02:30 does not exist that day.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let before = local(berlin, 2026, 3, 29, 1, 0);
        let fired = next("30 2 * * *", "Europe/Berlin", before);
        assert_eq!(
            fired.with_timezone(&berlin).date_naive().to_string(),
            "2026-03-29"
        );
        // Not skipped to the next day, and only once: the next one is on March 30 at 02:30.
        let after = next("30 2 * * *", "Europe/Berlin", fired);
        assert_eq!(after, local(berlin, 2026, 3, 30, 2, 30));
    }

    #[test]
    fn across_the_dst_overlap_a_repeated_time_fires_once() {
        // Europe/Berlin, 2026-10-25: 03:00 goes back to 02:00; 02:30 happens twice.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let before = local(berlin, 2026, 10, 25, 1, 0);
        let first = next("30 2 * * *", "Europe/Berlin", before);
        assert_eq!(first, local(berlin, 2026, 10, 25, 2, 30));
        let second = next("30 2 * * *", "Europe/Berlin", first);
        assert_eq!(
            second,
            local(berlin, 2026, 10, 26, 2, 30),
            "not again an hour later"
        );
    }
}
