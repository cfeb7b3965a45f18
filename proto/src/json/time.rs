//! RFC 3339 timestamps for Time AVPs given as strings (`"2026-11-22T02:00:00Z"`).
//!
//! Only what RFC 3339 §5.6 allows: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` also as `t`
//! or a space. Time AVPs have one-second resolution, so a fraction is truncated (towards
//! the earlier second). A leap second (`:60`) counts as the first second of the next minute.

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let c = *self.s.get(self.pos)?;
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
            self.pos += 1;
        }
        Some(v)
    }

    fn byte(&mut self, allowed: &[u8]) -> Option<u8> {
        let c = *self.s.get(self.pos)?;
        if allowed.contains(&c) {
            self.pos += 1;
            Some(c)
        } else {
            None
        }
    }
}

/// Parses an RFC 3339 date-time into Unix seconds; `None` if it is not one.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let mut c = Cursor {
        s: s.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.byte(b"-")?;
    let month = c.digits(2)?;
    c.byte(b"-")?;
    let day = c.digits(2)?;
    c.byte(b"Tt ")?;
    let hour = c.digits(2)?;
    c.byte(b":")?;
    let min = c.digits(2)?;
    c.byte(b":")?;
    let sec = c.digits(2)?;
    if c.byte(b".").is_some() {
        // At least one digit; any number of them (truncated).
        c.digits(1)?;
        while c.digits(1).is_some() {}
    }
    let offset = match c.byte(b"Zz+-")? {
        b'Z' | b'z' => 0,
        sign => {
            let oh = c.digits(2)?;
            c.byte(b":")?;
            let om = c.digits(2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
    };
    if c.pos != c.s.len() {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14t22:13:20.999z"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14 20:13:20-02:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("1968-01-20T03:14:08Z"), Some(-61_505_152));
        assert_eq!(parse_rfc3339("2104-02-26T09:42:23Z"), Some(4_233_462_143));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_rfc3339("2016-12-31T23:59:60Z"), Some(1_483_228_800));
    }

    #[test]
    fn invalid_timestamps() {
        for s in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20Zx",
            "+2023-11-14T22:13:20Z",
            "1700000000",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
    }
}
