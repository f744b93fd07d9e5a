//! Byte- and text-level mutations of seed inputs, from a small seeded PRNG
//! (splitmix64: reproducible runs from `--seed`).

/// splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that tend to break length and offset arithmetic, and text that breaks
/// parsers (YAML and JSON punctuation, references, substitutions, huge numbers).
const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"-1",
    b"0",
    b"1e309",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"-9223372036854775808",
    b"\"",
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b": ",
    b",",
    b"\n",
    b"\n  ",
    b"- ",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"${params.",
    b"${inputs.",
    b"${outs.",
    b"${item}",
    b"$${",
    b"[-1]",
    b"[0:]",
    b".checkpoints[3]",
    b"\xef\xbb\xbf",
    b"\xc3\x28",
    b"NaN",
    b".inf",
    b"null",
    b"~",
    b"true",
    b"---\n",
    b"\t",
    b"\\u0000",
    b"F64",
    b"BF16",
    b"U8",
    b"[18446744073709551615]",
];

/// A mutated copy of `input` (`other`: another seed for splicing).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, other);
    }
    out.truncate(1 << 20);
    out
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8]) {
    let len = out.len();
    let at = rng.below(len + 1);
    match rng.below(9) {
        0 if len > 0 => out[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => out[at.min(len - 1)] = rng.next() as u8,
        2 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            out.splice(at..at, v.iter().copied());
        }
        3 => {
            // Overwrite with an interesting value.
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let end = (at + v.len()).min(len);
            out.splice(at..end, v.iter().copied());
        }
        4 if len > 0 => {
            let n = 1 + rng.below(16.min(len - at.min(len - 1)));
            let start = at.min(len - 1);
            out.drain(start..(start + n).min(len));
        }
        5 if len > 0 => {
            // Duplicate a chunk (a line, a key, a tensor entry).
            let start = at.min(len - 1);
            let n = 1 + rng.below(64.min(len - start));
            let chunk = out[start..start + n].to_vec();
            let to = rng.below(out.len() + 1);
            out.splice(to..to, chunk);
        }
        6 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let cut = rng.below(other.len());
            out.truncate(at);
            out.extend_from_slice(&other[cut..]);
        }
        7 => replace_number(rng, out),
        _ if len > 0 => out.truncate(at),
        _ => out.push(rng.next() as u8),
    }
}

/// Replaces one ASCII number by another of an extreme size.
fn replace_number(rng: &mut Rng, out: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].is_ascii_digit() && (i == 0 || !out[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let s = starts[rng.below(starts.len())];
    let e = (s..out.len())
        .find(|&i| !out[i].is_ascii_digit())
        .unwrap_or(out.len());
    let replacement = match rng.below(5) {
        0 => "0".to_string(),
        1 => u64::MAX.to_string(),
        2 => (1u64 << (rng.below(64))).to_string(),
        3 => format!("{}", rng.next() % 1000),
        _ => "4294967296".to_string(),
    };
    out.splice(s..e, replacement.into_bytes());
}
