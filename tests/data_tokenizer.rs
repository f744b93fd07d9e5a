//! Tokenizers: the CLIP BPE tokenizer gives open_clip's token ids (checked against
//! open_clip itself through the project's Python venv; set TUREEN_SKIP_PARITY=1 to skip
//! where no venv exists), and the byte tokenizer's framing contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use tureen_stages::tokenizer::{BpeTokenizer, ByteTokenizer, Tokenizer};

/// Strings that exercise cleaning, contractions, numbers, Unicode letters, punctuation
/// runs, HTML entities, special tokens, the empty string and truncation.
fn tricky_strings() -> Vec<String> {
    let mut strings: Vec<String> = [
        "a photo of a cat.",
        "Hello, World!!",
        "it's a dog's life",
        "I'm sure you're right, we've seen they'll go and he'd come",
        "  multiple   spaces\tand\nnewlines  ",
        "numbers 12345 and 3.14159, 1st 2nd 3rd",
        "émigré café naïve Ångström",
        "日本語のテキスト と 中文",
        "emoji 🍕🚀 test",
        "&amp; &lt;b&gt; &amp;amp; &quot;x&quot; &#39;y&#39;",
        "UPPER lower MiXeD CaSe",
        "<start_of_text> hello <end_of_text>",
        "",
        "hyphen-ated words_with_underscores and e-mail@example.com",
        "C++ and C# / slashes \\ back ... !!! ???",
        "'single' \"double\" `back`",
        "Ünïcödé ÆØÅ ß straße",
        "a red circle on the left, a BIG blue square!",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.push(
        (0..60)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" "), // far past 77 ids
    );
    strings
}

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn skip_parity() -> bool {
    std::env::var("TUREEN_SKIP_PARITY").is_ok_and(|v| v == "1")
}

/// open_clip's ids for `strings` (context 77) and the path of its vocab file.
fn open_clip_ids(strings: &[String]) -> (Vec<Vec<i64>>, PathBuf) {
    let script = r#"
import json, sys
from open_clip.tokenizer import SimpleTokenizer, default_bpe
strings = json.load(sys.stdin)
tok = SimpleTokenizer()
ids = tok(strings, context_length=77).tolist()
json.dump({"vocab": default_bpe(), "ids": ids}, sys.stdout)
"#;
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running the venv's python (set TUREEN_SKIP_PARITY=1 where there is no venv)");
    serde_json::to_writer(child.stdin.take().unwrap(), strings).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "open_clip tokenizer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = serde_json::from_value(value["ids"].clone()).unwrap();
    (ids, PathBuf::from(value["vocab"].as_str().unwrap()))
}

#[test]
fn bpe_token_ids_match_open_clip() {
    if skip_parity() {
        eprintln!("TUREEN_SKIP_PARITY=1: skipping the open_clip tokenizer comparison");
        return;
    }
    let strings = tricky_strings();
    let (expected, vocab) = open_clip_ids(&strings);
    let tokenizer = Tokenizer::Bpe(Box::new(BpeTokenizer::from_file(&vocab).unwrap()));
    assert_eq!(tokenizer.vocab_size(), 49408);
    assert_eq!((tokenizer.sot_id(), tokenizer.eot_id()), (49406, 49407));
    for (text, want) in strings.iter().zip(&expected) {
        assert_eq!(
            &tokenizer.encode(text, 77),
            want,
            "token ids differ for {text:?}"
        );
    }
}

#[test]
fn bpe_vocab_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt.gz");
    let err = BpeTokenizer::from_file(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.txt.gz"), "{err}");
}

#[test]
fn byte_tokenizer_frames_and_truncates_like_open_clip() {
    let t = Tokenizer::Byte(ByteTokenizer);
    let ids = t.encode("ab", 6);
    assert_eq!(ids, [257, 98, 99, 258, 0, 0]);
    let long = t.encode("abcdefgh", 5);
    assert_eq!(long, [257, 98, 99, 100, 258]);
    assert_eq!(t.vocab_size(), 259);
}
