//! The workspace `.env` file the sidecar writes and the runner reads (then deletes).
//!
//! One `KEY=VALUE` line per variable. A value is written as it is unless it holds a newline or
//! a carriage return, or starts with `"`: then it is double-quoted, with `\\`, `\"`, `\n` and
//! `\r` escaped, so multi-line values (private keys, certificates) survive on one line and the
//! reader never has to guess. Blank lines and `#` comments are skipped.

/// Encodes variables as `.env` lines (see the module docs).
pub fn encode(vars: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        if v.contains(['\n', '\r']) || v.starts_with('"') {
            out.push(b'"');
            for c in v.bytes() {
                match c {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    c => out.push(c),
                }
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// One variable as bytes: name and value.
pub type Var = (Vec<u8>, Vec<u8>);

/// Parses `.env` bytes written by [`encode`]. Errors name the line, never the value (it may be
/// a secret).
pub fn parse(data: &[u8]) -> Result<Vec<Var>, String> {
    let mut vars = Vec::new();
    for (n, line) in data.split(|&c| c == b'\n').enumerate() {
        let at = n + 1;
        let trimmed = line.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let eq = line
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| format!("line {at}: expected KEY=VALUE"))?;
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        if !is_env_name(key) {
            return Err(format!("line {at}: invalid variable name"));
        }
        let value = match value.strip_prefix(b"\"") {
            Some(quoted) => {
                unquote(quoted).ok_or_else(|| format!("line {at}: bad quoted value"))?
            }
            None => value.to_vec(),
        };
        vars.push((key.to_vec(), value));
    }
    Ok(vars)
}

/// The value of a quoted field after its opening quote; `None` unless it ends with the closing
/// quote and holds only known escapes.
fn unquote(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&c) = it.next() {
        match c {
            b'"' => return it.next().is_none().then_some(out),
            b'\\' => out.push(match it.next()? {
                b'\\' => b'\\',
                b'"' => b'"',
                b'n' => b'\n',
                b'r' => b'\r',
                _ => return None,
            }),
            c => out.push(c),
        }
    }
    None
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(key: &[u8]) -> bool {
    match key.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_including_newlines_and_quotes() {
        let key = "-----BEGIN KEY-----\nabc\\def\n-----END KEY-----\n";
        let vars: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "x=y 'z' $HOME"),
            ("PEM", key),
            ("Q", "\"quoted\""),
            ("CR", "a\r\nb"),
            ("E", ""),
            ("T", "tail\""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let bytes = encode(&vars);
        assert_eq!(bytes.iter().filter(|&&c| c == b'\n').count(), vars.len());
        let back: Vec<(String, String)> = parse(&bytes)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(back, vars);
    }

    #[test]
    fn literal_lines_and_errors() {
        let v = parse(b"# comment\n\nA=1\nB=x=y\n  # indented\nC=$HOME 'q'\nD=\n").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[1], (b"B".to_vec(), b"x=y".to_vec()));
        assert!(parse(b"NOEQUALS\n").is_err());
        assert!(parse(b"1BAD=x\n").is_err());
        assert!(parse(b"A=\"open\n").is_err());
        assert!(parse(b"A=\"x\"trailing\n").is_err());
        assert!(parse(b"A=\"bad \\q\"\n").is_err());
    }
}
