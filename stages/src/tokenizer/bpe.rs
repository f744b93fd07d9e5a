//! open_clip's CLIP byte-pair-encoding tokenizer, read from its vocab (merges) file.
//!
//! Behaviour follows open_clip's `SimpleTokenizer` with `clean="lower"`: HTML entities
//! are unescaped twice, whitespace runs collapse to one space, text is lower-cased, then
//! split by CLIP's pre-tokenization pattern; each piece is mapped byte-wise to printable
//! characters and merged by rank. One difference: open_clip first runs `ftfy.fix_text`
//! (mojibake repair); tureen does not, so only text ftfy would change tokenizes
//! differently.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use regex::Regex;

use super::TokenizerError;

/// How many merge lines open_clip reads from the vocab file (after the header line).
const MERGES: usize = 49152 - 256 - 2;
const SOT_TOKEN: &str = "<start_of_text>";
const EOT_TOKEN: &str = "<end_of_text>";

/// CLIP's BPE tokenizer. Vocabulary: 256 byte symbols, the same with `</w>`, one id per
/// merge, then start-of-text and end-of-text (49,408 ids with the standard file).
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    encoder: HashMap<String, i64>,
    /// `(left id, right id) -> (rank, merged id)`: merging works on ids, not strings.
    merges: HashMap<(i64, i64), (usize, i64)>,
    /// Id of each byte's symbol; `+ 256` is the same symbol with `</w>`.
    byte_ids: [i64; 256],
    pattern: Regex,
    sot: i64,
    eot: i64,
}

/// The reversible byte -> printable character table of GPT-2/CLIP BPE: printable
/// Latin-1 bytes map to themselves, the others to code points from U+0100 upwards.
/// Returned in vocabulary order: `(byte, char)` pairs.
fn byte_table() -> Vec<(u8, char)> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table: Vec<(u8, char)> = (0u32..256)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).unwrap()))
        .collect();
    let mut next = 256u32;
    for b in 0u32..256 {
        if !printable(b) {
            table.push((b as u8, char::from_u32(next).unwrap()));
            next += 1;
        }
    }
    table
}

