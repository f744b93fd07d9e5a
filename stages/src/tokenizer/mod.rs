//! Text tokenizers for the CLIP text tower.
//!
//! Two tokenizers share one contract ([`Tokenizer::encode`]): a sequence starts with a
//! start-of-text id, ends with an end-of-text id, and is zero-padded to the context
//! length. The end-of-text id is the largest id of the vocabulary because the text
//! tower pools its output at the argmax token of each row (as open_clip does).
//!
//! - [`ByteTokenizer`]: UTF-8 bytes, no files needed; the default for small pipelines.
//! - [`BpeTokenizer`]: open_clip's CLIP BPE (`bpe_simple_vocab_16e6.txt.gz`), loaded
//!   from a vocab file path, with the same cleaning, pre-tokenization and truncation.

mod bpe;
mod byte;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bpe::BpeTokenizer;
pub use byte::ByteTokenizer;

/// Errors while loading a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The vocab file cannot be read (or gunzipped).
    #[error("cannot read BPE vocab {path}: {source}")]
    Read {
        /// The vocab file.
        path: PathBuf,
        /// The I/O or decompression error.
        #[source]
        source: std::io::Error,
    },
    /// The vocab file's contents are not a CLIP BPE merges list.
    #[error("BPE vocab {path}, line {line}: {message}")]
    Vocab {
        /// The vocab file.
        path: PathBuf,
        /// 1-based line of the (decompressed) file.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Which tokenizer a pipeline uses. In YAML: `tokenizer: byte`, `{kind: byte}`, or
/// `{kind: bpe, vocab: path/to/bpe_simple_vocab_16e6.txt.gz}` (a relative path is
/// resolved by the stage against its workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "SpecRepr", into = "SpecRepr")]
pub enum TokenizerSpec {
    /// [`ByteTokenizer`]: vocab size 259.
    #[default]
    Byte,
    /// [`BpeTokenizer`] read from this vocab file (plain text or gzip).
    Bpe(PathBuf),
}

/// The YAML shapes of [`TokenizerSpec`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SpecRepr {
    Name(String),
    Table {
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vocab: Option<PathBuf>,
    },
}

impl TryFrom<SpecRepr> for TokenizerSpec {
    type Error = String;
    fn try_from(repr: SpecRepr) -> Result<Self, String> {
        match repr {
            SpecRepr::Name(name) if name == "byte" => Ok(TokenizerSpec::Byte),
            SpecRepr::Name(name) if name == "bpe" => {
                Err("tokenizer `bpe` needs a vocab file: {kind: bpe, vocab: PATH}".into())
            }
            SpecRepr::Name(name) => Err(format!(
                "unknown tokenizer {name:?}; expected `byte` or {{kind: bpe, vocab: PATH}}"
            )),
            SpecRepr::Table { kind, vocab } => match (kind.as_str(), vocab) {
                ("byte", None) => Ok(TokenizerSpec::Byte),
                ("byte", Some(_)) => Err("the byte tokenizer takes no `vocab`".into()),
                ("bpe", Some(path)) => Ok(TokenizerSpec::Bpe(path)),
                ("bpe", None) => Err("tokenizer kind `bpe` needs `vocab: PATH`".into()),
                (other, _) => Err(format!(
                    "unknown tokenizer kind {other:?}; expected `byte` or `bpe`"
                )),
            },
        }
    }
}

impl From<TokenizerSpec> for SpecRepr {
    fn from(spec: TokenizerSpec) -> Self {
        match spec {
            TokenizerSpec::Byte => SpecRepr::Name("byte".into()),
            TokenizerSpec::Bpe(path) => SpecRepr::Table {
                kind: "bpe".into(),
                vocab: Some(path),
            },
        }
    }
}

