//! Standard 5-field cron in an IANA time zone, and the next instant it fires.
//!
//! Grammar (contract §10): `minute hour day-of-month month day-of-week`, each field a comma list of
//! `*`, `*/N`, `N`, `N-M` or `N-M/S`; day-of-week 0–7 with 0 and 7 Sunday. When both day fields
//! are restricted (written other than a lone `*`) a day matching either fires, as in standard
//! cron. The grammar is checked here first, so croner's extensions (`L`, `W`, `#`, `?`, names,
//! `@daily`, seconds, years) are refused with a message instead of silently accepted; croner then
//! matches wall-clock times (it numbers days like standard cron and ORs the day fields).
//!
//! **Daylight saving time.** Matching is on the zone's wall clock; a matching wall-clock time is
//! turned into an instant so that each fires at most once:
//! * a time the clocks skip (spring forward) fires once, at the first instant after the gap (for
//!   New York, `30 2 * * *` fires at 03:00 EDT on the day the clocks go from 02:00 to 03:00; any
//!   number of skipped matching times in one gap fire once together);
//! * a time that happens twice (fall back) fires once, at its first occurrence (`*/15 1 * * *`
//!   fires at 01:00, 01:15, 01:30, 01:45 EDT and not again in the repeated EST hour).

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Each field's name, range and an example, in order.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Longest cron expression read (a longer one is invalid): lists of every value of every field
/// fit in far less.
pub const MAX_EXPR_CHARS: usize = 1024;

/// Longest part of a hostile expression quoted back in a message.
const MAX_QUOTED: usize = 64;

/// `s` quoted for a message, at most [`MAX_QUOTED`] characters of it.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        None => format!("{s:?}"),
        Some((at, _)) => format!("{:?}…", &s[..at]),
    }
}

/// How many candidate wall-clock times one search looks at before giving up: a repeated hour
/// holds at most 60 matches of one expression, so this is never reached by a real schedule.
const MAX_CANDIDATES: usize = 1_000;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronExpr {
    cron: Cron,
    tz: Tz,
}

impl CronExpr {
    /// Parses `expr` (see the module docs); the error says what to write instead.
    pub fn parse(expr: &str, tz: Tz) -> Result<CronExpr, String> {
        if expr.chars().count() > MAX_EXPR_CHARS {
            return Err(format!(
                "cron {} is longer than {MAX_EXPR_CHARS} characters; write 5 short fields, e.g. \"*/5 * * * *\"",
                shown(expr)
            ));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron {} has {} field(s); write 5: minute hour day-of-month month \
                 day-of-week, e.g. \"*/5 * * * *\" or \"0 9 * * 1-5\"",
                shown(expr),
                fields.len()
            ));
        }
        let mut translated = Vec::with_capacity(5);
        for (field, (name, lo, hi)) in fields.iter().zip(FIELDS) {
            check_field(field, name, lo, hi)?;
            translated.push(translate(field, lo, hi));
        }
        never_on_a_date(expr, fields[2], fields[3], fields[4])?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&translated.join(" "))
            .map_err(|e| format!("cron {} is not valid: {e}", shown(expr)))?;
        Ok(CronExpr { cron, tz })
    }

    /// The first instant strictly after `now` at which the expression fires (see the DST rule in
    /// the module docs); `None` when it matches no date (`0 0 30 2 *`).
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = now.with_timezone(&self.tz).naive_local();
        for _ in 0..MAX_CANDIDATES {
            let local = self.cron.find_next_occurrence(&cursor, false).ok()?;
            // Wall-clock matches map to instants in order (a repeated time to its first
            // occurrence, a skipped one to the end of its gap), so the first that lies after `now`
            // is the earliest fire; those before it were the first occurrences of a repeated hour
            // that `now` is already in the second half of.
            let at = self.instant(local)?;
            if at > now {
                return Some(at);
            }
            cursor = local;
        }
        None
    }

    /// The instant a matching wall-clock time fires at.
    fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
            LocalResult::None => self.end_of_gap(local),
        }
    }

    /// The first instant after the gap that swallowed `local`: the last valid wall-clock minute
    /// before it, then the first instant whose wall clock is past `local`.
    fn end_of_gap(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let day = 24 * 60;
        let before = (1..=day).find_map(|k| {
            self.tz
                .from_local_datetime(&(local - Duration::minutes(k)))
                .earliest()
        })?;
        let mut t = before.with_timezone(&Utc);
        for _ in 0..day {
            t += Duration::minutes(1);
            if t.with_timezone(&self.tz).naive_local() > local {
                return Some(t);
            }
        }
        None
    }
}

