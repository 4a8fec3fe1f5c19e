//! Time on a chart's x axis: ISO 8601 text in and out, and tick marks at calendar steps (whole
//! hours, days, months, years) rather than at round numbers of milliseconds. Everything is UTC:
//! a date without an offset is a UTC date, so the same spec draws the same on any machine.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Whether `text` is written as a full date or date-time ("2024-03-01", "2024-03-01T10:00Z"),
/// which is what makes labels a time axis without being asked. "2024" and "2024-03" stay
/// labels unless the chart says x is time.
pub fn looks_like_date(text: &str) -> bool {
    text.len() >= 10 && parse(text).is_some()
}

/// Milliseconds since the epoch, and whether the text had a time of day. Accepts "2024",
/// "2024-03", "2024-03-01", "2024-03-01T14:30", "…:05", "….250", with "Z" or "+02:00" or no
/// offset (UTC), and a space instead of "T".
pub fn parse(text: &str) -> Option<(i64, bool)> {
    let text = text.trim();
    let bytes = text.as_bytes();
    // Four-digit years only: chrono's %Y also takes signs and more digits.
    if bytes.len() < 4 || !bytes[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let date = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
    };
    match bytes.len() {
        4 => return date(NaiveDate::from_ymd_opt(text.parse().ok()?, 1, 1)?).map(|m| (m, false)),
        7 => {
            return date(NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?)
                .map(|m| (m, false));
        }
        10 => {
            return date(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?).map(|m| (m, false));
        }
        _ => {}
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some((time.timestamp_millis(), true));
    }
    let local = text.replacen(' ', "T", 1);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&local, format).ok())
        .or_else(|| {
            // RFC 3339 needs seconds; "2024-03-01T10:00Z" is common too.
            let trimmed = local.strip_suffix('Z')?;
            NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M").ok()
        })
        .map(|time| (time.and_utc().timestamp_millis(), true))
}

fn utc(millis: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(millis).single()
}

/// The canonical text of a time: "2024-03-01" for dates, "2024-03-01T14:30:00.000Z" otherwise.
pub fn format_iso(millis: i64, dates_only: bool) -> String {
    match utc(millis) {
        Some(time) if dates_only => time.format("%Y-%m-%d").to_string(),
        Some(time) => time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => String::new(),
    }
}

/// A calendar step between ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Millis(i64),
    Months(u32),
}

/// The steps ticks may take, smallest first.
const STEPS: [Step; 21] = [
    Step::Millis(SECOND),
    Step::Millis(5 * SECOND),
    Step::Millis(15 * SECOND),
    Step::Millis(30 * SECOND),
    Step::Millis(MINUTE),
    Step::Millis(5 * MINUTE),
    Step::Millis(15 * MINUTE),
    Step::Millis(30 * MINUTE),
    Step::Millis(HOUR),
    Step::Millis(3 * HOUR),
    Step::Millis(6 * HOUR),
    Step::Millis(12 * HOUR),
    Step::Millis(DAY),
    Step::Millis(2 * DAY),
    Step::Millis(7 * DAY),
    Step::Months(1),
    Step::Months(3),
    Step::Months(6),
    Step::Months(12),
    Step::Months(60),
    Step::Months(120),
];

impl Step {
    fn approximate_millis(self) -> i64 {
        match self {
            Self::Millis(millis) => millis,
            Self::Months(months) => i64::from(months) * 30 * DAY,
        }
    }

    /// How a tick at this step is written.
    fn format(self) -> &'static str {
        match self {
            Self::Millis(millis) if millis < MINUTE => "%H:%M:%S",
            Self::Millis(millis) if millis < DAY => "%H:%M",
            Self::Millis(_) => "%b %-d",
            Self::Months(months) if months < 12 => "%b %Y",
            Self::Months(_) => "%Y",
        }
    }

    /// The label of a tick at `millis`; a tick at midnight on an hour-step axis shows the day.
    pub fn label(self, millis: i64) -> String {
        let Some(time) = utc(millis) else {
            return String::new();
        };
        let format = match self {
            Self::Millis(step)
                if (MINUTE..DAY).contains(&step) && time.hour() == 0 && time.minute() == 0 =>
            {
                "%b %-d"
            }
            other => other.format(),
        };
        time.format(format).to_string()
    }
}

