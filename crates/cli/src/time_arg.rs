//! Points in time on the command line (`--from-time`, `--to-time`): an RFC 3339 date and
//! time (`2026-12-01T10:00:00Z`, `2026-12-01T11:00:00.250+01:00`), a time relative to now
//! (`-1h`, `-30m`, `-2d`, `-45s`, `-500ms`), or milliseconds since the Unix epoch.

/// A parsed point in time: absolute, or relative to when it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// Milliseconds since the Unix epoch.
    At(i64),
    /// This many milliseconds before now.
    Ago(i64),
}

impl TimeArg {
    /// Milliseconds since the Unix epoch, `now_ms` being now.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            TimeArg::At(t) => t,
            TimeArg::Ago(d) => now_ms.saturating_sub(d),
        }
    }
}

/// The system clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses a `--from-time` style argument.
pub fn parse(s: &str) -> Result<TimeArg, String> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('-') {
        return parse_ago(rel).map(TimeArg::Ago);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        if s.len() == 10 {
            // Seconds since the epoch (today's are 10 digits) read as milliseconds would be
            // a day in early 1970, and the read would start at the beginning.
            return Err(format!(
                "{s:?} looks like seconds since the Unix epoch: give milliseconds ({s}000)"
            ));
        }
        return s
            .parse()
            .map(TimeArg::At)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    parse_rfc3339(s).map(TimeArg::At).ok_or_else(|| {
        format!(
            "{s:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z), a time before now \
             (-1h, -30m, -2d, -45s, -500ms) or milliseconds since the Unix epoch"
        )
    })
}

fn parse_ago(rel: &str) -> Result<i64, String> {
    let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
    let (n, unit) = rel.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("-{rel}: expected a number then a unit (ms, s, m, h, d)"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("-{rel}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("-{rel} is too far back"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` to milliseconds since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if digits == 0 {
            return None;
        }
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = first3.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + ms)
}

/// The days of month `m` (1 to 12) of year `y`.
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_times_in_utc_and_with_offsets() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(TimeArg::At(0)));
        assert_eq!(
            parse("2026-12-01T10:00:00Z"),
            Ok(TimeArg::At(1_796_119_200_000))
        );
        assert_eq!(
            parse("2026-12-01T11:00:00.25+01:00"),
            Ok(TimeArg::At(1_796_119_200_250))
        );
        assert_eq!(
            parse("2000-02-29T00:00:00Z"),
            Ok(TimeArg::At(951_782_400_000))
        );
        assert_eq!(parse("1764583200000"), Ok(TimeArg::At(1_764_583_200_000)));
        assert!(parse("2026-13-01T00:00:00Z").is_err());
        assert!(parse("2026-02-31T00:00:00Z").is_err(), "no 31 February");
        assert!(
            parse("2026-02-29T00:00:00Z").is_err(),
            "2026 is not a leap year"
        );
        assert!(parse("1900-02-29T00:00:00Z").is_err(), "nor 1900");
        assert!(parse("2026-12-01T10:00:00+99:99").is_err());
        assert!(parse("2026-12-01T10:00:00+24:00").is_err());
        assert!(parse("1796660549").unwrap_err().contains("seconds"));
        assert_eq!(parse("3500"), Ok(TimeArg::At(3500)));
        assert!(parse("2026-12-01 10:00").is_err());
        assert!(parse("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn times_before_now() {
        assert_eq!(parse("-1h"), Ok(TimeArg::Ago(3_600_000)));
        assert_eq!(parse("-500ms"), Ok(TimeArg::Ago(500)));
        assert_eq!(
            parse("-2d").unwrap().resolve(200_000_000),
            200_000_000 - 172_800_000
        );
        assert!(parse("-3w").unwrap_err().contains("unknown unit"));
        assert!(parse("-h").is_err());
    }
}
