//! `${...}` templates in pipeline strings.
//!
//! The engine substitutes `${params.x}`, `${item}`, `${item.field}` and `${key}` when it
//! loads a pipeline; `${inputs.y}` and `${outs.z}` are left in place and filled in by
//! the kind at run time, when paths are known (they must not be part of a cache key,
//! since store paths differ between machines). `$${` writes a literal `${`.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text between templates, copied as is (never empty).
    Text(&'a str),
    /// A `$${` escape: a literal `${`.
    Escape,
    /// The expression between `${` and `}`, trimmed.
    Var(&'a str),
}

/// Splits `s` into text and `${var}` pieces. Errors on an unclosed `${`.
pub fn parse(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            // `$${` escapes: keep one `$` and the brace as text.
            pieces.push(Piece::Text(&rest[..at - 1]));
            pieces.push(Piece::Escape);
            rest = &rest[at + 2..];
            continue;
        }
        pieces.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
        let var = after[..end].trim();
        if var.is_empty() {
            return Err(format!("empty `${{}}` in {s:?}"));
        }
        pieces.push(Piece::Var(var));
        rest = &after[end + 1..];
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| !matches!(p, Piece::Text("")));
    Ok(pieces)
}

/// Replaces every `${var}` for which `lookup` returns `Ok(Some(text))`; a `None` keeps
/// `${var}` as written (for a later stage of substitution). The first error wins.
/// Escapes become a literal `${`: this is the final rendering.
pub fn render(
    s: &str,
    lookup: impl FnMut(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    render_with(s, "${", lookup)
}

/// Like [`render`], but keeps escapes as `$${` so that a later [`render`] still sees them
/// as literal text (the engine's load-time pass).
pub fn render_partial(
    s: &str,
    lookup: impl FnMut(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    render_with(s, "$${", lookup)
}

fn render_with(
    s: &str,
    escape: &str,
    mut lookup: impl FnMut(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    for piece in parse(s)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Escape => out.push_str(escape),
            Piece::Var(v) => match lookup(v)? {
                Some(text) => out.push_str(&text),
                None => {
                    out.push_str("${");
                    out.push_str(v);
                    out.push('}');
                }
            },
        }
    }
    Ok(out)
}

/// Whether `s` still holds a `${...}` (after escapes are taken into account).
pub fn has_vars(s: &str) -> bool {
    parse(s)
        .map(|p| p.iter().any(|p| matches!(p, Piece::Var(_))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_vars_and_keeps_unknown_ones() {
        let out = render("run ${params.lr} on ${inputs.data} $${HOME}", |v| {
            Ok((v == "params.lr").then(|| "0.1".to_string()))
        })
        .unwrap();
        assert_eq!(out, "run 0.1 on ${inputs.data} ${HOME}");
    }

    #[test]
    fn partial_rendering_keeps_escapes_for_the_final_pass() {
        let partial = render_partial("$${X} ${a}", |_| Ok(None)).unwrap();
        assert_eq!(partial, "$${X} ${a}");
        assert_eq!(
            render(&partial, |_| Ok(Some("1".into()))).unwrap(),
            "${X} 1"
        );
    }

    #[test]
    fn unclosed_template_is_an_error() {
        assert!(parse("echo ${params.x").is_err());
    }
}