impl TokenizerSpec {
    /// Builds the tokenizer; relative BPE paths are taken relative to `base_dir`.
    pub fn build(&self, base_dir: &Path) -> Result<Tokenizer, TokenizerError> {
        Ok(match self {
            TokenizerSpec::Byte => Tokenizer::Byte(ByteTokenizer),
            TokenizerSpec::Bpe(path) => {
                Tokenizer::Bpe(Box::new(BpeTokenizer::from_file(&base_dir.join(path))?))
            }
        })
    }
}

/// A tokenizer of either kind. Cheap to share across threads (`Arc<Tokenizer>`).
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// UTF-8 bytes (vocab 259).
    Byte(ByteTokenizer),
    /// open_clip's CLIP BPE.
    Bpe(Box<BpeTokenizer>),
}

impl Tokenizer {
    /// Ids of `text` between start-of-text and end-of-text, truncated to
    /// `context_length` with end-of-text kept as the last id (open_clip's rule), then
    /// zero-padded to exactly `context_length` ids. `context_length` must be >= 2.
    pub fn encode(&self, text: &str, context_length: usize) -> Vec<i64> {
        let body = match self {
            Tokenizer::Byte(t) => t.encode_body(text),
            Tokenizer::Bpe(t) => t.encode_body(text),
        };
        frame(body, self.sot_id(), self.eot_id(), context_length)
    }

    /// Number of ids (the text tower's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Byte(_) => ByteTokenizer::VOCAB_SIZE,
            Tokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    /// The start-of-text id.
    pub fn sot_id(&self) -> i64 {
        match self {
            Tokenizer::Byte(_) => ByteTokenizer::SOT,
            Tokenizer::Bpe(t) => t.sot_id(),
        }
    }

    /// The end-of-text id: the largest id, where the text tower pools.
    pub fn eot_id(&self) -> i64 {
        match self {
            Tokenizer::Byte(_) => ByteTokenizer::EOT,
            Tokenizer::Bpe(t) => t.eot_id(),
        }
    }
}

/// `[sot] + body + [eot]`, cut to `context_length` keeping eot last, zero-padded.
fn frame(body: Vec<i64>, sot: i64, eot: i64, context_length: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(context_length.max(body.len() + 2));
    ids.push(sot);
    ids.extend(body);
    ids.push(eot);
    if ids.len() > context_length {
        ids.truncate(context_length);
        if let Some(last) = ids.last_mut() {
            *last = eot;
        }
    }
    ids.resize(context_length, 0);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_from_the_pipeline_shapes() {
        let parse = |v: serde_json::Value| serde_json::from_value::<TokenizerSpec>(v);
        assert_eq!(
            parse(serde_json::json!("byte")).unwrap(),
            TokenizerSpec::Byte
        );
        assert_eq!(
            parse(serde_json::json!({"kind": "byte"})).unwrap(),
            TokenizerSpec::Byte
        );
        assert_eq!(
            parse(serde_json::json!({"kind": "bpe", "vocab": "v.txt.gz"})).unwrap(),
            TokenizerSpec::Bpe("v.txt.gz".into())
        );
        assert!(parse(serde_json::json!({"kind": "bpe"}))
            .unwrap_err()
            .to_string()
            .contains("vocab"));
        assert!(parse(serde_json::json!("wordpiece"))
            .unwrap_err()
            .to_string()
            .contains("unknown tokenizer"));
    }

    #[test]
    fn frame_truncates_keeping_end_of_text_last() {
        assert_eq!(frame(vec![5, 6, 7, 8], 1, 9, 4), vec![1, 5, 6, 9]);
        assert_eq!(frame(vec![5], 1, 9, 5), vec![1, 5, 9, 0, 0]);
    }

    #[test]
    fn byte_tokenizer_end_of_text_is_the_largest_id() {
        let t = Tokenizer::Byte(ByteTokenizer);
        let ids = t.encode("a red circle \u{ff}", 32);
        let max = *ids.iter().max().unwrap();
        assert_eq!(max, t.eot_id());
        assert_eq!(t.eot_id() as usize, t.vocab_size() - 1);
        assert_eq!(ids[0], t.sot_id());
    }
}