/// The smallest step that gives at most `most` ticks over `low..=high` milliseconds.
pub fn step_for(low: f64, high: f64, most: usize) -> Step {
    let span = (high - low).max(1.0);
    #[allow(clippy::cast_precision_loss)]
    STEPS
        .into_iter()
        .find(|step| span / step.approximate_millis() as f64 <= most as f64)
        .unwrap_or(Step::Months(1200))
}

/// The ticks of `step` within `low..=high` milliseconds, aligned to the calendar (UTC).
pub fn ticks(low: f64, high: f64, step: Step) -> Vec<i64> {
    // Chart times come from four-digit-year dates, well within i64 milliseconds.
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = (low.ceil() as i64, high.floor() as i64);
    let mut ticks = Vec::new();
    match step {
        Step::Millis(step) => {
            // Weeks start on Monday: the epoch was a Thursday.
            let offset = if step == 7 * DAY { 4 * DAY } else { 0 };
            let mut tick = (low - offset).div_euclid(step) * step + offset;
            if tick < low {
                tick += step;
            }
            while tick <= high && ticks.len() < 100 {
                ticks.push(tick);
                tick += step;
            }
        }
        Step::Months(months) => {
            let Some(start) = utc(low) else {
                return ticks;
            };
            // First day of the first month at a multiple of the step (January for years).
            let month0 = start.month0() - start.month0() % months.min(12);
            let Some(mut date) = NaiveDate::from_ymd_opt(start.year(), month0 + 1, 1) else {
                return ticks;
            };
            if months >= 12 {
                let years = i32::try_from(months / 12).unwrap_or(1);
                let year = start.year() - start.year().rem_euclid(years);
                date = NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or(date);
            }
            while ticks.len() < 100 {
                let Some(millis) = date
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_millis())
                else {
                    break;
                };
                if millis > high {
                    break;
                }
                if millis >= low {
                    ticks.push(millis);
                }
                let Some(next) = date.checked_add_months(Months::new(months)) else {
                    break;
                };
                date = next;
            }
        }
    }
    ticks
}

/// The step that best describes the spacing of distinct times (for labelling bars).
pub fn step_of_spacing(times: &[f64]) -> Step {
    let closest = times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .fold(f64::INFINITY, f64::min);
    #[allow(clippy::cast_precision_loss)]
    let at_least = |millis: i64| closest >= millis as f64 * 0.9;
    if !closest.is_finite() || at_least(365 * DAY) {
        Step::Months(12)
    } else if at_least(28 * DAY) {
        Step::Months(1)
    } else if at_least(DAY) {
        Step::Millis(DAY)
    } else if at_least(MINUTE) {
        Step::Millis(MINUTE)
    } else {
        Step::Millis(SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_times_parse_as_utc() {
        assert_eq!(parse("1970-01-02"), Some((DAY, false)));
        assert_eq!(parse("1970-01-01T01:00:00Z"), Some((HOUR, true)));
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some((0, true)));
        assert_eq!(parse("1970-01-01 00:01"), Some((MINUTE, true)));
        assert_eq!(parse("1970-01-01T00:01Z"), Some((MINUTE, true)));
        assert_eq!(parse("1970-02"), Some((31 * DAY, false)));
        assert_eq!(parse("1971"), Some((365 * DAY, false)));
        for bad in [
            "Q1",
            "2024-13-01",
            "2024-02-30",
            "+2024-01-01",
            "20240101x",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(looks_like_date("2024-03-01") && !looks_like_date("2024"));
        assert_eq!(format_iso(DAY, true), "1970-01-02");
        assert_eq!(format_iso(HOUR, false), "1970-01-01T01:00:00.000Z");
    }

    #[test]
    fn ticks_fall_on_calendar_boundaries() {
        let (low, _) = parse("2024-01-15").unwrap();
        let (high, _) = parse("2024-07-20").unwrap();
        #[allow(clippy::cast_precision_loss)]
        let (low, high) = (low as f64, high as f64);
        let step = step_for(low, high, 8);
        assert_eq!(step, Step::Months(1));
        let labels: Vec<String> = ticks(low, high, step)
            .into_iter()
            .map(|t| step.label(t))
            .collect();
        assert_eq!(
            labels,
            [
                "Feb 2024", "Mar 2024", "Apr 2024", "May 2024", "Jun 2024", "Jul 2024"
            ]
        );
        let step = step_for(0.0, 3.0 * DAY as f64, 8);
        assert_eq!(step, Step::Millis(12 * HOUR));
        assert_eq!(step.label(DAY), "Jan 2");
    }
}
