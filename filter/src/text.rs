//! Small text helpers kept out of the formatting machinery (`{:?}` on strings pulls Unicode
//! tables into the `.wasm`) and out of the standard sorts (one large copy per element type).

/// `value` in double quotes, with quotes, backslashes and control characters escaped as in JSON.
#[inline(never)]
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_quoted(&mut out, value);
    out
}

/// Appends `value` quoted and escaped as [`quote`] does, without an intermediate string.
pub fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (at, c) in value.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || c == '\u{7f}' => "",
            _ => continue,
        };
        out.push_str(value.get(plain_from..at).unwrap_or(""));
        if escape.is_empty() {
            let code = c as u32;
            out.push_str("\\u00");
            out.push(hex_digit(code >> 4));
            out.push(hex_digit(code & 0xf));
        } else {
            out.push_str(escape);
        }
        plain_from = at + c.len_utf8();
    }
    out.push_str(value.get(plain_from..).unwrap_or(""));
    out.push('"');
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
