//! Numbers written the way the Collector's Go code writes them, byte for byte.
//!
//! - [`go_g`]: `strconv.AppendFloat(f, 'g', -1, 64)` with the special cases of
//!   `writeFloat` in prometheus/common `expfmt/text_create.go` (text format 0.0.4: sample
//!   values, `le` and `quantile` label values): shortest round-trip digits, `%e` form when the
//!   decimal exponent is < -4 or >= 6 (`1.234567e+06`, `1e-05`), `NaN`, `+Inf`, `-Inf`.
//! - [`om_float`]: `writeOpenMetricsFloat` in `expfmt/openmetrics_create.go`: the same, plus
//!   `.0` when the result has neither `.` nor `e` (`5.0`).
//! - [`es6`]: `float64AsString` in pdata `pcommon/value.go` (`Value.AsString()` of a double
//!   attribute, and `encoding/json` floats): `%f` form unless |f| < 1e-6 or >= 1e21.
//!
//! The shortest digits come from `ryu` (the same shortest-round-trip, closest-to-exact
//! digits Go's `strconv` produces); only the layout is Go's. The proptests below check the
//! layout against one derived from Rust's own `{:e}` shortest formatting.

/// Longest output: `-1.7976931348623157e+308` is 24 bytes.
pub const SLOT: usize = 32;

/// Shortest decimal digits of a finite, non-zero |f|: `0.d1d2...dn × 10^dp`.
struct Digits {
    d: [u8; 17],
    nd: usize,
    /// Position of the decimal point: the value is `0.DIGITS * 10^dp`.
    dp: i32,
}

fn digits(abs: f64) -> Digits {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(abs).as_bytes();
    let (mant, exp) = match s.iter().position(|&b| b == b'e') {
        Some(i) => (&s[..i], parse_exp(&s[i + 1..])),
        None => (s, 0),
    };
    let mut d = [0u8; 17];
    let mut nd = 0usize;
    let mut int_digits = 0i32;
    let mut seen_dot = false;
    let mut leading = true;
    for &b in mant {
        if b == b'.' {
            seen_dot = true;
            continue;
        }
        if !seen_dot {
            int_digits += 1;
        }
        if leading && b == b'0' {
            // A leading zero moves the point left instead of being a digit.
            int_digits -= 1;
            continue;
        }
        leading = false;
        if nd < d.len() {
            d[nd] = b;
            nd += 1;
        }
    }
    while nd > 0 && d[nd - 1] == b'0' {
        nd -= 1;
    }
    Digits {
        d,
        nd,
        dp: int_digits + exp,
    }
}

fn parse_exp(s: &[u8]) -> i32 {
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let v = s
        .iter()
        .fold(0i32, |acc, &b| acc * 10 + i32::from(b - b'0'));
    if neg { -v } else { v }
}

/// Go's `fmtE` with `prec` = nd-1 (shortest): `d.ddde±XX`.
fn put_e(out: &mut Slot<'_>, dg: &Digits) {
    out.push(dg.d[0]);
    if dg.nd > 1 {
        out.push(b'.');
        out.extend(&dg.d[1..dg.nd]);
    }
    out.push(b'e');
    let mut exp = dg.dp - 1;
    if exp < 0 {
        out.push(b'-');
        exp = -exp;
    } else {
        out.push(b'+');
    }
    let exp = exp as u32;
    if exp < 10 {
        out.push(b'0');
        out.push(b'0' + exp as u8);
    } else if exp < 100 {
        out.push(b'0' + (exp / 10) as u8);
        out.push(b'0' + (exp % 10) as u8);
    } else {
        out.push(b'0' + (exp / 100) as u8);
        out.push(b'0' + (exp / 10 % 10) as u8);
        out.push(b'0' + (exp % 10) as u8);
    }
}