/// The field as croner reads it: croner refuses `*` inside a list (`*,5`, `*/10,3`), which
/// standard cron accepts, so there a `*` is written as the field's full range. A lone `*` stays,
/// since it is what marks a day field as unrestricted for the dom/dow OR.
fn translate(field: &str, lo: u32, hi: u32) -> String {
    if field == "*" || !field.contains(',') {
        return field.to_string();
    }
    field
        .split(',')
        .map(|item| match item.strip_prefix('*') {
            Some(rest) => format!("{lo}-{hi}{rest}"),
            None => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses an expression whose days can never come: the day-of-week field is `*` (so only the
/// day of month decides) and no listed day exists in any listed month (`0 0 30 2 *`). Searching
/// for such a date would walk every year croner knows (to 5000) on every plan — seconds of the
/// scheduler's time per flow. February has 29 days here: `29 2` fires in leap years.
fn never_on_a_date(expr: &str, dom: &str, month: &str, dow: &str) -> Result<(), String> {
    if dow != "*" || dom == "*" {
        return Ok(());
    }
    const DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days = values(dom, 1, 31);
    let months = values(month, 1, 12);
    let possible = (1..=12u32)
        .filter(|m| months[*m as usize])
        .any(|m| (1..=DAYS[m as usize - 1]).any(|d| days[d as usize]));
    if possible {
        Ok(())
    } else {
        Err(format!(
            "cron {}: day-of-month {} never occurs in month {}, so it would never fire; pick a day every listed month has",
            shown(expr),
            shown(dom),
            shown(month)
        ))
    }
}

/// The values a field (already checked) allows, as a table indexed by value (`0..=hi`).
fn values(field: &str, lo: u32, hi: u32) -> Vec<bool> {
    let mut set = vec![false; hi as usize + 1];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().unwrap_or(1).max(1)),
            None => (item, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap_or(lo), b.parse().unwrap_or(hi)),
                None => {
                    let n = r.parse().unwrap_or(lo);
                    (n, n)
                }
            },
        };
        let mut v = a;
        while v <= b.min(hi) {
            set[v as usize] = true;
            v += step;
        }
    }
    set
}

