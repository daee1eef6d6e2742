//! pgoutput's `binary` option: column values in PostgreSQL's binary send format.
//!
//! Scalar kinds (integers, floats, decimals, dates, times, timestamps, intervals, bytea)
//! share the binary COPY decoder of the snapshot ([`Column::append_binary`]). Kinds the
//! engine keeps as text (uuid, inet, timetz, unconstrained numeric, json/jsonb, enums, ...)
//! are rendered here to exactly the text PostgreSQL's output function prints, so a value
//! is the same whether it came from the snapshot, the text stream or the binary stream.
//! Arrays, of any number of dimensions, are decoded element by element. A type without a
//! decoder here (money, ranges, geometric types, extension types) is an error naming the
//! column: such sources need `binary: false`.

use super::types::{builtin_array_element, oid, Column, Kind, TypeCatalog};

/// How a text-kept value's binary form becomes its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextForm {
    /// The bytes are the text (text, varchar, char(n), name, json, xml, enums).
    Utf8,
    /// A version byte (1), then the text.
    Jsonb,
    Uuid,
    Inet,
    TimeTz,
    Numeric,
    Macaddr,
    /// `bit` / `varbit`: a bit count, then the bits, most significant first.
    Bits,
}

/// How to decode one column's binary values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// The snapshot's binary decoder.
    Direct,
    /// Rendered to text.
    Text(TextForm),
    /// A one-dimensional array of elements decoded so.
    List(Box<Decoder>),
}

const XML: u32 = 142;
const INET: u32 = 869;
const CIDR: u32 = 650;
const MACADDR: u32 = 829;
const BIT: u32 = 1560;
const VARBIT: u32 = 1562;

/// The decoder of a column of type `type_oid`, or why there is none.
pub fn decoder(type_oid: u32, typmod: i32, catalog: &TypeCatalog) -> Result<Decoder, String> {
    if let Some(&(base, base_mod)) = catalog.domains.get(&type_oid) {
        return decoder(base, if typmod >= 0 { typmod } else { base_mod }, catalog);
    }
    if let Some(elem) = builtin_array_element(type_oid).or(catalog.arrays.get(&type_oid).copied()) {
        return Ok(Decoder::List(Box::new(decoder(elem, typmod, catalog)?)));
    }
    match Kind::of(type_oid, typmod, catalog) {
        Kind::Text | Kind::Json => {}
        Kind::List(_) => return Err(format!("type {type_oid}: nested array")),
        _ => return Ok(Decoder::Direct),
    }
    let form = match type_oid {
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | XML => TextForm::Utf8,
        oid::JSONB => TextForm::Jsonb,
        oid::UUID => TextForm::Uuid,
        INET | CIDR => TextForm::Inet,
        oid::TIMETZ => TextForm::TimeTz,
        oid::NUMERIC => TextForm::Numeric,
        MACADDR => TextForm::Macaddr,
        BIT | VARBIT => TextForm::Bits,
        t if catalog.enums.contains(&t) => TextForm::Utf8,
        t => return Err(format!("no binary decoder for type oid {t}")),
    };
    Ok(Decoder::Text(form))
}

/// Decode `v` with `d` and append it to `col`.
pub fn append(col: &mut Column, d: &Decoder, v: &[u8]) -> Result<(), String> {
    match d {
        Decoder::Direct => col.append_binary(v),
        // The common forms go straight into the column, without an intermediate String.
        Decoder::Text(TextForm::Utf8) => col.append_text(v),
        Decoder::Text(TextForm::Jsonb) => col.append_text(jsonb_text(v)?),
        Decoder::Text(TextForm::Uuid) => col.append_text(&uuid_text(v)?),
        Decoder::Text(form) => col.append_text(to_text(*form, v)?.as_bytes()),
        Decoder::List(elem) => {
            let (dims, items) = array_items(v)?;
            col.append_array(&dims, &mut items.into_iter(), &mut |c, b| {
                append(c, elem, b)
            })
        }
    }
}

fn take<'a>(v: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if v.len() < n {
        return Err(format!("short binary {what}"));
    }
    let (head, rest) = v.split_at(n);
    *v = rest;
    Ok(head)
}

