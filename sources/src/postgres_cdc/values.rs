//! PostgreSQL values in their text output and binary send forms, read into the native
//! values Arrow holds: numbers, decimals, bytea, dates, times, timestamps, intervals and
//! array literals. The session pins the text forms (`DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`), so each value
//! has one text form to read.

use arrow::datatypes::{i256, IntervalMonthDayNano};

pub(super) fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad float {s:?}")),
    }
}

/// `-123.4500` → unscaled integer at `scale`, checked against `precision`.
pub(super) fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<i256, String> {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return Err(format!(
            "numeric {s} cannot be stored in Decimal({precision},{scale})"
        ));
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale_u = scale.max(0) as usize;
    if frac.len() > scale_u {
        return Err(format!(
            "numeric {s} has more than {scale} fractional digits"
        ));
    }
    let mut v = i256::ZERO;
    let ten = i256::from_i128(10);
    let mut count = 0usize;
    for c in int
        .chars()
        .chain(frac.chars())
        .chain(std::iter::repeat_n('0', scale_u - frac.len()))
    {
        let d = c.to_digit(10).ok_or_else(|| format!("bad numeric {s:?}"))?;
        v = v
            .checked_mul(ten)
            .and_then(|x| x.checked_add(i256::from_i128(d as i128)))
            .ok_or_else(|| format!("numeric {s} overflows"))?;
        if count > 0 || d != 0 {
            count += 1;
        }
    }
    if scale < 0 {
        // A negative scale stores multiples of 10^-scale: `12300` at scale -2 is 123.
        let div = ten
            .checked_pow(u32::from(scale.unsigned_abs()))
            .ok_or_else(|| format!("numeric scale {scale}"))?;
        if v.checked_rem(div) != Some(i256::ZERO) {
            return Err(format!("numeric {s} is not a multiple of 10^{}", -scale));
        }
        v = v.checked_div(div).ok_or_else(|| format!("numeric {s}"))?;
        count = count.saturating_sub(scale.unsigned_abs() as usize);
    }
    if count > precision as usize {
        return Err(format!("numeric {s} exceeds precision {precision}"));
    }
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// `\x0aff` (hex output) → bytes.
pub(super) fn parse_bytea(s: &str) -> Result<Vec<u8>, String> {
    let hex = s
        .strip_prefix("\\x")
        .ok_or_else(|| "bytea not in hex output format".to_string())?;
    if hex.len() % 2 != 0 {
        return Err("odd-length bytea hex".into());
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let d = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or_else(|| "bad bytea hex".to_string())
            };
            Ok((d(pair[0])? * 16 + d(pair[1])?) as u8)
        })
        .collect()
}

/// Days and microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
pub(super) const PG_EPOCH_DAYS: i32 = 10_957;
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The header of a binary numeric: (digit count, weight, negative) after checking the
/// length; `None` for NaN and ±Infinity, which are not numbers a Decimal can hold.
fn numeric_header(v: &[u8]) -> Result<Option<(usize, i32, bool)>, String> {
    if v.len() < 8 {
        return Err("short binary numeric".into());
    }
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let ndigits = word(0) as usize;
    if v.len() != 8 + 2 * ndigits {
        return Err("binary numeric length mismatch".into());
    }
    match word(2) {
        0x0000 => Ok(Some((ndigits, word(1) as i16 as i32, false))),
        0x4000 => Ok(Some((ndigits, word(1) as i16 as i32, true))),
        0xC000 | 0xD000 | 0xF000 => Ok(None),
        sign => Err(format!("binary numeric: unknown sign {sign:#x}")),
    }
}

/// 10^0 ..= 10^38: every power a Decimal128 needs.
const POW10_I128: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// [`numeric_binary`] for Decimal128 columns (precision <= 38) in i128 arithmetic, with
/// the same results: a value that overflows i128 exceeds any such precision, and is
/// reported so.
pub(super) fn numeric_binary_i128(
    v: &[u8],
    precision: u8,
    scale: i8,
) -> Result<Option<i128>, String> {
    let Some((ndigits, weight, negative)) = numeric_header(v)? else {
        return Ok(None);
    };
    let exceeds = || format!("numeric exceeds precision {precision}");
    let scale = i32::from(scale);
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let digit = i128::from(u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]));
        // This digit's place, in decimal digits after applying the scale.
        let exp = 4 * (weight - i as i32) + scale;
        let term = if exp >= 0 {
            let p = POW10_I128.get(exp as usize).ok_or_else(exceeds)?;
            digit.checked_mul(*p).ok_or_else(exceeds)?
        } else {
            match POW10_I128.get((-exp) as usize) {
                Some(div) if digit % div == 0 => digit / div,
                None if digit == 0 => 0,
                _ => return Err(format!("numeric has more than {scale} fractional digits")),
            }
        };
        acc = acc.checked_add(term).ok_or_else(exceeds)?;
    }
    let limit = POW10_I128
        .get(usize::from(precision))
        .ok_or("numeric precision")?;
    if acc >= *limit {
        return Err(exceeds());
    }
    Ok(Some(if negative { -acc } else { acc }))
}

