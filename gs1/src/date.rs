//! Calendar dates and the YYMMDD expiry of AI (17).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::ai::{Ai, validate_digits};
use crate::error::{Gs1Error, Rule};

/// A proleptic Gregorian date in the years 0000 to 9999.
///
/// Shown as ISO 8601 `YYYY-MM-DD`; ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CalendarDate {
    // Field order makes the derived Ord chronological.
    year: u16,
    month: u8,
    day: u8,
}

const YEAR_MAX: u16 = 9999;
/// Days from 0000-01-01 to 1970-01-01.
const DAYS_TO_EPOCH_FROM_YEAR_ZERO: i64 = 719_528;
/// Days from 1970-01-01 to 9999-12-31.
const DAYS_TO_YEAR_MAX_END: i64 = 2_932_896;

impl CalendarDate {
    /// 1970-01-01.
    pub const UNIX_EPOCH: CalendarDate = CalendarDate {
        year: 1970,
        month: 1,
        day: 1,
    };

    /// A checked date: year 0..=9999, month 1..=12, a day that exists.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, Gs1Error> {
        let invalid = |reason| {
            Err(Gs1Error::new(Rule::InvalidDate {
                value: format!("{year:04}-{month:02}-{day:02}"),
                reason,
            }))
        };
        if year > YEAR_MAX {
            return invalid("year must be 0000..=9999");
        }
        if !(1..=12).contains(&month) {
            return invalid("month must be 01..=12");
        }
        if day == 0 || day > days_in_month(is_leap_year(year), month) {
            return invalid("no such day in that month");
        }
        Ok(Self { year, month, day })
    }

    /// The date `days` after 1970-01-01 (negative: before).
    pub fn from_days_since_epoch(days: i64) -> Result<Self, Gs1Error> {
        if !(-DAYS_TO_EPOCH_FROM_YEAR_ZERO..=DAYS_TO_YEAR_MAX_END).contains(&days) {
            return Err(Gs1Error::new(Rule::InvalidDate {
                value: format!("{days} days since 1970-01-01"),
                reason: "outside 0000-01-01..=9999-12-31",
            }));
        }
        Ok(civil_from_days(days))
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil, with March as the first month
        // so that the leap day is the last day of the year.
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month_from_march = (i64::from(self.month) + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - DAYS_TO_EPOCH_FROM_YEAR_ZERO + 60
    }

    /// The year, 0..=9999.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1..=12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, from 1.
    pub fn day(self) -> u8 {
        self.day
    }
}

/// Howard Hinnant's civil_from_days; `days` must be in the supported range.
fn civil_from_days(days: i64) -> CalendarDate {
    let shifted = days + DAYS_TO_EPOCH_FROM_YEAR_ZERO - 60;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // The range check in the caller keeps every part within its type.
    CalendarDate {
        year: year as u16,
        month: month as u8,
        day: day as u8,
    }
}

fn is_leap_year(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(leap: bool, month: u8) -> u8 {
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for CalendarDate {
    type Err = Gs1Error;

    /// Parses ISO 8601 `YYYY-MM-DD`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(Gs1Error::new(Rule::InvalidDate {
                value: crate::error::shown(text),
                reason: "expected YYYY-MM-DD",
            }));
        }
        for (start, end) in [(0, 4), (5, 7), (8, 10)] {
            validate_digits(&text[start..end]).map_err(|e| e.map_position(|p| p + start))?;
        }
        let number = |start: usize, end: usize| {
            text[start..end]
                .bytes()
                .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'))
        };
        // Two digits are below 100, so they fit in a u8.
        Self::new(number(0, 4), number(5, 7) as u8, number(8, 10) as u8)
    }
}

impl Serialize for CalendarDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An expiry date (AI 17) as encoded: YYMMDD, where day 00 means the last
/// day of the month. The century is only known relative to a reference
/// date, so the encoded form is what is stored; use
/// [`Expiry::effective_date`] for comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expiry {
    year_in_century: u8,
    month: u8,
    day: u8,
}

