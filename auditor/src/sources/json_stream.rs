//! A JSON List read as a stream. `kubectl get pods -A -o json` of a large cluster is one object of
//! gigabytes, and what the scan needs of it is its `items`. [`read_list`] reads such a file a block
//! at a time and hands over the text of each item, in batches, as soon as it has been read, so the
//! file is never held in memory whole and the items can be parsed and judged on other threads
//! while the rest is still being read.
//!
//! Only the shape is found here: where each item starts and ends (strings, escapes and brackets),
//! not whether it is valid JSON. Whoever receives an item parses it, and an item that does not
//! parse means the file must be read the general way, which gives the error with its line. The
//! rest of the object is checked here as [`super::typed_read::json_list`] checks it: `kind` a
//! string naming a list kind, `apiVersion` a string or null, `items` an array, no key twice, every
//! other value valid JSON and nothing but whitespace after the object. Anything else gives `None`:
//! not a List this reader takes.

use std::io::{self, Read};
use std::ops::Range;

/// Items handed over together, in file order: a block of the file and where each item is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Index in `items` of the first item of the batch.
    pub first: usize,
    /// The line the List starts on (where its `{` is).
    pub line: usize,
    /// Bytes of the file; each item is a range of them, exactly as it is in the file.
    pub block: Vec<u8>,
    pub items: Vec<Range<usize>>,
}

impl Batch {
    /// Each item's bytes, in order.
    pub fn item_bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.items
            .iter()
            .map(|r| self.block.get(r.clone()).unwrap_or_default())
    }
}

/// Bytes read from the file at a time (and so about the size of a batch).
pub const BLOCK: usize = 1 << 20;

/// Reads one JSON object from `reader`, handing its `items` to `on_batch` a block of the file
/// (`block` bytes, [`BLOCK`] but in tests) at a time. `fresh` gives the buffers blocks are read
/// into (the caller may hand back the blocks of batches it is done with, so the same memory is
/// used again). `Ok(Some(n))`: it was a List of
/// `n` items, all handed over; `Ok(None)`: it is not a List this reader takes (the batches already
/// handed over must be dropped). An I/O error is returned as it is.
pub fn read_list<R: Read>(
    reader: R,
    block: usize,
    fresh: &mut dyn FnMut() -> Vec<u8>,
    on_batch: &mut dyn FnMut(Batch),
) -> io::Result<Option<usize>> {
    let mut reader = reader;
    let mut buf = fresh_block(fresh);
    // The first three bytes, to see whether they are a byte order mark.
    reader.by_ref().take(3).read_to_end(&mut buf)?;
    let mut s = Scanner {
        buf,
        block: block.max(1),
        reader,
        pos: 0,
        keep: None,
        batch: None,
        fresh,
        on_batch,
    };
    if s.buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
        s.pos = 3;
    }
    let mut line = 1;
    s.advance_while(|b| {
        line += usize::from(b == b'\n');
        is_ws(b)
    })?;
    if !s.eat(b'{')? {
        return Ok(None);
    }
    let mut kind: Option<String> = None;
    let mut api_version_seen = false;
    let mut count: Option<usize> = None;
    s.skip_ws()?;
    if s.eat(b'}')? {
        return Ok(None);
    }
    loop {
        s.skip_ws()?;
        if s.peek()? != Some(b'"') {
            return Ok(None);
        }
        let Some(range) = s.value()? else {
            return Ok(None);
        };
        let Ok(key) = serde_json::from_slice::<String>(s.bytes(range)) else {
            return Ok(None);
        };
        s.skip_ws()?;
        if !s.eat(b':')? {
            return Ok(None);
        }
        s.skip_ws()?;
        if key == "items" {
            if count.is_some() {
                return Ok(None);
            }
            match s.items(line)? {
                Some(n) => count = Some(n),
                None => return Ok(None),
            }
        } else {
            let Some(range) = s.value()? else {
                return Ok(None);
            };
            let value = s.bytes(range);
            let valid = match key.as_str() {
                "kind" => match (&kind, serde_json::from_slice::<String>(value)) {
                    (None, Ok(k)) => {
                        kind = Some(k);
                        true
                    }
                    _ => false,
                },
                "apiVersion" => {
                    let ok = !api_version_seen
                        && serde_json::from_slice::<Option<String>>(value).is_ok();
                    api_version_seen = true;
                    ok
                }
                _ => {
                    std::str::from_utf8(value).is_ok()
                        && serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok()
                }
            };
            if !valid {
                return Ok(None);
            }
        }
        s.skip_ws()?;
        match s.next()? {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return Ok(None),
        }
    }
    s.skip_ws()?;
    if s.peek()?.is_some() {
        return Ok(None);
    }
    match (kind, count) {
        (Some(k), Some(n)) if super::typed_read::is_list_kind(&k) => Ok(Some(n)),
        _ => Ok(None),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A buffer from `fresh`, emptied.
fn fresh_block(fresh: &mut dyn FnMut() -> Vec<u8>) -> Vec<u8> {
    let mut block = fresh();
    block.clear();
    block
}

/// The items cut so far from the block being read.
struct OpenBatch {
    first: usize,
    line: usize,
    items: Vec<Range<usize>>,
}

/// The reader's bytes, a block at a time. What has been looked at is let go of when the next block
/// is read, but for the value being cut (`keep`), which moves to the front of the new block.
struct Scanner<'a, R> {
    reader: R,
    buf: Vec<u8>,
    block: usize,
    pos: usize,
    /// Where the value being cut starts.
    keep: Option<usize>,
    /// Inside `items`: the items of `buf` cut so far.
    batch: Option<OpenBatch>,
    fresh: &'a mut dyn FnMut() -> Vec<u8>,
    on_batch: &'a mut dyn FnMut(Batch),
}

