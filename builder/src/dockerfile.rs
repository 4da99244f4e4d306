//! What a Dockerfile asks the engine to resolve as an image: the `FROM` images, `COPY --from`
//! and `RUN --mount=from=` sources, after `ARG` substitution the way the engine does it
//! (declared ARGs, their defaults, overridden by the app's build arguments). Pure.

use std::collections::{BTreeMap, HashMap};

/// Where a Dockerfile names an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    From,
    CopyFrom,
    MountFrom,
}

/// An image the engine would resolve: not `scratch`, not an earlier stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    pub instruction: Instruction,
    /// The reference after ARG substitution.
    pub reference: String,
}

impl std::fmt::Display for ImageUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.instruction {
            Instruction::From => "FROM ",
            Instruction::CopyFrom => "COPY --from=",
            Instruction::MountFrom => "RUN --mount=from=",
        };
        write!(f, "line {}: {what}{}", self.line, self.reference)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Dockerfile line {line}: {message}")]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

/// The images `dockerfile` makes the engine resolve, in order.
pub fn image_uses(
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<Vec<ImageUse>, DockerfileError> {
    let mut uses = Vec::new();
    // ARGs declared before the first FROM: the only ones FROM sees.
    let mut meta: HashMap<String, String> = HashMap::new();
    // The current stage's ARGs.
    let mut scope: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut in_stage = false;
    for (line, text) in instructions(dockerfile) {
        let error = |message: String| DockerfileError { line, message };
        let (keyword, rest) = split_word(&text);
        let keyword = keyword.to_ascii_uppercase();
        let (keyword, rest) = if keyword == "ONBUILD" {
            // Runs in the builds that use this image; checked here all the same.
            let (inner, rest) = split_word(rest);
            (inner.to_ascii_uppercase(), rest)
        } else {
            (keyword, rest)
        };
        match keyword.as_str() {
            "ARG" => {
                let vars = if in_stage { &scope } else { &meta };
                let mut declared = Vec::new();
                for word in words(rest) {
                    let (name, default) = match word.split_once('=') {
                        Some((name, value)) => {
                            (name.to_owned(), Some(expand(value, vars).map_err(error)?))
                        }
                        None => (word.clone(), None),
                    };
                    declared.push((name, default));
                }
                for (name, default) in declared {
                    let value = match (build_args.get(&name), &default) {
                        (Some(value), _) => Some(value.clone()),
                        (None, Some(default)) => Some(default.clone()),
                        // `ARG X` in a stage takes the value X had before the first FROM.
                        (None, None) if in_stage => meta.get(&name).cloned(),
                        (None, None) => None,
                    };
                    let vars = if in_stage { &mut scope } else { &mut meta };
                    match value {
                        Some(value) => vars.insert(name, value),
                        None => vars.remove(&name),
                    };
                }
            }
            "FROM" => {
                let words: Vec<String> = words(rest)
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let Some(written) = words.first() else {
                    return Err(error("FROM names no image".into()));
                };
                let reference = expand(written, &meta).map_err(error)?;
                let lower = reference.to_ascii_lowercase();
                let is_stage = stages.iter().any(|s| !s.is_empty() && *s == lower);
                if reference != "scratch" && !is_stage {
                    uses.push(ImageUse {
                        line,
                        instruction: Instruction::From,
                        reference,
                    });
                }
                // Unnamed stages count too: `COPY --from=<index>`.
                let name = match words.as_slice() {
                    [_, as_word, name] if as_word.eq_ignore_ascii_case("AS") => {
                        name.to_ascii_lowercase()
                    }
                    _ => String::new(),
                };
                stages.push(name);
                in_stage = true;
                scope.clear();
            }
            "COPY" | "ADD" | "RUN" => {
                for flag in words(rest).iter().take_while(|w| w.starts_with("--")) {
                    let Some((name, value)) = flag[2..].split_once('=') else {
                        continue;
                    };
                    let (instruction, written) = match name.to_ascii_lowercase().as_str() {
                        "from" if keyword != "RUN" => (Instruction::CopyFrom, value.to_owned()),
                        "mount" if keyword == "RUN" => {
                            let from = value.split(',').find_map(|field| {
                                let (key, value) = field.split_once('=')?;
                                key.trim().eq_ignore_ascii_case("from").then_some(value)
                            });
                            match from {
                                Some(from) => (Instruction::MountFrom, from.to_owned()),
                                None => continue,
                            }
                        }
                        _ => continue,
                    };
                    let reference = expand(&written, &scope).map_err(error)?;
                    if !is_stage_reference(&reference, &stages, instruction) {
                        uses.push(ImageUse {
                            line,
                            instruction,
                            reference,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(uses)
}

/// An earlier stage, by name, or for `--from` by index.
fn is_stage_reference(reference: &str, stages: &[String], instruction: Instruction) -> bool {
    let lower = reference.to_ascii_lowercase();
    if stages.iter().any(|s| !s.is_empty() && *s == lower) {
        return true;
    }
    // The engine takes a number as a stage index and fails on one out of range; a number too
    // big to be an index it would look up as an image.
    instruction != Instruction::From
        && reference
            .parse::<i64>()
            .is_ok_and(|i| i >= 0 && (i as usize) < stages.len())
}

/// The logical instructions of a Dockerfile with the line each starts on: parser directives,
/// comments and blank lines dropped, continued lines joined (`\`, or the `# escape=` character).
fn instructions(dockerfile: &str) -> Vec<(usize, String)> {
    let mut escape = '\\';
    let mut directives = true;
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in dockerfile.lines().enumerate() {
        let line = raw.trim();
        if directives {
            if let Some(directive) = line.strip_prefix('#') {
                if let Some((key, value)) = directive.split_once('=')
                    && key.trim().eq_ignore_ascii_case("escape")
                {
                    escape = if value.trim() == "`" { '`' } else { '\\' };
                }
                continue;
            }
            directives = false;
        }
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (_, text) = current.get_or_insert_with(|| (index + 1, String::new()));
        match line.strip_suffix(escape) {
            Some(head) => {
                text.push_str(head);
                text.push(' ');
            }
            None => {
                text.push_str(line);
                out.extend(current.take());
            }
        }
    }
    out.extend(current.take());
    out
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], text[end..].trim_start()),
        None => (text, ""),
    }
}

/// Whitespace-separated words; quotes keep spaces inside a word (and stay in it).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The engine's substitution of one word: `$X`, `${X}`, `${X:-default}`, `${X:+alternative}`
/// (and without the colon), quotes removed, `'…'` taken literally, `\$` a dollar sign.
fn expand(word: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\'' if !in_double => {
                while i < chars.len() && chars[i] != '\'' {
                    out.push(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => in_double = !in_double,
            '\\' if i < chars.len() => {
                out.push(chars[i]);
                i += 1;
            }
            '$' if i < chars.len() && chars[i] == '{' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or_else(|| format!("{word:?} has a `${{` without its `}}`"))?;
                let inner: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                out.push_str(&expand_braced(&inner, vars, word)?);
            }
            '$' if i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                out.push_str(vars.get(&name).map_or("", String::as_str));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn expand_braced(
    inner: &str,
    vars: &HashMap<String, String>,
    word: &str,
) -> Result<String, String> {
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, modifier) = inner.split_at(name_end);
    let value = vars.get(name);
    let set_and_non_empty = value.is_some_and(|v| !v.is_empty());
    let expand_word = |w: &str| expand(w, vars);
    match modifier {
        "" => Ok(value.cloned().unwrap_or_default()),
        m if m.starts_with(":-") => match set_and_non_empty {
            true => Ok(value.cloned().unwrap_or_default()),
            false => expand_word(&m[2..]),
        },
        m if m.starts_with(":+") => match set_and_non_empty {
            true => expand_word(&m[2..]),
            false => Ok(String::new()),
        },
        m if m.starts_with('-') => match value {
            Some(value) => Ok(value.clone()),
            None => expand_word(&m[1..]),
        },
        m if m.starts_with('+') => match value {
            Some(_) => expand_word(&m[1..]),
            None => Ok(String::new()),
        },
        _ => Err(format!(
            "{word:?} uses a substitution buildgrid cannot work out before the build: write \
             $NAME, ${{NAME}}, ${{NAME:-default}} or ${{NAME:+alternative}}"
        )),
    }
}

/// The base images of a Dockerfile for the image's details: `FROM` images with ARGs
/// substituted, each once.
pub fn base_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut bases: Vec<String> = Vec::new();
    for used in image_uses(dockerfile, build_args).unwrap_or_default() {
        if used.instruction == Instruction::From && !bases.contains(&used.reference) {
            bases.push(used.reference);
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected`: one `<line> <instruction> <reference>` per image the engine would resolve.
    #[track_caller]
    fn check(dockerfile: &str, build_args: &[(&str, &str)], expected: &[&str]) {
        let args = build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let uses: Vec<String> = image_uses(dockerfile, &args)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(uses, expected, "{dockerfile}");
    }

    #[test]
    fn from_copy_and_mount_sources() {
        check("FROM scratch\nCOPY x /x\n", &[], &[]);
        check("FROM busybox\n", &[], &["line 1: FROM busybox"]);
        check(
            "FROM --platform=linux/amd64 golang:1.22 AS build\nRUN x\nFROM build AS test\n\
             FROM 4b\nCOPY --from=build /a /a\nCOPY --from=0 /a /a\nCOPY --from=7 /a /a\n\
             COPY --chown=1 --from=acme/x.y:1 /a /a\nADD --from=later /a /a\n",
            &[],
            &[
                "line 1: FROM golang:1.22",
                "line 4: FROM 4b",
                "line 7: COPY --from=7",
                "line 8: COPY --from=acme/x.y:1",
                "line 9: COPY --from=later",
            ],
        );
        // Stage names are case-insensitive; a stage named like an id is a stage.
        check(
            "FROM busybox AS Cafe\nFROM cafe\nCOPY --from=CAFE /a /a\n",
            &[],
            &["line 1: FROM busybox"],
        );
        // FROM takes no stage index.
        check(
            "FROM busybox\nFROM 0\n",
            &[],
            &["line 1: FROM busybox", "line 2: FROM 0"],
        );
        check(
            "FROM busybox\nRUN --mount=type=bind,from=acme/x.y:1,target=/s cat /s/f\n\
             RUN --mount=type=cache,target=/c true\nRUN --network=none true\n",
            &[],
            &[
                "line 1: FROM busybox",
                "line 2: RUN --mount=from=acme/x.y:1",
            ],
        );
        check(
            "FROM busybox\nONBUILD COPY --from=acme/x.y:1 /a /a\n",
            &[],
            &["line 1: FROM busybox", "line 2: COPY --from=acme/x.y:1"],
        );
    }

    #[test]
    fn lines_comments_and_escapes() {
        check(
            "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM `\n  busybox\n# a comment\n\
             COPY `\n  --from=acme/x.y:1 /a /a\n",
            &[],
            &["line 4: FROM busybox", "line 7: COPY --from=acme/x.y:1"],
        );
        check(
            "from \\\n  debian:12 as base\nFROM base\n",
            &[],
            &["line 1: FROM debian:12"],
        );
    }

    #[test]
    fn args_are_substituted_as_the_engine_does() {
        check(
            "ARG BASE=busybox\nFROM ${BASE}\n",
            &[],
            &["line 2: FROM busybox"],
        );
        check(
            "ARG BASE=busybox\nFROM $BASE:1\n",
            &[("BASE", "acme/x.y")],
            &["line 2: FROM acme/x.y:1"],
        );
        // Only ARGs declared before the first FROM reach FROM; build arguments alone do not.
        check(
            "FROM ${BASE:-busybox}\n",
            &[("BASE", "4b")],
            &["line 1: FROM busybox"],
        );
        check(
            "ARG NS=acme\nARG REF=\"$NS/x.y:1\"\nFROM ${REF}\n",
            &[],
            &["line 3: FROM acme/x.y:1"],
        );
        check(
            "ARG X\nFROM busybox${X:+:}${X}\n",
            &[],
            &["line 2: FROM busybox"],
        );
        check(
            "ARG X\nFROM busybox${X:+:}${X}\n",
            &[("X", "2")],
            &["line 2: FROM busybox:2"],
        );
        // In a stage: its own ARGs, and `ARG X` brings back the value from before FROM.
        check(
            "ARG SRC=acme/x.y:1\nFROM busybox\nARG SRC\nCOPY --from=$SRC /a /a\n\
             FROM busybox\nCOPY --from=${SRC:-none} /a /a\nARG M=4b\nRUN --mount=from=$M true\n",
            &[],
            &[
                "line 2: FROM busybox",
                "line 4: COPY --from=acme/x.y:1",
                "line 5: FROM busybox",
                "line 6: COPY --from=none",
                "line 8: RUN --mount=from=4b",
            ],
        );
        check("FROM 'busy$box'\n", &[], &["line 1: FROM busy$box"]);
        check("FROM busy\\$box\n", &[], &["line 1: FROM busy$box"]);
    }

    #[test]
    fn substitutions_it_cannot_work_out_are_errors() {
        let error = image_uses("ARG B=x\nFROM ${B%x}y\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().contains("cannot work out"), "{error}");
        let error = image_uses("FROM ${B\n", &BTreeMap::new()).unwrap_err();
        assert!(error.to_string().contains("without its"), "{error}");
    }

    #[test]
    fn base_images_have_their_args_substituted() {
        let args = BTreeMap::new();
        assert_eq!(
            base_images("ARG BASE=busybox\nFROM ${BASE}\n", &args),
            ["busybox"]
        );
        assert_eq!(
            base_images(
                "FROM a AS x\nFROM x\nFROM a\nFROM scratch\nFROM gcr.io/b\n",
                &args
            ),
            ["a", "gcr.io/b"]
        );
    }
}