fn i32_at(v: &mut &[u8], what: &str) -> Result<i32, String> {
    let b = take(v, 4, what)?;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The elements of an array (`None`: null), in row-major order.
type Elements<'a> = Vec<Option<&'a [u8]>>;

/// The dimensions of a binary array (none for an empty one) and its elements (`None`:
/// null) in row-major order.
fn array_items(mut v: &[u8]) -> Result<(Vec<usize>, Elements<'_>), String> {
    let v = &mut v;
    let ndim = i32_at(v, "array")?;
    let _has_nulls = i32_at(v, "array")?;
    let _elem = i32_at(v, "array")?;
    if !(0..=6).contains(&ndim) {
        return Err(format!("binary array with {ndim} dimensions"));
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for _ in 0..ndim {
        let len = i32_at(v, "array")?;
        let _lower = i32_at(v, "array")?;
        // An empty array has no dimensions; PostgreSQL never sends an empty one.
        if len <= 0 {
            return Err(format!("binary array dimension of length {len}"));
        }
        dims.push(len as usize);
    }
    let len = dims
        .iter()
        .try_fold(if dims.is_empty() { 0usize } else { 1 }, |n, d| {
            n.checked_mul(*d)
        })
        .ok_or("array too long")?;
    let mut out = Vec::with_capacity(len.min(v.len() / 4));
    for _ in 0..len {
        let n = i32_at(v, "array element")?;
        out.push(if n < 0 {
            None
        } else {
            Some(take(v, n as usize, "array element")?)
        });
    }
    if !v.is_empty() {
        return Err(format!("{} bytes after the array's elements", v.len()));
    }
    Ok((dims, out))
}

/// The text of a binary jsonb: after its version byte (1).
fn jsonb_text(v: &[u8]) -> Result<&[u8], String> {
    match v.split_first() {
        Some((1, rest)) => Ok(rest),
        _ => Err("unknown jsonb binary version".into()),
    }
}

/// A binary uuid as PostgreSQL prints it: 8-4-4-4-12 lowercase hex digits.
fn uuid_text(v: &[u8]) -> Result<[u8; 36], String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b: &[u8; 16] = v.try_into().map_err(|_| "binary uuid is not 16 bytes")?;
    let mut out = [b'-'; 36];
    let mut j = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            j += 1; // a dash
        }
        out[j] = HEX[usize::from(x >> 4)];
        out[j + 1] = HEX[usize::from(x & 15)];
        j += 2;
    }
    Ok(out)
}

/// The text PostgreSQL prints for binary value `v` of `form`.
pub fn to_text(form: TextForm, v: &[u8]) -> Result<String, String> {
    let utf8 = |b: &[u8]| {
        simdutf8::basic::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| "text is not UTF-8".to_string())
    };
    match form {
        TextForm::Utf8 => utf8(v),
        TextForm::Jsonb => utf8(jsonb_text(v)?),
        TextForm::Uuid => utf8(&uuid_text(v)?),
        TextForm::Macaddr => {
            let b: [u8; 6] = v.try_into().map_err(|_| "binary macaddr is not 6 bytes")?;
            Ok(b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"))
        }
        TextForm::Inet => inet_text(v),
        TextForm::Bits => {
            let (len, bits) = v.split_at_checked(4).ok_or("short binary bit string")?;
            let n = usize::try_from(i32::from_be_bytes([len[0], len[1], len[2], len[3]]))
                .map_err(|_| "negative bit length")?;
            if bits.len() * 8 < n {
                return Err("short binary bit string".into());
            }
            Ok((0..n)
                .map(|i| {
                    if bits[i / 8] & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect())
        }
        TextForm::TimeTz => timetz_text(v),
        TextForm::Numeric => numeric_text(v),
    }
}

/// `inet` / `cidr`: family, bits, is_cidr, address length, address.
fn inet_text(v: &[u8]) -> Result<String, String> {
    let [family, bits, is_cidr, n, addr @ ..] = v else {
        return Err("short binary inet".into());
    };
    let (ip, max): (std::net::IpAddr, u8) = match (family, n, addr.len()) {
        (2, 4, 4) => (
            std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into(),
            32,
        ),
        (3, 16, 16) => {
            let a: [u8; 16] = addr.try_into().map_err(|_| "binary inet6")?;
            let ip = std::net::Ipv6Addr::from(a);
            let w = ip.segments();
            // PostgreSQL prints an IPv4-compatible address (`::a.b.c.d`) in dotted form.
            if w[..6].iter().all(|&x| x == 0) && w[6] != 0 {
                let v4 = std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]);
                let text = format!("::{v4}");
                return Ok(if *is_cidr == 0 && *bits == 128 {
                    text
                } else {
                    format!("{text}/{bits}")
                });
            }
            (ip.into(), 128)
        }
        _ => return Err("bad binary inet".into()),
    };
    Ok(if *is_cidr == 0 && *bits == max {
        ip.to_string()
    } else {
        format!("{ip}/{bits}")
    })
}