impl<R: Read> Scanner<'_, R> {
    /// Makes sure at least one byte is buffered; `false` at the end of the input. Reading the next
    /// block hands over the items cut from this one.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.buf.len() {
            return Ok(true);
        }
        self.next_block(self.keep.unwrap_or(self.pos));
        // A value longer than a block: read as much again as is carried, so a long value is
        // copied a few times, not once per block.
        let want = self.block.max(self.buf.len());
        let n = (&mut self.reader)
            .take(want as u64)
            .read_to_end(&mut self.buf)?;
        Ok(n > 0)
    }

    /// Starts a new block with what this one holds from `from` on, and hands this one over with
    /// the items cut from it, if any.
    fn next_block(&mut self, from: usize) {
        let mut next = fresh_block(self.fresh);
        next.extend_from_slice(self.bytes(from..self.buf.len()));
        let block = std::mem::replace(&mut self.buf, next);
        self.pos -= from;
        self.keep = self.keep.map(|k| k - from);
        if let Some(open) = self.batch.as_mut() {
            if !open.items.is_empty() {
                let items = std::mem::take(&mut open.items);
                let first = open.first;
                open.first += items.len();
                (self.on_batch)(Batch {
                    first,
                    line: open.line,
                    block,
                    items,
                });
            }
        }
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(if self.fill()? {
            self.buf.get(self.pos).copied()
        } else {
            None
        })
    }

    fn next(&mut self) -> io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.pos += 1;
        }
        Ok(b)
    }

    fn eat(&mut self, want: u8) -> io::Result<bool> {
        if self.peek()? == Some(want) {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Moves past the bytes for which `go_on` holds, across blocks.
    fn advance_while(&mut self, mut go_on: impl FnMut(u8) -> bool) -> io::Result<()> {
        while self.fill()? {
            let rest = self.bytes(self.pos..self.buf.len());
            let n = rest.iter().position(|b| !go_on(*b)).unwrap_or(rest.len());
            self.pos += n;
            if self.pos < self.buf.len() {
                break;
            }
        }
        Ok(())
    }

    fn skip_ws(&mut self) -> io::Result<()> {
        self.advance_while(is_ws)
    }

    /// Cuts the value that starts here: its range in `buf` (valid until the next read), leaving the
    /// scanner after it. `None` when the input ends first or no value starts here.
    fn value(&mut self) -> io::Result<Option<Range<usize>>> {
        let Some(first) = self.peek()? else {
            return Ok(None);
        };
        self.keep = Some(self.pos);
        let closed = match first {
            b'{' | b'[' | b'"' => self.nested()?,
            b',' | b']' | b'}' | b':' => false,
            _ => {
                // A number, true, false or null: up to the next delimiter.
                self.advance_while(|b| !is_ws(b) && !matches!(b, b',' | b']' | b'}'))?;
                true
            }
        };
        let start = self.keep.take().unwrap_or(self.pos);
        Ok(closed.then_some(start..self.pos))
    }

    /// An object, an array or a string: up to the bracket or quote that closes it. `false` when
    /// the input ends first.
    fn nested(&mut self) -> io::Result<bool> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        while self.fill()? {
            let buf = self.buf.as_slice();
            let mut i = self.pos;
            let end = buf.len();
            while i < end {
                if in_string {
                    if escaped {
                        escaped = false;
                        i += 1;
                        continue;
                    }
                    let Some(k) = buf.get(i..).and_then(|b| memchr::memchr2(b'"', b'\\', b)) else {
                        i = end;
                        break;
                    };
                    i += k;
                    if buf.get(i) == Some(&b'\\') {
                        escaped = true;
                    } else {
                        in_string = false;
                        if depth == 0 {
                            self.pos = i + 1;
                            return Ok(true);
                        }
                    }
                    i += 1;
                    continue;
                }
                // Outside strings: skip to the next byte that matters.
                let Some(k) = buf.get(i..).and_then(|b| {
                    b.iter()
                        .position(|c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))
                }) else {
                    i = end;
                    break;
                };
                i += k;
                match buf.get(i) {
                    Some(b'"') => in_string = true,
                    Some(b'{' | b'[') => depth += 1,
                    _ => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            self.pos = i + 1;
                            return Ok(true);
                        }
                    }
                }
                i += 1;
            }
            self.pos = i;
        }
        Ok(false)
    }

    /// The items array, from its `[` to its `]`: every item handed over. `None` when it is not an
    /// array of values.
    fn items(&mut self, line: usize) -> io::Result<Option<usize>> {
        if !self.eat(b'[')? {
            return Ok(None);
        }
        self.batch = Some(OpenBatch {
            first: 0,
            line,
            items: Vec::new(),
        });
        self.skip_ws()?;
        if !self.eat(b']')? {
            loop {
                self.skip_ws()?;
                let Some(range) = self.value()? else {
                    return Ok(None);
                };
                if let Some(open) = self.batch.as_mut() {
                    open.items.push(range);
                }
                self.skip_ws()?;
                match self.next()? {
                    Some(b',') => continue,
                    Some(b']') => break,
                    _ => return Ok(None),
                }
            }
        }
        let count = self
            .batch
            .as_ref()
            .map_or(0, |open| open.first + open.items.len());
        // Hand over what is cut from this block; the rest of the block stays to be read.
        self.next_block(self.pos);
        self.batch = None;
        Ok(Some(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` in blocks of `chunk` bytes, a few at a time (to cross every boundary).
    fn split(text: &str, chunk: usize) -> Option<(usize, Vec<Batch>)> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut batches = Vec::new();
        let n = read_list(
            Trickle(text.as_bytes(), 3),
            chunk,
            &mut Vec::new,
            &mut |b| batches.push(b),
        )
        .expect("no I/O error")?;
        Some((n, batches))
    }

    fn items(text: &str) -> Option<Vec<String>> {
        let mut all = None;
        for chunk in [1, 2, 3, 7, 4096] {
            let got = split(text, chunk).map(|(n, batches)| {
                let items: Vec<String> = batches
                    .iter()
                    .flat_map(|b| b.item_bytes())
                    .map(|i| String::from_utf8(i.to_vec()).expect("UTF-8"))
                    .collect();
                assert_eq!(items.len(), n, "{text}");
                items
            });
            if let Some(previous) = &all {
                assert_eq!(previous, &got, "chunk {chunk}: {text}");
            }
            all = Some(got);
        }
        all.flatten()
    }

    #[test]
    fn items_are_cut_where_they_end_whatever_they_hold() {
        let text = "\u{feff}\n\n  {\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\"kind\": \"Pod\", \"a\": \"}]\\\"{[\", \"b\": [1, {\"c\": null}]},\n        \"x\\\\\",\n        -1.5e3 , true,[],{}\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\"resourceVersion\": \"\"}\n}\n";
        assert_eq!(
            items(text).expect("a list"),
            [
                r#"{"kind": "Pod", "a": "}]\"{[", "b": [1, {"c": null}]}"#,
                r#""x\\""#,
                "-1.5e3",
                "true",
                "[]",
                "{}",
            ]
        );
        for chunk in [1, 5, 40] {
            let (n, batches) = split(text, chunk).expect("a list");
            assert!(
                batches.len() > 1,
                "more than one batch at {chunk} bytes a block"
            );
            assert!(
                batches.iter().all(|b| b.line == 3),
                "the List starts on line 3"
            );
            let mut first = 0;
            for b in &batches {
                assert_eq!(b.first, first, "batches follow each other");
                assert!(!b.items.is_empty());
                first += b.items.len();
            }
            assert_eq!(first, n);
        }
        let (_, whole) = split(text, 4096).expect("a list");
        assert_eq!(whole.len(), 1, "one block, one batch");
        assert_eq!(items(r#"{"kind":"PodList","items":[]}"#), Some(vec![]));
    }

    #[test]
    fn what_json_list_refuses_is_refused() {
        for text in [
            r#"{"kind": "Pod", "items": []}"#,
            r#"{"kind": "List", "items": null}"#,
            r#"{"kind": "List", "apiVersion": 1, "items": []}"#,
            r#"{"kind": "List", "items": []} {"kind": "List", "items": []}"#,
            r#"{"kind": "List", "kind": "List", "items": []}"#,
            r#"{"kind": "List", "items": [], "items": []}"#,
            r#"{"kind": "List", "items": [1,]}"#,
            r#"{"kind": "List", "items": [1 2]}"#,
            r#"{"kind": "List", "items": [{"a": 1}"#,
            r#"{"kind": "List", "items": [], "metadata": {"a": }}"#,
            r#"{"kind": "List", "items": [], }"#,
            r#"{"kind": "List" "items": []}"#,
            r#"{"items": []}"#,
            r#"{}"#,
            r#"[]"#,
            "",
        ] {
            assert_eq!(items(text), None, "{text}");
        }
    }
}
