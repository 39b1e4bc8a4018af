//! Durations as Go writes and reads them (`time.ParseDuration`), the one
//! parser of every duration a client or a flag gives: `metav1.Duration`
//! fields, the `timeout` query parameter, cron's `@every`, command-line
//! flags.

/// Go's `time.ParseDuration`: "1h0m0s", "1.5s", "300ms", "2.5µs", "-5s".
pub fn parse_go(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..frac_end];
            rest = &r[frac_end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_end..];
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = whole.checked_mul(unit)?;
        let mut scale = unit;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value = value.checked_add(i128::from(d - b'0') * scale)?;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let total = if neg { -total } else { total };
    i64::try_from(total).ok()
}

/// [`parse_go`] for what cannot be negative (timeouts, intervals): `None`
/// for a negative or malformed duration.
pub fn parse_go_std(s: &str) -> Option<std::time::Duration> {
    let nanos = u64::try_from(parse_go(s)?).ok()?;
    Some(std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_that_cannot_be_negative() {
        assert_eq!(parse_go_std("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_std("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_std("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_std("-1s"), None);
        assert_eq!(parse_go_std("5"), None);
        assert_eq!(parse_go_std("99999999999h"), None);
    }
}