/// Go's `fmtF` with `prec` = max(nd - dp, 0) (shortest).
fn put_f(out: &mut Slot<'_>, dg: &Digits) {
    if dg.dp > 0 {
        let int_len = dg.dp as usize;
        let from_digits = int_len.min(dg.nd);
        out.extend(&dg.d[..from_digits]);
        for _ in from_digits..int_len {
            out.push(b'0');
        }
    } else {
        out.push(b'0');
    }
    let frac = dg.nd as i32 - dg.dp;
    if frac > 0 {
        out.push(b'.');
        for i in 0..frac {
            let idx = dg.dp + i;
            out.push(if idx < 0 { b'0' } else { dg.d[idx as usize] });
        }
    }
}

/// A fixed-size output slot (no bounds surprises: every layout fits in [`SLOT`] bytes).
struct Slot<'a> {
    buf: &'a mut [u8; SLOT],
    len: usize,
}

impl Slot<'_> {
    #[inline(always)]
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
    #[inline(always)]
    fn extend(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }
}

#[inline(always)]
fn put_int(slot: &mut [u8; SLOT], mut len: usize, v: i64) -> usize {
    let mut b = itoa::Buffer::new();
    let s = b.format(v).as_bytes();
    slot[len..len + s.len()].copy_from_slice(s);
    len += s.len();
    len
}

/// An integer of 7 to 16 digits in Go's shortest %e form.
#[inline(always)]
fn put_int_e(slot: &mut [u8; SLOT], v: i64) -> usize {
    let mut b = itoa::Buffer::new();
    let s = b.format(v).as_bytes();
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let exp = digits.len() - 1;
    let nd = digits.len() - digits.iter().rev().take_while(|&&d| d == b'0').count();
    let mut n = 0;
    if neg {
        slot[0] = b'-';
        n = 1;
    }
    slot[n] = digits[0];
    n += 1;
    if nd > 1 {
        slot[n] = b'.';
        slot[n + 1..n + nd].copy_from_slice(&digits[1..nd]);
        n += nd;
    }
    slot[n] = b'e';
    slot[n + 1] = b'+';
    slot[n + 2] = b'0' + (exp / 10) as u8;
    slot[n + 3] = b'0' + (exp % 10) as u8;
    n + 4
}

/// `writeFloat` of expfmt's text format into `slot`; returns the length.
#[inline]
pub fn go_g(f: f64, slot: &mut [u8; SLOT]) -> usize {
    if f == 0.0 {
        slot[0] = b'0';
        return 1;
    }
    let abs = f.abs();
    if f.fract() == 0.0 {
        // Integers below 1e6 print as plain integers in %g (exponent < 6): counts.
        if abs < 1e6 {
            return put_int(slot, 0, f as i64);
        }
        // Integers up to 2^53 (byte counts, large counters): their shortest digits are their
        // decimal digits without trailing zeros (every integer there is representable, so a
        // shorter string would denote another integer), in %e form: `1.835008e+08`.
        if abs < 9_007_199_254_740_992.0 {
            return put_int_e(slot, f as i64);
        }
    } else if (1e-4..1e6).contains(&abs) {
        // Fractions whose decimal exponent is in [-4, 6): Go writes them in %f form, and so
        // does ryu (which switches to exponents only below 1e-5 and from 1e16), byte for byte.
        let mut b = ryu::Buffer::new();
        let s = b.format_finite(f).as_bytes();
        slot[..s.len()].copy_from_slice(s);
        return s.len();
    }
    if f.is_nan() {
        slot[..3].copy_from_slice(b"NaN");
        return 3;
    }
    if f.is_infinite() {
        let s: &[u8] = if f > 0.0 { b"+Inf" } else { b"-Inf" };
        slot[..4].copy_from_slice(s);
        return 4;
    }
    let dg = digits(f.abs());
    let mut out = Slot { buf: slot, len: 0 };
    if f < 0.0 {
        out.push(b'-');
    }
    let exp = dg.dp - 1;
    if !(-4..6).contains(&exp) {
        put_e(&mut out, &dg);
    } else {
        put_f(&mut out, &dg);
    }
    out.len
}

