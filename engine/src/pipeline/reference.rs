//! Parsing references: `stage.output`, `stage.series[3]`, `stage.series[-1]`,
//! `stage.series[2:5]`, `stage.series[-3:]`; anything whose prefix is not a stage name is
//! a file path.

use std::collections::HashMap;

pub use crate::kind::Select;

/// A reference split into stage, output and selector (not yet checked against the
/// stage's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRef<'a> {
    pub stage: usize,
    pub output: &'a str,
    pub select: Select,
}

/// Splits `text` as a stage reference if some prefix before a `.` names a stage.
/// Stage names may contain dots after `foreach` expansion (`train@0.001`), so the
/// longest matching prefix wins. `Ok(None)`: not a stage reference (a file path).
pub fn parse<'a>(
    text: &'a str,
    stages: &HashMap<String, usize>,
) -> Result<Option<StageRef<'a>>, String> {
    let mut best = None;
    for (at, _) in text.match_indices('.') {
        if let Some(&i) = stages.get(&text[..at]) {
            best = Some((i, &text[at + 1..]));
        }
    }
    let Some((stage, rest)) = best else {
        return Ok(None);
    };
    let (output, select) = match rest.find('[') {
        None => (rest, Select::Whole),
        Some(open) => {
            let inner = rest[open + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("`{text}`: expected `]` at the end of the index"))?;
            (
                &rest[..open],
                parse_select(inner).map_err(|e| format!("`{text}`: {e}"))?,
            )
        }
    };
    if output.is_empty() {
        return Err(format!(
            "`{text}`: missing output name after the stage name"
        ));
    }
    Ok(Some(StageRef {
        stage,
        output,
        select,
    }))
}

fn parse_select(inner: &str) -> Result<Select, String> {
    let num = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("`{s}` is not an index"))
    };
    match inner.split_once(':') {
        Some((a, b)) => {
            let start = if a.trim().is_empty() { 0 } else { num(a)? };
            let end = if b.trim().is_empty() {
                None
            } else {
                Some(num(b)?)
            };
            // Bounds of the same sign compare without knowing the series' length.
            if end.is_some_and(|e| (e < 0) == (start < 0) && e <= start) {
                return Err(format!("empty range [{inner}]"));
            }
            Ok(Select::Range(start, end))
        }
        None => num(inner).map(Select::Index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages() -> HashMap<String, usize> {
        [("core".to_string(), 0), ("train@0.001".to_string(), 1)]
            .into_iter()
            .collect()
    }

    #[test]
    fn parses_outputs_indices_and_ranges() {
        let s = stages();
        assert_eq!(
            parse("core.checkpoints[230]", &s).unwrap(),
            Some(StageRef {
                stage: 0,
                output: "checkpoints",
                select: Select::Index(230)
            })
        );
        assert_eq!(
            parse("core.final", &s).unwrap().unwrap().select,
            Select::Whole
        );
        assert_eq!(
            parse("core.c[-1]", &s).unwrap().unwrap().select,
            Select::Index(-1)
        );
        assert_eq!(
            parse("core.c[2:]", &s).unwrap().unwrap().select,
            Select::Range(2, None)
        );
        assert_eq!(parse("train@0.001.final", &s).unwrap().unwrap().stage, 1);
        assert_eq!(parse("data/core.csv", &s).unwrap(), None);
        assert_eq!(
            parse("core.c[-3:]", &s).unwrap().unwrap().select,
            Select::Range(-3, None)
        );
        assert!(parse("core.c[x]", &s).is_err());
        assert!(parse("core.c[3:1]", &s).is_err());
    }
}
