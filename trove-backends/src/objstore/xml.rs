//! Just enough XML reading for S3 answers: the text of simple elements, in document order. S3 answers are flat,
//! namespace-free in the element names used here, and never nest an element inside one of the same name.

/// The text of the first `<name>…</name>` element.
pub(crate) fn first(doc: &str, name: &str) -> Option<String> {
    blocks(doc, name).into_iter().next().map(unescape)
}

/// The raw inner text of every `<name>…</name>` (or `<name attr="…">…</name>`) element; `<name/>` is empty.
pub(crate) fn blocks<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // The tag name must end here (`<Key>` is not `<KeyCount>`).
        let Some(c) = after.chars().next() else { break };
        if !(c == '>' || c == '/' || c.is_whitespace()) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        if after[..gt].ends_with('/') {
            out.push("");
            rest = &after[gt + 1..];
            continue;
        }
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

/// Decodes the predefined entities and character references.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = &tail[1..semi];
        let decoded = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an element body.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_list_answers() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>2</KeyCount>
<IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken>
<Contents><Key>a&lt;1&#62;&#x26;</Key><Size>3</Size></Contents><Contents><Key>b</Key><Size>0</Size></Contents>
<Empty/></ListBucketResult>"#;
        let keys: Vec<String> = blocks(doc, "Contents")
            .into_iter()
            .filter_map(|c| first(c, "Key"))
            .collect();
        assert_eq!(keys, ["a<1>&", "b"]);
        assert_eq!(first(doc, "KeyCount").as_deref(), Some("2"));
        assert_eq!(first(doc, "NextContinuationToken").as_deref(), Some("t&1"));
        assert_eq!(blocks(doc, "Contents").len(), 2);
        assert_eq!(first(doc, "Empty").as_deref(), Some(""));
        assert_eq!(first(doc, "Missing"), None);
        assert_eq!(unescape("a & b &bogus; &#xZZ;"), "a & b &bogus; &#xZZ;");
        assert_eq!(escape("\"a<&>\""), "&quot;a&lt;&amp;&gt;&quot;");
    }
}