/// Checks one field against the grammar and its range.
fn check_field(field: &str, name: &str, lo: u32, hi: u32) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "cron {name} field {}: {why}; write *, */N, N, N-M or N-M/S (or a comma \
             list of them) with values {lo}-{hi}",
            shown(field)
        ))
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= hi.max(1) => {}
                _ => return bad(format!("step {} is not a number from 1 to {hi}", shown(s))),
            }
        }
        if range == "*" {
            continue;
        }
        let number = |s: &str| -> Result<u32, String> {
            match s.parse::<u32>() {
                Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) && (lo..=hi).contains(&n) => Ok(n),
                _ => Err(format!("{} is not a number from {lo} to {hi}", shown(s))),
            }
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = match (number(a), number(b)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return bad(e),
                };
                if a > b {
                    return bad(format!("the range {a}-{b} runs backwards"));
                }
            }
            None => {
                if let Err(e) = number(range) {
                    return bad(e);
                }
                if step.is_some() {
                    return bad(format!(
                        "a step needs a range or *, not {} alone",
                        shown(range)
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn next(expr: &str, tz: &str, now: &str) -> String {
        CronExpr::parse(expr, tz.parse().unwrap())
            .unwrap()
            .next_after(utc(now))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn refuses_what_is_not_standard_cron_and_says_what_to_write() {
        let tz = Tz::UTC;
        for (expr, says) in [
            ("* * * *", "write 5"),
            ("0 * * * * *", "write 5"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("* * * * MON", "day-of-week"),
            ("* * L * *", "day-of-month"),
            ("5-1 * * * *", "backwards"),
            ("*/0 * * * *", "step"),
            ("5/10 * * * *", "a step needs a range"),
            ("@daily", "write 5"),
            ("", "write 5"),
            ("1,,2 * * * *", "minute"),
        ] {
            let e = CronExpr::parse(expr, tz).unwrap_err();
            assert!(e.contains(says), "{expr:?}: {e}");
            assert!(e.contains("write"), "{expr:?}: {e}");
        }
    }

    #[test]
    fn accepts_the_standard_forms() {
        for expr in [
            "* * * * *",
            "*/5 * * * *",
            "0 9 * * 7",
            "0 12 1 * 1",
            "1-59/2 0-23/3 1,15 1-12 0-7",
            "0,30 8-18 * * 1-5",
        ] {
            CronExpr::parse(expr, Tz::UTC).unwrap();
        }
    }

    #[test]
    fn dow_7_and_0_are_sunday_and_dom_dow_are_ored() {
        // 2026-11-30 is a Monday.
        assert_eq!(
            next("0 9 * * 7", "UTC", "2026-11-30T05:00:00Z"),
            "2026-12-06T09:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * 0", "UTC", "2026-11-30T05:00:00Z"),
            "2026-12-06T09:00:00+00:00"
        );
        // The 1st of the month or a Monday, whichever comes first.
        assert_eq!(
            next("0 12 1 * 1", "UTC", "2026-11-30T05:00:00Z"),
            "2026-11-30T12:00:00+00:00"
        );
        assert_eq!(
            next("0 12 1 * 1", "UTC", "2026-11-30T13:00:00Z"),
            "2026-12-01T12:00:00+00:00"
        );
        assert_eq!(
            next("0 12 1 * 1", "UTC", "2026-12-01T13:00:00Z"),
            "2026-12-07T12:00:00+00:00"
        );
    }

    #[test]
    fn a_time_zone_shifts_the_wall_clock() {
        assert_eq!(
            next("0 9 * * *", "Asia/Tokyo", "2026-11-30T05:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
    }

    #[test]
    fn a_skipped_time_fires_once_at_the_end_of_the_gap() {
        // New York, 2025-03-09: 02:00 EST becomes 03:00 EDT (07:00Z).
        let tz = "America/New_York";
        assert_eq!(
            next("30 2 * * *", tz, "2025-03-09T06:00:00Z"),
            "2025-03-09T07:00:00+00:00"
        );
        // Every 15 minutes: 01:45 EST, then one fire for 02:00..02:45 at 03:00 EDT, then 03:15.
        assert_eq!(
            next("*/15 * * * *", tz, "2025-03-09T06:45:00Z"),
            "2025-03-09T07:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", tz, "2025-03-09T07:00:00Z"),
            "2025-03-09T07:15:00+00:00"
        );
        // Lord Howe moves by 30 minutes: 02:00 becomes 02:30 (2025-10-05, 15:30Z).
        assert_eq!(
            next("10 2 * * *", "Australia/Lord_Howe", "2025-10-04T14:00:00Z"),
            "2025-10-04T15:30:00+00:00"
        );
    }

    #[test]
    fn a_repeated_time_fires_once_at_its_first_occurrence() {
        // New York, 2025-11-02: 02:00 EDT becomes 01:00 EST (06:00Z); 01:30 happens twice.
        let tz = "America/New_York";
        assert_eq!(
            next("30 1 * * *", tz, "2025-11-02T05:00:00Z"),
            "2025-11-02T05:30:00+00:00"
        );
        // After the first 01:30, the next is the following day, not the second 01:30.
        assert_eq!(
            next("30 1 * * *", tz, "2025-11-02T05:30:00Z"),
            "2025-11-03T06:30:00+00:00"
        );
        // In the repeated hour, an every-15-minutes schedule waits for 02:00 EST.
        assert_eq!(
            next("*/15 * * * *", tz, "2025-11-02T06:05:00Z"),
            "2025-11-02T07:00:00+00:00"
        );
    }

    #[test]
    fn a_date_that_never_comes_is_refused_and_one_that_comes_rarely_is_not() {
        for expr in ["0 0 30 2 *", "59 23 31 2,4,6,9,11 *", "0 0 30-31 2 *"] {
            let e = CronExpr::parse(expr, Tz::UTC).unwrap_err();
            assert!(e.contains("never occurs"), "{expr}: {e}");
        }
        // The 29th of February comes in leap years; with a day of week, either day fires.
        let c = CronExpr::parse("0 0 29 2 *", Tz::UTC).unwrap();
        assert_eq!(
            c.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
        assert!(CronExpr::parse("0 0 30 2 1", Tz::UTC).is_ok());
        assert!(CronExpr::parse("0 0 31 1-12/2 *", Tz::UTC).is_ok());
    }

    #[test]
    fn a_hostile_expression_is_quoted_short() {
        let long = format!("{} * * * *", "1,".repeat(2000));
        let e = CronExpr::parse(&long, Tz::UTC).unwrap_err();
        assert!(e.len() < 300, "{e}");
        let e = CronExpr::parse(&format!("{} * * * *", "x".repeat(900)), Tz::UTC).unwrap_err();
        assert!(e.len() < 400, "{e}");
    }

    /// The rules written out independently: a field's set of values, the dom/dow OR, and a walk
    /// over every UTC minute with the DST rule of the module docs.
    mod reference {
        use super::*;
        use chrono::{Datelike, Timelike};

        pub struct Rules {
            sets: Vec<Vec<bool>>,
            dom_star: bool,
            dow_star: bool,
        }

        pub fn rules(expr: &str) -> Rules {
            let fields: Vec<&str> = expr.split(' ').collect();
            let sets = fields
                .iter()
                .zip(FIELDS)
                .map(|(f, (_, lo, hi))| {
                    let mut set = vec![false; hi as usize + 1];
                    for item in f.split(',') {
                        let (r, step) = match item.split_once('/') {
                            Some((r, s)) => (r, s.parse::<u32>().unwrap()),
                            None => (item, 1),
                        };
                        let (a, b) = match (r, r.split_once('-')) {
                            ("*", _) => (lo, hi),
                            (_, Some((a, b))) => (a.parse().unwrap(), b.parse().unwrap()),
                            (n, None) => (n.parse().unwrap(), n.parse().unwrap()),
                        };
                        let mut v = a;
                        while v <= b {
                            set[v as usize] = true;
                            v += step;
                        }
                    }
                    set
                })
                .collect();
            Rules {
                sets,
                dom_star: fields[2] == "*",
                dow_star: fields[4] == "*",
            }
        }

        impl Rules {
            /// Whether any day of the 2028 leap year matches the day fields and the month:
            /// every (month, day) pair a calendar has occurs in a leap year.
            pub fn some_day_matches(&self) -> bool {
                let mut d = chrono::NaiveDate::from_ymd_opt(2028, 1, 1).unwrap();
                while d.year() == 2028 {
                    if self.sets[3][d.month() as usize] && self.matches_day(d) {
                        return true;
                    }
                    d = d.succ_opt().unwrap();
                }
                false
            }

            fn matches_day(&self, d: chrono::NaiveDate) -> bool {
                let dow = d.weekday().num_days_from_sunday() as usize;
                let dom = self.sets[2][d.day() as usize];
                let wd = self.sets[4][dow] || (dow == 0 && self.sets[4][7]);
                if self.dom_star || self.dow_star {
                    dom && wd
                } else {
                    dom || wd
                }
            }

            pub fn matches(&self, t: NaiveDateTime) -> bool {
                self.sets[0][t.minute() as usize]
                    && self.sets[1][t.hour() as usize]
                    && self.sets[3][t.month() as usize]
                    && self.matches_day(t.date())
            }

            /// The first minute after `now`, within `horizon` minutes, at which the rules fire.
            pub fn next_after(
                &self,
                tz: Tz,
                now: DateTime<Utc>,
                horizon: i64,
            ) -> Option<DateTime<Utc>> {
                let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
                let start = now.timestamp().div_euclid(60) * 60 + 60;
                let mut t = DateTime::from_timestamp(start, 0).unwrap();
                for _ in 0..horizon {
                    let here = local(t);
                    let first = tz.from_local_datetime(&here).earliest().unwrap();
                    if self.matches(here) && first.with_timezone(&Utc) == t {
                        return Some(t);
                    }
                    // A gap just before t: every wall-clock minute it swallowed fires at t.
                    let mut skipped = local(t - Duration::minutes(1)) + Duration::minutes(1);
                    while skipped < here {
                        if self.matches(skipped) {
                            return Some(t);
                        }
                        skipped += Duration::minutes(1);
                    }
                    t += Duration::minutes(1);
                }
                None
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn item(lo: u32, hi: u32) -> impl Strategy<Value = String> {
            prop_oneof![
                Just("*".to_string()),
                (1..=hi.min(20)).prop_map(|n| format!("*/{n}")),
                (lo..=hi).prop_map(|n| n.to_string()),
                (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (lo..=hi, lo..=hi, 1..6u32).prop_map(|(a, b, s)| format!(
                    "{}-{}/{s}",
                    a.min(b),
                    a.max(b)
                )),
            ]
        }
        fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
            prop_oneof![
                3 => item(lo, hi),
                1 => prop::collection::vec(item(lo, hi), 2..4).prop_map(|v| v.join(",")),
            ]
        }
        /// Hours lean to 0–3, where the clocks change.
        fn expr() -> impl Strategy<Value = String> {
            (
                field(0, 59),
                prop_oneof![field(0, 23), field(0, 3)],
                prop_oneof![2 => Just("*".to_string()), 1 => field(1, 31)],
                prop_oneof![3 => Just("*".to_string()), 1 => field(1, 12)],
                prop_oneof![2 => Just("*".to_string()), 1 => field(0, 7)],
            )
                .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
        }
        /// Instants a few hours around a clock change of the zone, or anywhere in 2020–2030.
        fn instant() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
            let changes: [(Tz, &[i64]); 4] = [
                // 2025-03-09T07:00Z, 2025-11-02T06:00Z
                (
                    chrono_tz::America::New_York,
                    &[1_741_503_600, 1_762_063_200],
                ),
                // 2025-03-30T01:00Z, 2025-10-26T01:00Z
                (chrono_tz::Europe::London, &[1_743_296_400, 1_761_440_400]),
                // 2025-04-05T15:00Z, 2025-10-04T15:30Z
                (
                    chrono_tz::Australia::Lord_Howe,
                    &[1_743_865_200, 1_759_591_800],
                ),
                (chrono_tz::Asia::Tokyo, &[1_750_000_000]),
            ];
            (
                0..4usize,
                0..2usize,
                -3 * 86_400i64..86_400,
                any::<bool>(),
                1_577_836_800i64..1_893_456_000,
            )
                .prop_map(move |(z, c, off, near, anywhere)| {
                    let (tz, at) = changes[z];
                    let t = if near {
                        at[c % at.len()] + off
                    } else {
                        anywhere
                    };
                    (tz, DateTime::from_timestamp(t, 0).unwrap())
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// Over random expressions and instants (many by a DST change in New York, London,
            /// Lord Howe), `next_after` is the reference's first fire (or none within the horizon).
            #[test]
            fn next_fire_agrees_with_the_reference((tz, now) in instant(), expr in expr()) {
                const HORIZON: i64 = 40 * 24 * 60;
                let parsed = CronExpr::parse(&expr, tz);
                // Refused only when no calendar day could ever match (`30 2 *`).
                let rules = reference::rules(&expr);
                prop_assert_eq!(parsed.is_err(), !rules.some_day_matches(), "{}: {:?}", expr, parsed.as_ref().err());
                let Ok(parsed) = parsed else { return Ok(()); };
                let ours = parsed.next_after(now);
                let theirs = rules.next_after(tz, now, HORIZON);
                match theirs {
                    Some(t) => prop_assert_eq!(ours, Some(t), "{} in {} after {}", expr, tz, now),
                    None => prop_assert!(
                        ours.is_none_or(|o| o > now + Duration::minutes(HORIZON)),
                        "{} in {} after {}: ours {:?}", expr, tz, now, ours
                    ),
                }
            }

            /// Firing repeatedly never fires twice at one instant and never goes back.
            #[test]
            fn successive_fires_move_forward((tz, now) in instant(), expr in expr()) {
                let Ok(c) = CronExpr::parse(&expr, tz) else { return Ok(()); };
                let mut t = now;
                for _ in 0..20 {
                    match c.next_after(t) {
                        Some(n) => { prop_assert!(n > t); t = n; }
                        None => break,
                    }
                }
            }
        }
    }
}