/// A binary `numeric` (base-10000 digits) as an unscaled integer at `scale`, checked
/// against `precision`; `None` for NaN and ±Infinity.
pub(super) fn numeric_binary(v: &[u8], precision: u8, scale: i8) -> Result<Option<i256>, String> {
    let Some((ndigits, weight, negative)) = numeric_header(v)? else {
        return Ok(None);
    };
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let ten = i256::from_i128(10);
    let scale = i32::from(scale);
    let mut acc = i256::ZERO;
    for i in 0..ndigits {
        let digit = i256::from_i128(i128::from(word(4 + i)));
        // This digit's place, in decimal digits after applying the scale.
        let exp = 4 * (weight - i as i32) + scale;
        let term = if exp >= 0 {
            digit
                .checked_mul(ten.checked_pow(exp as u32).ok_or("numeric overflows")?)
                .ok_or("numeric overflows")?
        } else {
            let div = ten.checked_pow((-exp) as u32).ok_or("numeric overflows")?;
            if digit.checked_rem(div) != Some(i256::ZERO) {
                return Err(format!("numeric has more than {scale} fractional digits"));
            }
            digit.checked_div(div).ok_or("numeric overflows")?
        };
        acc = acc.checked_add(term).ok_or("numeric overflows")?;
    }
    let limit = ten
        .checked_pow(u32::from(precision))
        .ok_or("numeric precision")?;
    if acc >= limit {
        return Err(format!("numeric exceeds precision {precision}"));
    }
    Ok(Some(if negative { acc.wrapping_neg() } else { acc }))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (astronomical year numbering: 1 BC
/// is year 0), for every year PostgreSQL holds (4713 BC to 5874897 AD); `None` for a day
/// that does not exist.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i32> {
    let leap = y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > month_days[m as usize - 1] {
        return None;
    }
    // Count from March, so that the leap day ends the year (the usual civil algorithm).
    let (y, m, d) = (if m <= 2 { y - 1 } else { y }, i64::from(m), i64::from(d));
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// `YYYY-MM-DD[ BC]` → days since 1970-01-01.
pub(super) fn parse_date(s: &str) -> Result<i32, String> {
    if s == "infinity" || s == "-infinity" {
        return Err(format!("date {s} cannot be represented"));
    }
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let mut it = body.splitn(3, '-');
    let bad = || format!("bad date {s:?}");
    let y: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let m: u32 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let d: u32 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let y = if bc { 1 - y } else { y };
    days_from_civil(y, m, d).ok_or_else(bad)
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight (24:00:00 allowed).
pub(super) fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("bad time {s:?}");
    let mut it = s.splitn(3, ':');
    let h: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let m: i64 = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let sec = it.next().ok_or_else(bad)?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    Ok((h * 3600 + m * 60 + whole) * 1_000_000 + frac_micros(frac).ok_or_else(bad)?)
}

fn frac_micros(frac: &str) -> Option<i64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = frac.parse().ok()?;
    Some(v * 10i64.pow(6 - frac.len() as u32))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]` → µs since the Unix epoch (UTC
/// for `timestamptz`, whose session time zone is UTC).
pub(super) fn parse_timestamp(s: &str, with_tz: bool) -> Result<i64, String> {
    if s == "infinity" || s == "-infinity" {
        return Err(format!("timestamp {s} cannot be represented"));
    }
    let bad = || format!("bad timestamp {s:?}");
    let (body, bc) = match s.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let (date, rest) = body.split_once(' ').ok_or_else(bad)?;
    let date = if bc {
        format!("{date} BC")
    } else {
        date.to_string()
    };
    let days = parse_date(&date)? as i64;
    let (time, offset_s) = if with_tz {
        let pos = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (t, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut parts = off[1..].split(':');
        let h: i64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let m: i64 = parts
            .next()
            .map_or(Some(0), |x| x.parse().ok())
            .ok_or_else(bad)?;
        let sec: i64 = parts
            .next()
            .map_or(Some(0), |x| x.parse().ok())
            .ok_or_else(bad)?;
        (t, sign * (h * 3600 + m * 60 + sec))
    } else {
        (rest, 0)
    };
    let micros = parse_time(time)?;
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(micros))
        .and_then(|t| t.checked_sub(offset_s * 1_000_000))
        .ok_or_else(|| format!("timestamp {s:?} is beyond Arrow's microsecond timestamps (they end in year 294247)"))
}

/// ISO 8601 interval (`IntervalStyle=iso_8601`): `P1Y2M3DT4H5M6.5S`, components may be
/// negative; `PT0S` for zero.
pub(super) fn parse_interval(s: &str) -> Result<IntervalMonthDayNano, String> {
    let bad = || format!("bad interval {s:?}");
    let body = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let (mut months, mut days, mut nanos) = (0i64, 0i64, 0i64);
    let mut num = String::new();
    // `acc += unit × next number`, with overflow an error rather than a wrapped value.
    let add = |acc: &mut i64, num: &mut String, unit: i64| -> Result<(), String> {
        let v = take(num).ok_or_else(bad)?;
        *acc = v
            .checked_mul(unit)
            .and_then(|x| acc.checked_add(x))
            .ok_or_else(|| format!("interval {s:?} out of range"))?;
        Ok(())
    };
    for c in date.chars() {
        match c {
            'Y' => add(&mut months, &mut num, 12)?,
            'M' => add(&mut months, &mut num, 1)?,
            'W' => add(&mut days, &mut num, 7)?,
            'D' => add(&mut days, &mut num, 1)?,
            _ => num.push(c),
        }
    }
    for c in time.chars() {
        match c {
            'H' => add(&mut nanos, &mut num, 3_600_000_000_000)?,
            'M' => add(&mut nanos, &mut num, 60_000_000_000)?,
            'S' => {
                let (neg, t) = match num.strip_prefix('-') {
                    Some(t) => (true, t.to_string()),
                    None => (false, num.clone()),
                };
                num.clear();
                let (w, f) = t.split_once('.').unwrap_or((&t, ""));
                let w: i64 = w.parse().map_err(|_| bad())?;
                let v = w
                    .checked_mul(1_000_000_000)
                    .and_then(|x| x.checked_add(frac_micros(f)? * 1000))
                    .ok_or_else(bad)?;
                nanos = nanos
                    .checked_add(if neg { -v } else { v })
                    .ok_or_else(|| format!("interval {s:?} out of range"))?;
            }
            _ => num.push(c),
        }
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(IntervalMonthDayNano::new(
        i32::try_from(months).map_err(|_| bad())?,
        i32::try_from(days).map_err(|_| bad())?,
        nanos,
    ))
}

fn take(num: &mut String) -> Option<i64> {
    let v = num.parse().ok();
    num.clear();
    v
}

/// Whether `s` is the text of numeric NaN or ±Infinity (not a number a Decimal holds).
pub(super) fn not_a_number(s: &str) -> bool {
    matches!(s, "NaN" | "Infinity" | "-Infinity")
}

/// `Some(true)` for `infinity`, `Some(false)` for `-infinity` (dates and timestamps).
pub(super) fn infinity(s: &str) -> Option<bool> {
    match s {
        "infinity" => Some(true),
        "-infinity" => Some(false),
        _ => None,
    }
}

/// An array's elements in row-major order, and its dimensions (none for `{}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ArrayLiteral {
    pub dims: Vec<usize>,
    pub items: Vec<Option<String>>,
}

/// Parse an array literal of any number of dimensions: `{a,"b c",NULL}`,
/// `{{1,2},{3,4}}`, `[0:1]={x,y}` (explicit bounds are dropped). Sub-arrays of one level
/// must all have the same length, as PostgreSQL guarantees.
pub(super) fn parse_array(s: &str) -> Result<ArrayLiteral, String> {
    let body = match s.find('=') {
        // `[0:2]={...}`: explicit bounds; keep the elements.
        Some(i) if s.starts_with('[') => &s[i + 1..],
        _ => s,
    };
    let mut p = ArrayParser {
        text: body.as_bytes(),
        at: 0,
        dims: Vec::new(),
        leaf: None,
        items: Vec::new(),
    };
    p.level(0).map_err(|why| format!("array {s:?}: {why}"))?;
    if p.at != p.text.len() {
        return Err(format!("array {s:?}: text after the closing brace"));
    }
    Ok(ArrayLiteral {
        dims: p.dims.into_iter().map(|d| d.unwrap_or(0)).collect(),
        items: p.items,
    })
}

/// A recursive-descent reader of array literals. Delimiters are ASCII, so scanning bytes
/// never splits a UTF-8 character.
struct ArrayParser<'a> {
    text: &'a [u8],
    at: usize,
    /// The length of each level seen so far (inner levels end first).
    dims: Vec<Option<usize>>,
    /// The depth that holds elements (all deeper levels are sub-arrays).
    leaf: Option<usize>,
    items: Vec<Option<String>>,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.at += 1;
        c
    }

    fn level(&mut self, depth: usize) -> Result<(), String> {
        // PostgreSQL arrays have at most 6 dimensions.
        if depth >= 6 {
            return Err("more than 6 dimensions".into());
        }
        if self.next() != Some(b'{') {
            return Err("not an array literal".into());
        }
        if self.peek() == Some(b'}') {
            self.at += 1;
            // `{}`: no dimensions; an empty sub-array would be malformed.
            return if depth == 0 {
                Ok(())
            } else {
                Err("empty sub-array".into())
            };
        }
        let mut count = 0;
        loop {
            let sub = self.peek() == Some(b'{');
            match (self.leaf, sub) {
                (None, false) => self.leaf = Some(depth),
                (Some(d), false) if d == depth => {}
                (Some(d), true) if d > depth => {}
                (None, true) => {}
                _ => return Err("sub-arrays of different depths".into()),
            }
            if sub {
                self.level(depth + 1)?;
            } else {
                let v = self.element()?;
                self.items.push(v);
            }
            count += 1;
            match self.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                Some(c) => return Err(format!("unexpected {:?}", c as char)),
                None => return Err("unterminated".into()),
            }
        }
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(count),
            Some(n) if n == count => {}
            Some(_) => return Err("sub-arrays of different lengths".into()),
        }
        Ok(())
    }

    /// One element: quoted (with `\` escapes) or bare; bare `NULL` is null.
    fn element(&mut self) -> Result<Option<String>, String> {
        let mut v = Vec::new();
        if self.peek() == Some(b'"') {
            self.at += 1;
            loop {
                match self.next() {
                    Some(b'\\') => v.push(self.next().ok_or("dangling escape")?),
                    Some(b'"') => break,
                    Some(c) => v.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            while let Some(c) = self.peek() {
                if c == b',' || c == b'}' {
                    break;
                }
                v.push(c);
                self.at += 1;
            }
            if v == b"NULL" {
                return Ok(None);
            }
        }
        String::from_utf8(v)
            .map(Some)
            .map_err(|_| "element is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_values() {
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
        assert_eq!(parse_date("2000-03-01").unwrap(), 11_017);
        assert_eq!(parse_date("2024-02-29").unwrap(), 19_782);
        assert!(parse_date("2023-02-29").is_err());
        assert_eq!(parse_date("4713-11-24 BC").unwrap(), -2_440_222);
        // As PostgreSQL counts them, up to its last date (within Date32).
        assert_eq!(parse_date("5874897-12-31").unwrap(), 2_145_042_905);
        assert_eq!(
            parse_date("0001-01-01 BC").unwrap(),
            parse_date("0000-01-01").unwrap()
        );
        assert_eq!(parse_time("01:02:03.5").unwrap(), 3_723_500_000);
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:01.000001+00", true).unwrap(),
            1_000_001
        );
        assert_eq!(parse_timestamp("1970-01-01 02:00:00+02", true).unwrap(), 0);
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00-05:30", true).unwrap(),
            19_800_000_000
        );
        assert!(parse_timestamp("infinity", false).is_err());
        // PostgreSQL holds years up to 294276; microseconds since 1970 in an i64 do not.
        let far = parse_timestamp("294270-01-01 00:00:00", false).unwrap_err();
        assert!(
            far.contains("beyond Arrow's microsecond timestamps"),
            "{far}"
        );
        assert_eq!(infinity("infinity"), Some(true));
        assert_eq!(infinity("-infinity"), Some(false));
        assert_eq!(infinity("2024-01-01"), None);
        let i = parse_interval("P1Y2M3DT4H5M6.5S").unwrap();
        assert_eq!((i.months, i.days), (14, 3));
        assert_eq!(
            i.nanoseconds,
            ((4 * 60 + 5) * 60 + 6) * 1_000_000_000 + 500_000_000
        );
        let n = parse_interval("P-1DT-0.000001S").unwrap();
        assert_eq!((n.days, n.nanoseconds), (-1, -1000));
        assert_eq!(
            parse_interval("PT0S").unwrap(),
            IntervalMonthDayNano::new(0, 0, 0)
        );
    }

    #[test]
    fn interval_overflow_is_an_error() {
        assert!(parse_interval("PT9999999999H").is_err());
        assert!(parse_interval("P99999999999Y").is_err());
    }

    #[test]
    fn negative_scale_numeric_text() {
        // numeric(5,-2): 12300 is stored as 123 × 10^2.
        assert_eq!(parse_decimal("12300", 5, -2).unwrap(), i256::from_i128(123));
        assert!(parse_decimal("12345", 5, -2).is_err());
    }

    #[test]
    fn binary_numeric() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3
        let mut v = Vec::new();
        for w in [3u16, 1, 0x4000, 3, 1, 2345, 6780] {
            v.extend(w.to_be_bytes());
        }
        assert_eq!(
            numeric_binary(&v, 12, 3).unwrap(),
            Some(i256::from_i128(-12_345_678))
        );
        assert!(
            numeric_binary(&v, 12, 2).is_err(),
            "too many fractional digits"
        );
        assert!(numeric_binary(&v, 7, 3).is_err(), "exceeds precision");
        let nan: Vec<u8> = [0u16, 0, 0xC000, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric_binary(&nan, 10, 2), Ok(None), "NaN is not a number");
        let zero: Vec<u8> = [0u16, 0, 0, 2]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric_binary(&zero, 10, 2).unwrap(), Some(i256::ZERO));
    }

    /// The i128 decoder of Decimal128 columns agrees with the i256 one (both fail alike).
    #[test]
    fn binary_numeric_i128_matches_i256() {
        let enc =
            |words: &[u16]| -> Vec<u8> { words.iter().flat_map(|w| w.to_be_bytes()).collect() };
        let cases: Vec<Vec<u8>> = vec![
            enc(&[3, 1, 0x4000, 3, 1, 2345, 6780]), // -12345.678
            enc(&[0, 0, 0, 2]),                     // 0
            enc(&[1, -1i16 as u16, 0, 2, 5000]),    // 0.5
            enc(&[1, -2i16 as u16, 0, 4, 1]),       // 0.00000001
            enc(&[2, 9, 0, 0, 9999, 9999]),         // 9999 9999 * 10^32 (~10^40)
            enc(&[
                10, 9, 0x4000, 0, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999,
            ]),
            enc(&[1, 3, 0, 0, 12]),  // 12 * 10^12
            enc(&[0, 0, 0xC000, 0]), // NaN
            enc(&[0, 0, 0xD000, 0]), // Infinity
            enc(&[2, 0, 0]),         // short
        ];
        for v in &cases {
            for (p, sc) in [
                (12u8, 3i8),
                (38, 0),
                (38, 10),
                (10, 2),
                (1, 0),
                (5, -2),
                (38, 38),
            ] {
                let wide = numeric_binary(v, p, sc).map(|x| x.map(|x| x.to_i128().unwrap()));
                let narrow = numeric_binary_i128(v, p, sc);
                match wide {
                    Ok(_) => assert_eq!(narrow, wide, "{v:?} ({p}, {sc})"),
                    Err(_) => assert!(narrow.is_err(), "{v:?} ({p}, {sc}): {narrow:?}"),
                }
            }
        }
    }

    #[test]
    fn bytea_hex() {
        assert_eq!(parse_bytea("\\x00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_bytea("abc").is_err());
    }

    #[test]
    fn array_literals_of_any_dimension() {
        let a = parse_array(r#"{a,"b,c",NULL,"NULL","q\"x"}"#).unwrap();
        assert_eq!(a.dims, vec![5]);
        assert_eq!(
            a.items,
            vec![
                Some("a".into()),
                Some("b,c".into()),
                None,
                Some("NULL".into()),
                Some("q\"x".into())
            ]
        );
        let m = parse_array("{{1,2,3},{4,NULL,6}}").unwrap();
        assert_eq!(m.dims, vec![2, 3]);
        assert_eq!(m.items.len(), 6);
        assert_eq!(m.items[4], None);
        let cube = parse_array("[1:2][1:1][1:2]={{{a,b}},{{c,d}}}").unwrap();
        assert_eq!(cube.dims, vec![2, 1, 2]);
        assert_eq!(parse_array("{}").unwrap().dims, Vec::<usize>::new());
        let deep = format!("{}1{}", "{".repeat(7), "}".repeat(7));
        for bad in [
            "{{1,2},{3}}",
            "{{1,2},3}",
            "{1,{2}}",
            "{1,2",
            "{{}}",
            "x",
            &deep,
        ] {
            assert!(parse_array(bad).is_err(), "{bad}");
        }
    }
}
