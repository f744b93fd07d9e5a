//! Pass 1: the file's text as one YAML mapping with positions.
//!
//! Everything about the text itself is checked here, before any meaning is given to it:
//! YAML syntax, a single document, no anchors or tags, no duplicate keys, integers that
//! fit in 64 bits, the known top-level keys and the schema version.

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{LoaderOptions, Node};
use yaml_rust2::parser::{Event, Parser};

use super::yaml::{self, pos};
use super::SCHEMA_VERSION;
use crate::diag::{Pos, Sink};

/// The keys a pipeline file may have at the top level.
pub(super) const TOP_KEYS: &[&str] = &[
    "tureen",
    "description",
    "params",
    "env",
    "executor",
    "resources",
    "slurm",
    "stages",
];

/// Parses `text` into its top-level mapping, reporting every problem of the text to
/// `sink`; `None` when there is no mapping to go on with.
pub(super) fn parse(text: &str, sink: &mut Sink) -> Option<MarkedMappingNode> {
    // A byte-order mark is valid YAML, but not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(at) = second_document(text) {
        sink.error(
            at,
            "a second YAML document: a pipeline file holds one (remove the `---`)",
        );
        return None;
    }
    // `prevent_coercion` keeps quoted scalars strings (`"12"` is not a number).
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let doc = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(doc) => doc,
        Err(e) => {
            let (p, msg) = describe_load_error(&e);
            sink.error(p, msg);
            return None;
        }
    };
    oversized_ints(&doc, sink);
    let Node::Mapping(top) = doc else {
        return None;
    };
    super::schema::check_keys(sink, &top, TOP_KEYS, "top-level key");
    match top.get_node("tureen") {
        None => sink.error(
            Pos::new(1, 1),
            format!("missing `tureen: {SCHEMA_VERSION}` (the schema version)"),
        ),
        Some(v) if yaml::to_json(v) != SCHEMA_VERSION => sink.error(
            pos(v),
            format!(
                "unsupported schema version {}: this tureen reads `tureen: {SCHEMA_VERSION}`",
                yaml::to_json(v)
            ),
        ),
        Some(_) => {}
    }
    Some(top)
}

/// Where a second document starts, if the text has one. (The YAML loader would read the
/// first and drop the rest without a word.) Document markers stand at the start of a
/// line, so only a text with a `---` or `...` line after its first content needs the
/// full parse that says for sure.
fn second_document(text: &str) -> Option<Pos> {
    let marker = |l: &str| {
        (l.starts_with("---") || l.starts_with("..."))
            && l[3..].chars().next().is_none_or(char::is_whitespace)
    };
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim().is_empty() || l.starts_with('#') || marker(l));
    if !lines.any(marker) {
        return None;
    }
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    // Syntax errors are left to the loader, which reports them with more context.
    while let Ok((event, mark)) = parser.next_token() {
        match event {
            Event::DocumentStart => {
                documents += 1;
                if documents == 2 {
                    return Some(Pos::new(mark.line(), mark.col() + 1));
                }
            }
            Event::StreamEnd => break,
            _ => {}
        }
    }
    None
}

/// Plain integers too large for 64 bits would silently become floats.
fn oversized_ints(node: &Node, sink: &mut Sink) {
    match node {
        Node::Scalar(s) if yaml::is_oversized_int(s) => sink.error(
            yaml::span_pos(s.span()),
            format!(
                "integer {} does not fit in 64 bits (quote it if it is meant as a string)",
                s.as_str()
            ),
        ),
        Node::Scalar(_) => {}
        Node::Sequence(items) => items.iter().for_each(|n| oversized_ints(n, sink)),
        Node::Mapping(map) => map.values().for_each(|n| oversized_ints(n, sink)),
    }
}

fn describe_load_error(e: &marked_yaml::LoadError) -> (Pos, String) {
    use marked_yaml::LoadError as E;
    let at = |m: &marked_yaml::Marker| Pos::new(m.line(), m.column());
    match e {
        E::TopLevelMustBeMapping(m) => (
            at(m),
            "the file must be a YAML mapping (`tureen: 1`, `stages: ...`)".into(),
        ),
        E::TopLevelMustBeSequence(m) => (at(m), "unexpected top-level sequence".into()),
        E::UnexpectedAnchor(m) => (
            at(m),
            "YAML anchors and aliases are not supported in pipeline files".into(),
        ),
        E::MappingKeyMustBeScalar(m) => (at(m), "mapping keys must be plain strings".into()),
        E::UnexpectedTag(m) => (
            at(m),
            "YAML tags (`!foo`) are not supported in pipeline files".into(),
        ),
        E::ScanError(m, se) => (at(m), format!("YAML syntax error: {}", se.info())),
        E::DuplicateKey(inner) => {
            let first = yaml::span_pos(inner.prev_key.span());
            (
                yaml::span_pos(inner.key.span()),
                format!(
                    "duplicate key `{}` (first defined at line {}, column {})",
                    inner.key.as_str(),
                    first.line,
                    first.column
                ),
            )
        }
        #[allow(unreachable_patterns)]
        other => (Pos::new(1, 1), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut sink = Sink::new(std::path::Path::new("p.yaml"));
        parse(text, &mut sink);
        match sink.finish() {
            Ok(()) => Vec::new(),
            Err(d) => d.0.into_iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_key() {
        assert_eq!(
            problems("\u{feff}tureen: 1\nstages: {}\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_second_document_is_refused_where_it_starts() {
        let p = problems("tureen: 1\nstages: {}\n---\ntureen: 1\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("p.yaml:3:1: a second YAML document"),
            "{p:?}"
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        let p = problems("tureen: 1\nparams: {n: 99999999999999999999999}\nstages: {}\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("does not fit in 64 bits"), "{p:?}");
    }
}
