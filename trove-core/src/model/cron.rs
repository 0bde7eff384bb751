//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC) for backup schedules, and when
//! a [`ScheduleTimes`] runs next.
//!
//! Each field is `*`, a number, a range `a-b`, any of those with a step (`*/15`, `0-30/10`), or a comma list of
//! them. Day of week is 0-7 (0 and 7 are Sunday). As in cron, when both day fields are restricted a day matches
//! if either does.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Timelike, Utc};

use super::ScheduleTimes;
use crate::error::{Error, Result};

/// The shortest interval a schedule may run at.
pub const MIN_INTERVAL_SECS: u64 = 60;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_any: bool,
    weekdays_any: bool,
}

fn bad(expr: &str, why: &str) -> Error {
    Error::bad_request(format!(
        "The cron expression '{}' is not valid: {why}. Use five fields: minute hour day-of-month month \
         day-of-week, e.g. '30 2 * * *' (02:30 UTC every day).",
        expr.escape_default()
    ))
}

/// One field: which values in `min..=max` it allows.
fn field(expr: &str, text: &str, min: u32, max: u32, name: &str) -> Result<Vec<bool>> {
    let mut on = vec![false; max as usize + 1];
    let num = |s: &str| -> Result<u32> {
        let n: u32 = s
            .parse()
            .map_err(|_| bad(expr, &format!("'{s}' in the {name} field is not a number")))?;
        if n < min || n > max {
            return Err(bad(
                expr,
                &format!("{n} is outside {min}-{max} in the {name} field"),
            ));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(expr, &format!("bad step '{s}' in the {name} field")))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(bad(
                    expr,
                    &format!("the range {a}-{b} of the {name} field is backwards"),
                ));
            }
            (a, b)
        } else {
            let a = num(range)?;
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            on[v as usize] = true;
            v += step;
        }
    }
    Ok(on)
}

impl Cron {
    /// Parses `expr`; a 400 saying what is wrong otherwise.
    pub fn parse(expr: &str) -> Result<Cron> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            return Err(bad(expr, &format!("it has {} fields", f.len())));
        }
        let mut weekdays = field(expr, f[4], 0, 7, "day-of-week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Cron {
            minutes: field(expr, f[0], 0, 59, "minute")?,
            hours: field(expr, f[1], 0, 23, "hour")?,
            days: field(expr, f[2], 1, 31, "day-of-month")?,
            months: field(expr, f[3], 1, 12, "month")?,
            weekdays,
            days_any: f[2] == "*",
            weekdays_any: f[4] == "*",
        })
    }

    fn day_matches(&self, d: chrono::NaiveDate) -> bool {
        if !self.months[d.month() as usize] {
            return false;
        }
        let dom = self.days[d.day() as usize];
        let dow = self.weekdays[d.weekday().num_days_from_sunday() as usize];
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute strictly after `t`; `None` when none comes within five years (e.g. 31 February).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t + Duration::minutes(1);
        let start = start.with_second(0)?.with_nanosecond(0)?;
        let mut day = start.date_naive();
        for _ in 0..(366 * 5) {
            if self.day_matches(day) {
                for h in 0..24u32 {
                    if !self.hours[h as usize] {
                        continue;
                    }
                    for m in 0..60u32 {
                        if !self.minutes[m as usize] {
                            continue;
                        }
                        let at = day.and_time(NaiveTime::from_hms_opt(h, m, 0)?).and_utc();
                        if at >= start {
                            return Some(at);
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }
}

impl ScheduleTimes {
    /// Checks the times: an interval of at least [`MIN_INTERVAL_SECS`], or a cron expression that parses and
    /// ever matches.
    pub fn validate(&self) -> Result<()> {
        match self {
            ScheduleTimes::Interval(s) if *s < MIN_INTERVAL_SECS => Err(Error::bad_request(format!(
                "A backup schedule's interval must be at least {MIN_INTERVAL_SECS} seconds, not {s}."
            ))),
            ScheduleTimes::Interval(_) => Ok(()),
            ScheduleTimes::Cron(e) => {
                Cron::parse(e)?
                    .next_after(Utc::now())
                    .map(|_| ())
                    .ok_or_else(|| bad(e, "it never matches"))
            }
        }
    }

    /// The next run after `t` (a schedule whose cron expression no longer matches runs again in a year).
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            ScheduleTimes::Interval(s) => {
                t + Duration::seconds(i64::try_from(*s).unwrap_or(i64::MAX / 1000).max(1))
            }
            ScheduleTimes::Cron(e) => Cron::parse(e)
                .ok()
                .and_then(|c| c.next_after(t))
                .unwrap_or(t + Duration::days(365)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn next_runs_follow_the_fields() {
        let c = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 12, 6, 1, 0)),
            Some(at(2026, 12, 6, 2, 30))
        );
        assert_eq!(
            c.next_after(at(2026, 12, 6, 2, 30)),
            Some(at(2026, 12, 7, 2, 30))
        );
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 12, 6, 1, 7)),
            Some(at(2026, 12, 6, 1, 15))
        );
        // Sundays at midnight (0 and 7 both mean Sunday); 2026-12-06 is a Sunday.
        for e in ["0 0 * * 0", "0 0 * * 7"] {
            let c = Cron::parse(e).unwrap();
            assert_eq!(
                c.next_after(at(2026, 12, 6, 0, 0)),
                Some(at(2026, 12, 13, 0, 0)),
                "{e}"
            );
        }
        // Both day fields restricted: either matches (the 1st, or any Monday).
        let c = Cron::parse("0 12 1 * 1").unwrap();
        assert_eq!(
            c.next_after(at(2026, 12, 6, 0, 0)),
            Some(at(2026, 12, 7, 12, 0))
        );
        // Lists and ranges with steps.
        let c = Cron::parse("5,35 8-18/5 * 1-3 *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 12, 6, 0, 0)),
            Some(at(2027, 1, 1, 8, 5))
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (e, why) in [
            ("* * *", "3 fields"),
            ("60 * * * *", "outside 0-59"),
            ("* * * * x", "not a number"),
            ("5-1 * * * *", "backwards"),
            ("*/0 * * * *", "bad step"),
        ] {
            let err = Cron::parse(e).unwrap_err().to_string();
            assert!(err.contains(why), "{e}: {err}");
        }
        assert!(ScheduleTimes::Cron("0 0 31 2 *".into())
            .validate()
            .unwrap_err()
            .to_string()
            .contains("never matches"));
        assert!(ScheduleTimes::Interval(10).validate().is_err());
        assert!(ScheduleTimes::Interval(3600).validate().is_ok());
    }
}
