//! Redaction of secret values from the command's output, before records are numbered.
//!
//! Each value the sidecar injected (named by `RUNVOY_SECRET_KEYS`) is searched in every output
//! record in its plain form, its base64 forms (standard with and without padding, URL-safe)
//! and its URL-encoded forms (`%XX` upper and lower case, `+` for spaces), and each line of a
//! multi-line value on its own. A match becomes [`MASK`]. A value split over two records (a
//! newline printed inside it, or a line cut into 64 KiB chunks) is caught too: the sink holds
//! back the last record of each stream until the next one of that stream arrives or the
//! output is flushed (whenever the pipe is momentarily empty), and checks the pair.
//!
//! Values shorter than [`MIN_LEN`] bytes are not redacted: masking every `a` or `42` in the
//! output would destroy it and protect nothing (a 3-byte value is guessed faster than read).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a redacted value becomes.
pub const MASK: &[u8] = b"***";
/// Shortest value (and shortest line of a multi-line value) that is redacted.
pub const MIN_LEN: usize = 4;

/// The patterns of the injected values.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    patterns: Vec<Vec<u8>>,
    longest: usize,
}

fn url_encode(v: &[u8], upper: bool, plus: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]]);
        }
    }
    out
}

impl Redactor {
    /// Patterns for `values` (short ones are skipped, see [`MIN_LEN`]).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for v in values {
            if v.len() < MIN_LEN {
                continue;
            }
            let mut forms = vec![
                v.to_vec(),
                STANDARD.encode(v).into_bytes(),
                STANDARD_NO_PAD.encode(v).into_bytes(),
                URL_SAFE.encode(v).into_bytes(),
                URL_SAFE_NO_PAD.encode(v).into_bytes(),
                url_encode(v, true, false),
                url_encode(v, false, false),
                url_encode(v, true, true),
            ];
            // Output is split into lines: each line of a multi-line value (a private key)
            // is a pattern of its own.
            for line in v.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() >= MIN_LEN.max(8) {
                    forms.push(line.to_vec());
                }
            }
            patterns.extend(forms);
        }
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        patterns.dedup();
        let longest = patterns.first().map_or(0, Vec::len);
        Redactor { patterns, longest }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Byte ranges of `data` covered by a pattern, sorted and merged.
    pub fn ranges(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for p in &self.patterns {
            let mut from = 0;
            while let Some(i) = find(&data[from..], p) {
                found.push((from + i, from + i + p.len()));
                from += i + 1;
            }
        }
        merge(found)
    }

    /// For a record `a` followed by `b` (`newline` when `a` ended a line): how many bytes at
    /// the end of `a` and at the start of `b` belong to a value split between them (0, 0 when
    /// none).
    pub fn across(&self, a: &[u8], newline: bool, b: &[u8]) -> (usize, usize) {
        if self.is_empty() {
            return (0, 0);
        }
        let keep = self.longest.saturating_sub(1);
        let a_tail = &a[a.len().saturating_sub(keep)..];
        let b_head = &b[..b.len().min(keep)];
        let mut best = (0, 0);
        for sep in [&b""[..], b"\n"]
            .into_iter()
            .filter(|s| newline || s.is_empty())
        {
            let joined = [a_tail, sep, b_head].concat();
            let edge = a_tail.len();
            for (s, e) in self.ranges(&joined) {
                // Only matches that use bytes of both records.
                if s < edge && e > edge + sep.len() {
                    best.0 = best.0.max(edge - s);
                    best.1 = best.1.max(e - edge - sep.len());
                }
            }
        }
        best
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(j) => {
                i += j;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn merge(mut r: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    r.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `data` with `ranges` (sorted, disjoint) replaced by [`MASK`].
pub fn mask(data: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    for &(s, e) in ranges {
        out.extend_from_slice(&data[at..s]);
        out.extend_from_slice(MASK);
        at = e;
    }
    out.extend_from_slice(&data[at..]);
    out
}

/// Merges extra ranges into sorted, disjoint ones.
pub fn with(mut ranges: Vec<(usize, usize)>, extra: &[(usize, usize)]) -> Vec<(usize, usize)> {
    ranges.extend(extra.iter().copied().filter(|(s, e)| s < e));
    merge(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(values: &[&str]) -> Redactor {
        Redactor::new(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn every_form_is_found() {
        let v = "s3cr3t value/+?";
        let red = r(&[v]);
        for form in [
            v.to_owned(),
            STANDARD.encode(v),
            URL_SAFE_NO_PAD.encode(v),
            url_encode(v.as_bytes(), true, false)
                .into_iter()
                .map(char::from)
                .collect(),
            "s3cr3t+value%2F%2B%3F".to_owned(),
        ] {
            let line = format!("before {form} after");
            let ranges = red.ranges(line.as_bytes());
            assert_eq!(ranges.len(), 1, "{form}");
            assert_eq!(
                mask(line.as_bytes(), &ranges),
                b"before *** after",
                "{form}"
            );
        }
    }

    #[test]
    fn short_values_are_left_alone() {
        assert!(r(&["abc", ""]).is_empty());
        assert!(!r(&["abcd"]).is_empty());
    }

    #[test]
    fn split_values_are_found_across_records() {
        let red = r(&["0123456789"]);
        assert_eq!(red.across(b"x 01234", true, b"56789 y"), (5, 5));
        assert_eq!(red.across(b"x 01234", false, b"56789 y"), (5, 5));
        assert_eq!(red.across(b"x 01234", true, b"nothing"), (0, 0));
        // A value with a newline inside, printed as is.
        let ml = r(&["line-one-x\nline-two-y"]);
        assert!(ml.across(b"line-one-x", true, b"line-two-y").0 > 0);
    }

    #[test]
    fn overlapping_matches_are_one_mask() {
        let red = r(&["abcdabcd"]);
        let line = b"abcdabcdabcd";
        let ranges = red.ranges(line);
        assert_eq!(ranges, vec![(0, 12)]);
        assert_eq!(mask(line, &ranges), b"***");
    }
}
