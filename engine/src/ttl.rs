//! Time-to-live values (SPEC.md "set"): an epoch second, a number of seconds from now,
//! or a full or partial ISO-8601 date; `null` clears.

use ampd_wire::{Error, ErrorCode, Value};
use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// What a write does to an item's ttl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TtlChange {
    /// Not given: an update keeps the stored ttl, an overwrite drops it.
    #[default]
    Keep,
    /// `null`: no expiry.
    Clear,
    /// Expire at this epoch second.
    At(i64),
}

/// Resolves a user's ttl against the clock (`now_s`, epoch seconds).
pub(crate) fn resolve(ttl: Option<&Value>, now_s: i64) -> Result<TtlChange, Error> {
    let Some(ttl) = ttl else {
        return Ok(TtlChange::Keep);
    };
    match ttl {
        Value::Null => Ok(TtlChange::Clear),
        Value::Number(n) => match n.as_i64() {
            Some(s) if s > now_s => Ok(TtlChange::At(s)),
            Some(s) if s > 0 => Ok(TtlChange::At(now_s + s)),
            _ => Err(invalid(&format!(
                "ttl {n} is not a positive whole number of seconds"
            ))),
        },
        // Digits in a string are seconds, as they would be in a number (a bare year
        // is not taken as a date: "3600" means an hour).
        Value::String(s) if s.trim().parse::<i64>().is_ok() => {
            let n = s.trim().parse::<i64>().unwrap_or_default();
            resolve(Some(&Value::from(n)), now_s)
        }
        Value::String(s) => {
            let at = parse_iso8601(s)
                .ok_or_else(|| invalid(&format!("ttl {s:?} is not an ISO-8601 date")))?;
            if at <= now_s {
                return Err(invalid(&format!("ttl {s:?} is in the past")));
            }
            Ok(TtlChange::At(at))
        }
        other => Err(invalid(&format!(
            "ttl {other} is neither seconds, an ISO-8601 date nor null"
        ))),
    }
}

fn invalid(message: &str) -> Error {
    Error::new(ErrorCode::InvalidTtl, message)
}

/// Parses `2026-12`, `2026-12-01`, `2026-12-01T10`, `2026-12-01T10:00`,
/// `2026-12-01T10:00:00(.fff)` each with an optional `Z` or `±HH[:MM]` offset (UTC when
/// none), into epoch seconds.
fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let date = match date.len() {
        7 => NaiveDate::parse_from_str(&format!("{date}-01"), "%Y-%m-%d").ok()?,
        _ => NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?,
    };
    let (time, offset_s) = match time {
        None => (NaiveTime::MIN, 0),
        Some(t) => {
            let (clock, offset_s) = split_offset(t)?;
            let time = ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .find_map(|f| NaiveTime::parse_from_str(clock, f).ok())
                .or_else(|| {
                    let h: u32 = clock.parse().ok().filter(|_| clock.len() == 2)?;
                    NaiveTime::from_hms_opt(h, 0, 0)
                })?;
            (time, offset_s)
        }
    };
    let offset = FixedOffset::east_opt(offset_s)?;
    let local = NaiveDateTime::new(date, time);
    let at = offset.from_local_datetime(&local).single()?;
    Some(at.with_timezone(&Utc).timestamp())
}

/// Splits `10:00+02:00` into (`10:00`, 7200 seconds east).
fn split_offset(t: &str) -> Option<(&str, i32)> {
    if let Some(clock) = t.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let Some(at) = t.rfind(['+', '-']) else {
        return Some((t, 0));
    };
    let (clock, off) = t.split_at(at);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((clock, sign * (h * 3600 + m * 60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000; // 2026-09-21

    fn at(v: Value) -> Result<TtlChange, Error> {
        resolve(Some(&v), NOW)
    }

    #[test]
    fn integers() {
        assert_eq!(at(json!(3600)).unwrap(), TtlChange::At(NOW + 3600));
        assert_eq!(at(json!(NOW + 5)).unwrap(), TtlChange::At(NOW + 5));
        assert_eq!(at(json!(NOW)).unwrap(), TtlChange::At(2 * NOW));
        for bad in [json!(0), json!(-5), json!(1.5), json!(true), json!([1])] {
            assert_eq!(at(bad).unwrap_err().code(), ErrorCode::InvalidTtl);
        }
        assert_eq!(at(Value::Null).unwrap(), TtlChange::Clear);
        assert_eq!(at(json!("3600")).unwrap(), TtlChange::At(NOW + 3600));
        assert_eq!(at(json!(" -5 ")).unwrap_err().code(), ErrorCode::InvalidTtl);
        assert_eq!(resolve(None, NOW).unwrap(), TtlChange::Keep);
    }

    #[test]
    fn dates() {
        let d = |s: &str| parse_iso8601(s);
        let base = 1_796_083_200; // 2026-12-01T00:00:00Z
        assert_eq!(d("2026-12-01"), Some(base));
        assert_eq!(d("2026-12"), Some(base));
        assert_eq!(d("2027-01"), Some(1_798_761_600));
        assert_eq!(d("2027"), None);
        assert_eq!(d("2026-12-01T10"), Some(base + 36_000));
        assert_eq!(d("2026-12-01T10:00"), Some(base + 36_000));
        assert_eq!(d("2026-12-01T10:00:00Z"), Some(base + 36_000));
        assert_eq!(d("2026-12-01T10:00:00.250Z"), Some(base + 36_000));
        assert_eq!(d("2026-12-01T10:00:00+02:00"), Some(base + 28_800));
        assert_eq!(d("2026-12-01T10:00-0130"), Some(base + 41_400));
        for bad in [
            "",
            "tomorrow",
            "2026-13-01",
            "2026-12-01T25:00",
            "2026-12-01T10:00+5",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
        assert_eq!(at(json!("2026-12-01")).unwrap(), TtlChange::At(base));
        assert_eq!(
            at(json!("2020-01-01")).unwrap_err().code(),
            ErrorCode::InvalidTtl
        );
        assert_eq!(at(json!("soon")).unwrap_err().code(), ErrorCode::InvalidTtl);
    }
}
