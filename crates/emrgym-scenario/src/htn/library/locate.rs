//! Where a JSON pointer is in a file's text, for messages that name a line.

/// The 1-based line of a JSON pointer in `text` (found by scanning for each key in turn).
pub fn locate(text: &str, pointer: &str) -> Option<usize> {
    let mut pos = 0usize;
    let mut found = false;
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let needle = format!("\"{}\"", seg.replace("~1", "/").replace("~0", "~"));
        match text[pos..].find(&needle) {
            Some(i) => {
                pos += i + needle.len();
                found = true;
            }
            None => break,
        }
    }
    if !found {
        return None;
    }
    Some(text[..pos].matches('\n').count() + 1)
}
