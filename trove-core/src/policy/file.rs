//! The operator's policy file: a flat mapping `"rule name": "check string"`, written as YAML (the subset
//! OpenStack policy files use) or as a JSON object.
//!
//! YAML subset: one `key: value` per line, keys and values plain, `"double-quoted"` (with `\"`, `\\`, `\n`, `\t`
//! escapes) or `'single-quoted'` (`''` for a quote); `#` starts a comment at the start of a line or after a space
//! outside quotes; blank lines and a leading `---` are ignored. Anything else (indented lines, lists, nested
//! mappings, flow collections, tags, anchors, block scalars, duplicate keys) is an error naming its line.

use super::PolicyError;

/// One `rule: check` entry of a policy file, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The rule's name.
    pub name: String,
    /// Its check string.
    pub check: String,
    /// The line of the file it is on.
    pub line: usize,
}

fn at(line: usize, message: impl Into<String>) -> PolicyError {
    PolicyError::File {
        line,
        message: message.into(),
    }
}

/// Parses a policy file's text: a JSON object when it starts with `{`, else the YAML subset.
pub fn parse_policy_file(text: &str) -> Result<Vec<Entry>, PolicyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let entries = if text.trim_start().starts_with('{') {
        parse_json(text)?
    } else {
        parse_yaml(text)?
    };
    for (i, e) in entries.iter().enumerate() {
        if let Some(first) = entries[..i].iter().find(|f| f.name == e.name) {
            return Err(at(
                e.line,
                format!(
                    "rule '{}' is given twice (first on line {})",
                    e.name, first.line
                ),
            ));
        }
    }
    Ok(entries)
}

fn parse_json(text: &str) -> Result<Vec<Entry>, PolicyError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&suffix).unwrap_or(&full);
        at(
            e.line(),
            format!("not valid JSON (column {}): {what}", e.column()),
        )
    })?;
    let map = value
        .as_object()
        .ok_or_else(|| at(1, "a JSON policy file must be one object"))?;
    // serde_json keeps no positions: find each key's line by its first quoted occurrence.
    let line_of = |key: &str| -> usize {
        let quoted = serde_json::to_string(key).unwrap_or_default();
        text.find(&quoted)
            .map_or(1, |p| text[..p].matches('\n').count() + 1)
    };
    let mut out = Vec::new();
    for (name, v) in map {
        let line = line_of(name);
        let check = v.as_str().ok_or_else(|| {
            at(
                line,
                format!("the value of '{name}' must be a string (a check string)"),
            )
        })?;
        out.push(Entry {
            name: name.clone(),
            check: check.to_string(),
            line,
        });
    }
    out.sort_by_key(|e| e.line);
    Ok(out)
}

fn parse_yaml(text: &str) -> Result<Vec<Entry>, PolicyError> {
    let mut out = Vec::new();
    let mut seen_content = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "---" && !seen_content {
            seen_content = true;
            continue;
        }
        seen_content = true;
        if raw.starts_with([' ', '\t']) {
            return Err(at(
                line,
                "indented line: a policy file is a flat mapping of rule names to check strings",
            ));
        }
        let (name, rest) = scalar(raw, line, true)?;
        let quoted_key = raw.starts_with(['"', '\'']);
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| at(line, "expected 'rule name: check string'"))?;
        // After a quoted key the value may follow the ':' at once ("k":v), as in JSON.
        if !(quoted_key || rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return Err(at(line, "expected a space after ':'"));
        }
        let value_text = rest.trim_start();
        if value_text.is_empty() || value_text.starts_with('#') {
            return Err(at(
                line,
                format!(
                    "rule '{name}' has no check string (write \"\" for a rule that always passes, \"!\" for \
                     one that never does)"
                ),
            ));
        }
        let (check, tail) = scalar(value_text, line, false)?;
        let tail = tail.trim_start();
        if !(tail.is_empty() || tail.starts_with('#')) {
            return Err(at(
                line,
                format!("unexpected text after the check string of '{name}': '{tail}'"),
            ));
        }
        out.push(Entry { name, check, line });
    }
    Ok(out)
}

/// Reads one scalar at the start of `s` (a key when `key`, else a value) and answers it with what follows.
fn scalar(s: &str, line: usize, key: bool) -> Result<(String, &str), PolicyError> {
    match s.chars().next() {
        Some('"') => double_quoted(s, line),
        Some('\'') => single_quoted(s, line),
        Some(c @ ('[' | '{' | '-' | '?' | '!' | '&' | '*' | '|' | '>' | '%' | '@' | '`' | ','))
            if !(c == '-' && s.len() > 1 && !s[1..].starts_with([' ', '\t'])) =>
        {
            Err(at(
                line,
                format!(
                    "'{c}' cannot start a plain {}: put it in quotes, or use a flat mapping of rule names to \
                     check strings",
                    if key { "key" } else { "value" }
                ),
            ))
        }
        _ => Ok(plain(s, key)),
    }
}

/// A plain scalar: a key ends at the first `: ` (or `:` at the end), a value at a ` #` comment.
fn plain(s: &str, key: bool) -> (String, &str) {
    let bytes = s.as_bytes();
    let mut end = s.len();
    for (i, &b) in bytes.iter().enumerate() {
        let next_is_space = bytes.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\t');
        if key && b == b':' && next_is_space {
            end = i;
            break;
        }
        if b == b'#' && i > 0 && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            end = i;
            break;
        }
    }
    (s[..end].trim_end().to_string(), &s[end..])
}

fn double_quoted(s: &str, line: usize) -> Result<(String, &str), PolicyError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '/')) => out.push('/'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return Err(at(
                        line,
                        format!("unsupported escape '\\{other}' in a double-quoted string"),
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(at(line, "a double-quoted string is not closed on its line"))
}

fn single_quoted(s: &str, line: usize) -> Result<(String, &str), PolicyError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                out.push('\'');
            } else {
                return Ok((out, &s[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    Err(at(line, "a single-quoted string is not closed on its line"))
}