/// `timetz`: microseconds since midnight, then the zone offset in seconds west of UTC.
fn timetz_text(v: &[u8]) -> Result<String, String> {
    let b: [u8; 12] = v.try_into().map_err(|_| "binary timetz is not 12 bytes")?;
    let us = i64::from_be_bytes(b[0..8].try_into().map_err(|_| "timetz")?);
    let west = i32::from_be_bytes(b[8..12].try_into().map_err(|_| "timetz")?);
    let (h, m, s, frac) = (
        us / 3_600_000_000,
        us / 60_000_000 % 60,
        us / 1_000_000 % 60,
        us % 1_000_000,
    );
    let mut out = format!("{h:02}:{m:02}:{s:02}");
    if frac > 0 {
        let f = format!("{frac:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    let east = -west;
    let a = east.unsigned_abs();
    out.push(if east < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", a / 3600));
    if a % 3600 != 0 {
        out.push_str(&format!(":{:02}", a / 60 % 60));
        if a % 60 != 0 {
            out.push_str(&format!(":{:02}", a % 60));
        }
    }
    Ok(out)
}

/// `numeric`: base-10000 digits with a weight, sign and display scale, printed exactly.
fn numeric_text(v: &[u8]) -> Result<String, String> {
    if v.len() < 8 {
        return Err("short binary numeric".into());
    }
    let word = |i: usize| u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
    let ndigits = word(0) as usize;
    let weight = i32::from(word(1) as i16);
    let sign = word(2);
    let dscale = word(3) as usize;
    if v.len() != 8 + 2 * ndigits {
        return Err("binary numeric length mismatch".into());
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digit = |g: i32| -> u16 {
        usize::try_from(g)
            .ok()
            .filter(|&g| g < ndigits)
            .map_or(0, |g| word(4 + g))
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for g in 0..=weight {
            if g == 0 {
                out.push_str(&digit(g).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(g)));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut g = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(g)));
            g += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits.len() as u16, weight as u16, sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in ndigits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_prints_as_postgres_does() {
        assert_eq!(
            numeric_text(&numeric(&[3, 1415], 0, 0, 4)).unwrap(),
            "3.1415"
        );
        assert_eq!(
            numeric_text(&numeric(&[12, 3456], 1, 0x4000, 0)).unwrap(),
            "-123456"
        );
        assert_eq!(numeric_text(&numeric(&[50], -1, 0, 3)).unwrap(), "0.005");
        assert_eq!(
            numeric_text(&numeric(&[500], -2, 0, 6)).unwrap(),
            "0.000005"
        );
        assert_eq!(numeric_text(&numeric(&[], 0, 0, 2)).unwrap(), "0.00");
        assert_eq!(numeric_text(&numeric(&[1], 2, 0, 0)).unwrap(), "100000000");
        assert_eq!(numeric_text(&numeric(&[], 0, 0xC000, 0)).unwrap(), "NaN");
    }

    #[test]
    fn timetz_inet_uuid_print_as_postgres_does() {
        let mut t = (12i64 * 3_600_000_000).to_be_bytes().to_vec();
        t.extend_from_slice(&(-19_800i32).to_be_bytes());
        assert_eq!(timetz_text(&t).unwrap(), "12:00:00+05:30");
        let mut t = (3_723_500_000i64).to_be_bytes().to_vec();
        t.extend_from_slice(&(3600i32).to_be_bytes());
        assert_eq!(timetz_text(&t).unwrap(), "01:02:03.5-01");
        assert_eq!(
            inet_text(&[2, 24, 0, 4, 192, 168, 0, 1]).unwrap(),
            "192.168.0.1/24"
        );
        assert_eq!(inet_text(&[2, 32, 0, 4, 10, 0, 0, 1]).unwrap(), "10.0.0.1");
        assert_eq!(inet_text(&[2, 8, 1, 4, 10, 0, 0, 0]).unwrap(), "10.0.0.0/8");
        let mut v6 = vec![3, 128, 0, 16];
        v6.extend_from_slice(&[0; 12]);
        v6.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(inet_text(&v6).unwrap(), "::1.2.3.4");
        let mut v6 = vec![3, 64, 0, 16, 0x20, 0x01, 0x0d, 0xb8];
        v6.extend_from_slice(&[0; 12]);
        assert_eq!(inet_text(&v6).unwrap(), "2001:db8::/64");
        assert_eq!(
            to_text(TextForm::Bits, &[0, 0, 0, 10, 0b1010_0000, 0b1100_0000]).unwrap(),
            "1010000011"
        );
        let u = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(
            to_text(TextForm::Uuid, &u).unwrap(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
    }
}
