//! A tokenizer over UTF-8 bytes that needs no vocabulary file.

/// Byte-level tokenizer. Ids: 0 = padding, `1 + b` for byte `b` (1..=256),
/// 257 = start-of-text, 258 = end-of-text (the largest id). Text is whitespace-
/// normalised (runs collapsed, ends trimmed) and lower-cased, like CLIP's `lower`
/// cleaning, so captions that differ only in spacing or case tokenize alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Start-of-text id.
    pub const SOT: i64 = 257;
    /// End-of-text id (largest).
    pub const EOT: i64 = 258;
    /// Number of ids, padding included.
    pub const VOCAB_SIZE: usize = 259;

    /// Ids of the cleaned text, without start/end markers.
    pub fn encode_body(&self, text: &str) -> Vec<i64> {
        let cleaned = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        cleaned.bytes().map(|b| i64::from(b) + 1).collect()
    }

    /// Decodes ids back to text, ignoring padding and markers (lossy on bad UTF-8).
    pub fn decode(&self, ids: &[i64]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&id| (1..=256).contains(&id))
            .map(|&id| (id - 1) as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ids_round_trip_and_normalise_whitespace() {
        let t = ByteTokenizer;
        let ids = t.encode_body("  A  big\tRED  square ");
        assert_eq!(t.decode(&ids), "a big red square");
        assert!(ids.iter().all(|&id| (1..=256).contains(&id)));
    }
}