impl BpeTokenizer {
    /// Reads a vocab file: gzip-compressed (as shipped by open_clip) or plain text. The
    /// first line is a header; the next 48,894 lines are merges `a b`, in rank order.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let read_err = |source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        };
        let raw = std::fs::read(path).map_err(read_err)?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut out)
                .map_err(read_err)?;
            out
        } else {
            String::from_utf8(raw)
                .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
        };
        Self::from_merges_text(&text, path)
    }

    fn from_merges_text(text: &str, path: &Path) -> Result<Self, TokenizerError> {
        let mut merges = Vec::with_capacity(MERGES);
        for (index, line) in text.split('\n').enumerate().skip(1).take(MERGES) {
            if line.is_empty() {
                // Trailing newline(s) of a shorter vocab file.
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
                _ => {
                    return Err(TokenizerError::Vocab {
                        path: path.to_path_buf(),
                        line: index + 1,
                        message: format!("expected a merge `a b`, found {line:?}"),
                    })
                }
            }
        }
        if merges.is_empty() {
            return Err(TokenizerError::Vocab {
                path: path.to_path_buf(),
                line: 1,
                message: "no merges".into(),
            });
        }
        let table = byte_table();
        let mut vocab: Vec<String> = table.iter().map(|&(_, c)| c.to_string()).collect();
        vocab.extend(table.iter().map(|&(_, c)| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(SOT_TOKEN.into());
        vocab.push(EOT_TOKEN.into());
        // Later duplicates win, as in Python's dict(zip(vocab, range)).
        let encoder: HashMap<String, i64> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as i64))
            .collect();
        let id = |symbol: &str, line: usize| {
            encoder
                .get(symbol)
                .copied()
                .ok_or_else(|| TokenizerError::Vocab {
                    path: path.to_path_buf(),
                    line,
                    message: format!(
                        "merge part {symbol:?} is neither a byte symbol nor an earlier merge"
                    ),
                })
        };
        let mut merge_ids = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let pair = (id(a, rank + 2)?, id(b, rank + 2)?);
            // A pair listed twice gets its later rank, as in open_clip's
            // `dict(zip(merges, range(len(merges))))`.
            merge_ids.insert(pair, (rank, encoder[&format!("{a}{b}")]));
        }
        let mut byte_ids = [0i64; 256];
        for (b, c) in &table {
            byte_ids[*b as usize] = encoder[&c.to_string()];
        }
        let pattern = Regex::new(&format!(
            r"(?i){SOT_TOKEN}|{EOT_TOKEN}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"
        ))
        .expect("CLIP's pre-tokenization pattern is valid");
        let sot = encoder[SOT_TOKEN];
        let eot = encoder[EOT_TOKEN];
        Ok(Self {
            encoder,
            merges: merge_ids,
            byte_ids,
            pattern,
            sot,
            eot,
        })
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// Start-of-text id.
    pub fn sot_id(&self) -> i64 {
        self.sot
    }

    /// End-of-text id (the largest).
    pub fn eot_id(&self) -> i64 {
        self.eot
    }

    /// Ids of the cleaned text, without start/end markers.
    pub fn encode_body(&self, text: &str) -> Vec<i64> {
        let cleaned = clean_lower(text);
        let mut ids = Vec::new();
        for piece in self.pattern.find_iter(&cleaned) {
            let piece = piece.as_str();
            if piece == SOT_TOKEN || piece == EOT_TOKEN {
                ids.push(self.encoder[piece]);
                continue;
            }
            let mut word: Vec<i64> = piece.bytes().map(|b| self.byte_ids[b as usize]).collect();
            if let Some(last) = word.last_mut() {
                *last += 256; // the `</w>` variant of the last symbol
            }
            ids.extend(self.merge(word));
        }
        ids
    }

    /// Applies merges to one pre-token (symbol ids, the last one with `</w>`), lowest
    /// rank first, every occurrence of the chosen pair left to right.
    fn merge(&self, mut word: Vec<i64>) -> Vec<i64> {
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, merged)| (rank, w[0], w[1], merged))
                })
                .min_by_key(|&(rank, ..)| rank);
            let Some((_, first, second, merged)) = best else {
                break;
            };
            let mut out = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    out.push(merged);
                    i += 2;
                } else {
                    out.push(word[i]);
                    i += 1;
                }
            }
            word = out;
        }
        word
    }
}

/// open_clip's `lower` cleaning, minus ftfy: unescape HTML twice, trim, collapse
/// whitespace, lower-case.
fn clean_lower(text: &str) -> String {
    let once = html_escape::decode_html_entities(text);
    let twice = html_escape::decode_html_entities(&once);
    twice
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_covers_every_byte_once() {
        let table = byte_table();
        assert_eq!(table.len(), 256);
        let mut chars: Vec<char> = table.iter().map(|&(_, c)| c).collect();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert_eq!(table[0], (b'!', '!'));
    }

    #[test]
    fn merges_apply_by_rank_and_end_of_word_marker() {
        let text = "#version\nl o\nlo w</w>\n";
        let t = BpeTokenizer::from_merges_text(text, Path::new("mem")).unwrap();
        assert_eq!(t.vocab_size(), 512 + 2 + 2);
        let ids = t.encode_body("low lol");
        // "low" -> ["lo", "w</w>"] -> ["low</w>"]; "lol" -> ["lo", "l</w>"]
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], t.encoder["low</w>"]);
        assert_eq!(t.encoder["low</w>"], 513);
        assert_eq!(ids[1], t.encoder["lo"]);
        assert_eq!(ids[2], t.encoder["l</w>"]);
        assert_eq!(t.eot_id() as usize, t.vocab_size() - 1);
    }

    #[test]
    fn malformed_merge_line_is_reported_with_its_line_number() {
        let err = BpeTokenizer::from_merges_text("#v\na b\nabc\n", Path::new("v.txt")).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