/// Splits and checks a YYMMDD date (AI 11 or 17). February 29 is accepted
/// when YY is divisible by 4 (2000 was a leap year). Positions are offsets
/// into `value`; no AI is named.
pub(crate) fn parse_yymmdd(value: &str) -> Result<(u8, u8, u8), Gs1Error> {
    validate_digits(value)?;
    if value.len() != 6 {
        let found = value.len();
        let rule = Rule::WrongLength {
            expected: "6 digits",
            found,
        };
        return Err(Gs1Error::at(rule, 0));
    }
    let pair = |start: usize| {
        let digits = &value.as_bytes()[start..start + 2];
        (digits[0] - b'0') * 10 + (digits[1] - b'0')
    };
    let (year, month, day) = (pair(0), pair(2), pair(4));
    let invalid = |reason| {
        let value = value.to_owned();
        Err(Gs1Error::at(Rule::InvalidDate { value, reason }, 0))
    };
    if !(1..=12).contains(&month) {
        return invalid("month must be 01..=12");
    }
    if day > days_in_month(year.is_multiple_of(4), month) {
        return invalid("no such day in that month");
    }
    Ok((year, month, day))
}

impl Expiry {
    /// Accepts six digits YYMMDD: month 01–12, day 00 (end of month) or a
    /// day that exists in that month. Error positions are offsets into
    /// `yymmdd`.
    pub fn new(yymmdd: &str) -> Result<Self, Gs1Error> {
        let (year_in_century, month, day) =
            parse_yymmdd(yymmdd).map_err(|error| error.with_ai(Ai::Expiry))?;
        Ok(Self {
            year_in_century,
            month,
            day,
        })
    }

    /// The expiry that encodes exactly `date` (never with day 00).
    pub fn from_date(date: CalendarDate) -> Self {
        Self {
            // Below 100, so it fits in a u8.
            year_in_century: (date.year % 100) as u8,
            month: date.month,
            day: date.day,
        }
    }

    /// YY as encoded.
    pub fn year_in_century(self) -> u8 {
        self.year_in_century
    }

    /// MM as encoded, 1..=12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// DD as encoded; 0 means the last day of the month.
    pub fn day(self) -> u8 {
        self.day
    }

    /// The date this expiry means as seen from `reference` (usually today):
    /// the year is the one ending in YY from 49 years before to 50 years
    /// after the reference year (GS1 General Specifications, 7.12), then
    /// day 00 becomes the last day of the month.
    ///
    /// Two edge cases are clamped rather than refused: a 29 February that
    /// resolves to a non-leap century year (1900, 2100) becomes the 28th,
    /// and a year beyond 0000..=9999 becomes the nearest end of that range.
    pub fn effective_date(self, reference: CalendarDate) -> CalendarDate {
        let reference_year = i32::from(reference.year);
        let mut year = reference_year - reference_year % 100 + i32::from(self.year_in_century);
        if year > reference_year + 50 {
            year -= 100;
        } else if year < reference_year - 49 {
            year += 100;
        }
        match u16::try_from(year) {
            Ok(year) if year <= YEAR_MAX => self.in_year(year),
            Ok(_) => CalendarDate::new_unchecked(YEAR_MAX, 12, 31),
            Err(_) => CalendarDate::new_unchecked(0, 1, 1),
        }
    }

    fn in_year(self, year: u16) -> CalendarDate {
        let last_day = days_in_month(is_leap_year(year), self.month);
        let day = if self.day == 0 {
            last_day
        } else {
            self.day.min(last_day)
        };
        CalendarDate::new_unchecked(year, self.month, day)
    }
}

impl CalendarDate {
    const fn new_unchecked(year: u16, month: u8, day: u8) -> Self {
        Self { year, month, day }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}{:02}{:02}",
            self.year_in_century, self.month, self.day
        )
    }
}

impl FromStr for Expiry {
    type Err = Gs1Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl Serialize for Expiry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> CalendarDate {
        text.parse().unwrap()
    }

    #[test]
    fn expiry_effective_date() {
        let reference = date("2025-06-15");
        let check = |yymmdd: &str, expected: Result<&str, &str>| {
            let got = Expiry::new(yymmdd)
                .map(|e| e.effective_date(reference).to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "{yymmdd}");
        };
        check("251231", Ok("2025-12-31"));
        check("240200", Ok("2024-02-29"));
        check("250200", Ok("2025-02-28"));
        check("240229", Ok("2024-02-29"));
        check("000229", Ok("2000-02-29"));
        check("250400", Ok("2025-04-30"));
        check("251200", Ok("2025-12-31"));
        check(
            "230231",
            Err("AI (17) at position 0: invalid date 230231: no such day in that month"),
        );
        check(
            "230229",
            Err("AI (17) at position 0: invalid date 230229: no such day in that month"),
        );
        check(
            "250431",
            Err("AI (17) at position 0: invalid date 250431: no such day in that month"),
        );
        check(
            "250001",
            Err("AI (17) at position 0: invalid date 250001: month must be 01..=12"),
        );
        check(
            "251301",
            Err("AI (17) at position 0: invalid date 251301: month must be 01..=12"),
        );
        check(
            "25123",
            Err("AI (17) at position 0: wrong length: expected 6 digits, found 5"),
        );
        check(
            "2512A1",
            Err("AI (17) at position 4: expected a digit, found 'A'"),
        );
    }