/// `writeOpenMetricsFloat`: [`go_g`] with `.0` added to integers (`1.0`, `0.0`, `5.0`).
#[inline]
pub fn om_float(f: f64, slot: &mut [u8; SLOT]) -> usize {
    let n = go_g(f, slot);
    if f.is_finite() && !slot[..n].iter().any(|&b| b == b'.' || b == b'e') {
        slot[n] = b'.';
        slot[n + 1] = b'0';
        return n + 2;
    }
    n
}

/// Appends [`go_g`] to a vector.
pub fn push_go_g(out: &mut Vec<u8>, f: f64) {
    let mut slot = [0u8; SLOT];
    let n = go_g(f, &mut slot);
    out.extend_from_slice(&slot[..n]);
}

/// Appends [`om_float`] to a vector.
pub fn push_om_float(out: &mut Vec<u8>, f: f64) {
    let mut slot = [0u8; SLOT];
    let n = om_float(f, &mut slot);
    out.extend_from_slice(&slot[..n]);
}

/// pdata's `float64AsString` (ES6 number-to-string, as `encoding/json` writes floats).
pub fn es6(f: f64) -> String {
    if f.is_nan() {
        return "json: unsupported value: NaN".into();
    }
    if f.is_infinite() {
        return format!(
            "json: unsupported value: {}",
            if f > 0.0 { "+Inf" } else { "-Inf" }
        );
    }
    if f == 0.0 {
        // Go prints negative zero as "-0" in 'f' form.
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let abs = f.abs();
    let dg = digits(abs);
    let mut slot = [0u8; SLOT];
    let mut out = Slot {
        buf: &mut slot,
        len: 0,
    };
    if f < 0.0 {
        out.push(b'-');
    }
    if !(1e-6..1e21).contains(&abs) {
        put_e(&mut out, &dg);
        // "clean up e-09 to e-9"
        let n = out.len;
        if n >= 4 && slot[n - 4] == b'e' && slot[n - 3] == b'-' && slot[n - 2] == b'0' {
            slot[n - 2] = slot[n - 1];
            return String::from_utf8_lossy(&slot[..n - 1]).into_owned();
        }
        return String::from_utf8_lossy(&slot[..n]).into_owned();
    }
    put_f(&mut out, &dg);
    let n = out.len;
    String::from_utf8_lossy(&slot[..n]).into_owned()
}

/// Milliseconds of a Unix-nanosecond timestamp as Go computes them for
/// `NewMetricWithTimestamp`: `t.Unix()*1000 + t.Nanosecond()/1e6`.
#[inline]
pub fn unix_millis(nanos: u64) -> i64 {
    (nanos / 1_000_000_000) as i64 * 1000 + ((nanos % 1_000_000_000) / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(f: f64) -> String {
        let mut s = [0u8; SLOT];
        let n = go_g(f, &mut s);
        String::from_utf8(s[..n].to_vec()).unwrap()
    }
    fn om(f: f64) -> String {
        let mut s = [0u8; SLOT];
        let n = om_float(f, &mut s);
        String::from_utf8(s[..n].to_vec()).unwrap()
    }

    /// Go's %g layout from Rust's own shortest `{:e}` digits: an independent path to the
    /// same answer.
    fn reference_g(f: f64) -> String {
        if f == 0.0 {
            return "0".into();
        }
        if f.is_nan() {
            return "NaN".into();
        }
        if f.is_infinite() {
            return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
        }
        let e = format!("{:e}", f.abs()); // "1.234e6", "5e-324"
        let (mant, exp) = e.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        let digits: String = mant.chars().filter(|c| *c != '.').collect();
        let digits = digits.trim_end_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        let sign = if f < 0.0 { "-" } else { "" };
        if !(-4..6).contains(&exp) {
            let frac = if digits.len() > 1 {
                format!(".{}", &digits[1..])
            } else {
                String::new()
            };
            let esign = if exp < 0 { '-' } else { '+' };
            format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
        } else if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    }

    #[test]
    fn known_go_outputs() {
        // Outputs of Go's strconv.FormatFloat(f, 'g', -1, 64), as the Collector writes them.
        for (f, want) in [
            (1.0, "1"),
            (-1.0, "-1"),
            (0.0, "0"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (0.012, "0.012"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (999999.5, "999999.5"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (12345.678, "12345.678"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-2.5e-7, "-2.5e-07"),
            (1700000000.123, "1.700000000123e+09"),
            (183500800.0, "1.835008e+08"),
            (-1e15, "-1e+15"),
            (9007199254740991.0, "9.007199254740991e+15"),
            (9007199254740992.0, "9.007199254740992e+15"),
            (0.0001, "0.0001"),
            (0.00009999, "9.999e-05"),
            (999999.9999999999, "999999.9999999999"),
            (-1234.567, "-1234.567"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(g(f), want, "{f:?}");
        }
        for (f, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (5.0, "5.0"),
            (-1.0, "-1.0"),
            (0.5, "0.5"),
            (1e6, "1e+06"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(om(f), want, "{f:?}");
        }
    }

    #[test]
    fn es6_matches_pdata() {
        for (f, want) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-3.25, "-3.25"),
            (123456789.0, "123456789"),
        ] {
            assert_eq!(es6(f), want, "{f:?}");
        }
        assert_eq!(es6(f64::NAN), "json: unsupported value: NaN");
    }

    #[test]
    fn go_millis_truncate() {
        assert_eq!(unix_millis(1_700_000_000_123_999_999), 1_700_000_000_123);
        assert_eq!(unix_millis(0), 0);
    }

    /// Same layout as the reference; where the two shortest-digit algorithms break an exact
    /// tie differently (Rust's std rounds half up, ryu and Go's strconv round half to even),
    /// both strings must denote `f` and ours must end in an even digit.
    fn check(f: f64) -> Result<(), TestCaseError> {
        let (ours, reference) = (g(f), reference_g(f));
        if ours != reference {
            prop_assert_eq!(ours.parse::<f64>().unwrap(), f, "{} vs {}", ours, reference);
            prop_assert_eq!(reference.parse::<f64>().unwrap(), f);
            prop_assert_eq!(ours.len(), reference.len(), "{} vs {}", ours, reference);
            let mantissa = ours.split('e').next().unwrap_or("");
            let last = mantissa.chars().last().unwrap_or('0');
            prop_assert!(
                (last as u8 - b'0').is_multiple_of(2),
                "{} vs {}",
                ours,
                reference
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn go_g_matches_reference_layout(bits in any::<u64>()) {
            check(f64::from_bits(bits))?;
        }

        #[test]
        fn go_g_matches_reference_on_plain_numbers(f in -1e9f64..1e9, scale in -12i32..12) {
            let f = f * 10f64.powi(scale);
            check(f)?;
            // and parses back to the same number (round trip)
            if f.is_finite() {
                prop_assert_eq!(g(f).parse::<f64>().unwrap(), f);
            }
        }
    }

    proptest! {
        #[test]
        fn go_g_matches_reference_on_integers(i in -(1i64 << 53)..(1i64 << 53), zeros in 0u32..6) {
            let f = (i / 10i64.pow(zeros) * 10i64.pow(zeros)) as f64;
            check(f)?;
        }
    }

    #[test]
    fn ties_round_half_to_even_like_go() {
        // -974136307766545.25 sits exactly between the 16-digit candidates ...452 and ...453.
        let f = f64::from_bits(14054520328230709386);
        assert_eq!(f, -974136307766545.2);
        assert_eq!(g(f), "-9.741363077665452e+14");
    }
}
