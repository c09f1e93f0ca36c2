//! Small text helpers kept out of the formatting machinery (`{:?}` on strings pulls Unicode
//! tables into the `.wasm`) and out of the standard sorts (one large copy per element type).

/// Adds `name` to `names` unless it is there already (lists of header names).
#[inline(never)]
pub fn add_unique(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// Appends `items` separated by `sep`, each between `quote` characters (`""` for none): one
/// small loop instead of the standard `join` code for every element type.
#[inline(never)]
pub fn push_joined(out: &mut String, items: &[&str], sep: &str, quote: &str) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(quote);
        out.push_str(item);
        out.push_str(quote);
    }
}

/// `items` joined by `", "`.
pub fn joined(items: &[&str]) -> String {
    let mut out = String::new();
    push_joined(&mut out, items, ", ", "");
    out
}

/// `value` in double quotes, with quotes, backslashes and control characters escaped as in JSON.
#[inline(never)]
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_quoted(&mut out, value);
    out
}

/// Appends `value` quoted and escaped as [`quote`] does, without an intermediate string.
///
/// Runs of bytes that need no escape are copied whole (found eight bytes at a time): every byte
/// that needs one is ASCII, so the runs always end on a character boundary.
pub fn push_quoted(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut plain_from = 0;
    let mut at = 0;
    loop {
        at = next_escape(bytes, at);
        let Some(&b) = bytes.get(at) else { break };
        out.push_str(value.get(plain_from..at).unwrap_or(""));
        match escape_of(b) {
            Some(escape) => out.push_str(escape),
            None => {
                let code = u32::from(b);
                out.push_str("\\u00");
                out.push(hex_digit(code >> 4));
                out.push(hex_digit(code & 0xf));
            }
        }
        at += 1;
        plain_from = at;
    }
    out.push_str(value.get(plain_from..).unwrap_or(""));
    out.push('"');
}

/// Whether `value` can be written between quotes as it is.
pub fn needs_no_escape(value: &str) -> bool {
    next_escape(value.as_bytes(), 0) == value.len()
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// The short escape of `b`; `None` for a control character written as `\u00XX`.
fn escape_of(b: u8) -> Option<&'static str> {
    match b {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        b'\n' => Some("\\n"),
        b'\r' => Some("\\r"),
        b'\t' => Some("\\t"),
        _ => None,
    }
}

/// Index of the first byte at or after `from` that needs an escape (`bytes.len()` if none).
fn next_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `x` is below `n` (n <= 128), or is zero.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let zero = |x: u64| below(x, 1);
    let mut at = from;
    while let Some(Ok(word)) = bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(word);
        if below(x, 0x20)
            || zero(x ^ (ONES * u64::from(b'"')))
            || zero(x ^ (ONES * u64::from(b'\\')))
            || zero(x ^ (ONES * 0x7f))
        {
            break;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if needs_escape(b) {
            return at;
        }
        at += 1;
    }
    bytes.len()
}

/// Appends `n` in decimal without the formatting machinery.
pub fn push_uint(out: &mut String, mut n: u64) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while at > 0 {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits.get(at..).unwrap_or(&[]) {
        out.push(char::from(d));
    }
}

fn hex_digit(n: u32) -> char {
    char::from_digit(n, 16).unwrap_or('0')
}

/// Sorts in place by `less` (heapsort: small code, no allocation, not stable).
pub fn sort_by<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let len = v.len();
    for start in (0..len / 2).rev() {
        sift_down(v, start, len, &less);
    }
    for end in (1..len).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &less);
    }
}

fn sift_down<T>(v: &mut [T], mut node: usize, end: usize, less: &impl Fn(&T, &T) -> bool) {
    loop {
        let left = 2 * node + 1;
        if left >= end {
            return;
        }
        let right = left + 1;
        let mut child = left;
        if right < end {
            if let (Some(l), Some(r)) = (v.get(left), v.get(right)) {
                if less(l, r) {
                    child = right;
                }
            }
        }
        match (v.get(node), v.get(child)) {
            (Some(n), Some(c)) if less(n, c) => v.swap(node, child),
            _ => return,
        }
        node = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_json() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(quote("é"), "\"é\"");
        assert_eq!(quote("x\u{7f}é\t"), "\"x\\u007fé\\t\"");
        assert_eq!(quote(""), "\"\"");
        // Escapes at every position of the eight-byte scan.
        for at in 0..20 {
            for special in ['"', '\\', '\u{1f}', '\u{7f}', '\n'] {
                let mut s: String = "abcdefghijklmnopqrst".into();
                s.replace_range(at..at + 1, &special.to_string());
                let quoted = quote(&s);
                let expected = serde_json::to_string(&s)
                    .unwrap()
                    .replace("\u{7f}", "\\u007f");
                assert_eq!(quoted, expected, "{s:?}");
            }
        }
        let long = "héllo wörld, a plain value of some length".repeat(3);
        assert_eq!(quote(&long), format!("\"{long}\""));
    }

    #[test]
    fn writes_integers() {
        for n in [0, 7, 10, 443, 65535, u64::MAX] {
            let mut out = String::new();
            push_uint(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn sorts() {
        let mut v = vec![5, 3, 9, 1, 1, 0, 7, 2];
        sort_by(&mut v, |a, b| a < b);
        assert_eq!(v, vec![0, 1, 1, 2, 3, 5, 7, 9]);
        let mut empty: Vec<u8> = vec![];
        sort_by(&mut empty, |a, b| a < b);
        let mut one = vec![1];
        sort_by(&mut one, |a, b| a < b);
        assert_eq!(one, vec![1]);
    }
}