    #[test]
    fn century_window() {
        // GS1: 49 years back .. 50 years ahead of the reference year.
        let check = |reference: &str, yymmdd: &str, expected: &str| {
            let got = Expiry::new(yymmdd).unwrap().effective_date(date(reference));
            assert_eq!(got.to_string(), expected, "{reference} {yymmdd}");
        };
        check("2025-01-01", "750101", "2075-01-01");
        check("2025-01-01", "760101", "1976-01-01");
        check("2025-01-01", "000101", "2000-01-01");
        check("2025-01-01", "991231", "1999-12-31");
        check("2060-01-01", "100101", "2110-01-01");
        check("2060-01-01", "110101", "2011-01-01");
        check("2099-12-31", "000229", "2100-02-28");
        check("1999-06-01", "490100", "2049-01-31");
        check("1999-06-01", "500101", "1950-01-01");
    }

    #[test]
    fn from_date_formats_yymmdd() {
        let check = |iso: &str, expected: &str| {
            assert_eq!(Expiry::from_date(date(iso)).to_string(), expected)
        };
        check("2025-12-31", "251231");
        check("2000-02-29", "000229");
        check("1999-01-05", "990105");
    }

    #[test]
    fn calendar_date_checks() {
        let check = |y: u16, m: u8, d: u8, expected: Result<&str, &str>| {
            let got = CalendarDate::new(y, m, d)
                .map(|d| d.to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected);
        };
        check(2024, 2, 29, Ok("2024-02-29"));
        check(2000, 2, 29, Ok("2000-02-29"));
        check(
            1900,
            2,
            29,
            Err("invalid date 1900-02-29: no such day in that month"),
        );
        check(
            2023,
            2,
            29,
            Err("invalid date 2023-02-29: no such day in that month"),
        );
        check(
            2023,
            0,
            1,
            Err("invalid date 2023-00-01: month must be 01..=12"),
        );
        check(
            2023,
            1,
            0,
            Err("invalid date 2023-01-00: no such day in that month"),
        );
        check(
            10000,
            1,
            1,
            Err("invalid date 10000-01-01: year must be 0000..=9999"),
        );
    }

    #[test]
    fn days_since_epoch_both_ways() {
        let check = |days: i64, iso: &str| {
            assert_eq!(
                CalendarDate::from_days_since_epoch(days).unwrap(),
                date(iso)
            );
            assert_eq!(date(iso).days_since_epoch(), days);
        };
        check(0, "1970-01-01");
        check(-1, "1969-12-31");
        check(59, "1970-03-01");
        check(11_016, "2000-02-29");
        check(19_782, "2024-02-29");
        check(-719_528, "0000-01-01");
        check(2_932_896, "9999-12-31");
        assert!(CalendarDate::from_days_since_epoch(2_932_897).is_err());
        assert!(CalendarDate::from_days_since_epoch(-719_529).is_err());
        assert!(CalendarDate::from_days_since_epoch(i64::MIN).is_err());
    }

    #[test]
    fn days_since_epoch_is_contiguous() {
        let mut previous = date("1899-12-31");
        for days in previous.days_since_epoch() + 1..date("2101-01-01").days_since_epoch() {
            let current = CalendarDate::from_days_since_epoch(days).unwrap();
            assert!(current > previous);
            assert_eq!(current.days_since_epoch(), days);
            previous = current;
        }
    }

    #[test]
    fn iso_parse_errors() {
        let check = |text: &str, expected: &str| {
            assert_eq!(
                text.parse::<CalendarDate>().unwrap_err().to_string(),
                expected
            )
        };
        check(
            "2024-2-29",
            "invalid date \"2024-2-29\": expected YYYY-MM-DD",
        );
        check("2024-0X-29", "at position 6: expected a digit, found 'X'");
        check(
            "2023-02-29",
            "invalid date 2023-02-29: no such day in that month",
        );
    }
}
