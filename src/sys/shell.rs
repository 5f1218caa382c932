//! Shell words: the one splitter and the one quoter.
//!
//! Split: as `/bin/sh` splits words, with no expansion at all (single quotes literal,
//! double quotes with `\` escaping only `$` `` ` `` `"` `\` and newline, a bare `\`
//! escaping the next byte). Used for `commonParams`, the command plugin's prefix and
//! suffix, and the fail log. Quote: single quotes around every byte, so whatever a name
//! holds survives `sh` unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Splits `text` into words; the error says which quote is unterminated.
pub fn split(text: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut in_word = false;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                if in_word {
                    words.push(OsString::from_vec(std::mem::take(&mut word)));
                    in_word = false;
                }
            }
            b'\'' => {
                in_word = true;
                let end = text[i + 1..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .ok_or("unterminated single quote")?;
                word.extend_from_slice(&text[i + 1..i + 1 + end]);
                i += end + 1;
            }
            b'"' => {
                in_word = true;
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err("unterminated double quote"),
                        Some(b'"') => break,
                        Some(b'\\') => match text.get(i + 1) {
                            Some(&c @ (b'"' | b'\\' | b'$' | b'`' | b'\n')) => {
                                word.push(c);
                                i += 1;
                            }
                            Some(_) => word.push(b'\\'),
                            None => return Err("unterminated double quote"),
                        },
                        Some(&c) => word.push(c),
                    }
                    i += 1;
                }
            }
            b'\\' => {
                in_word = true;
                if let Some(&c) = text.get(i + 1) {
                    word.push(c);
                    i += 1;
                }
            }
            _ => {
                in_word = true;
                word.push(b);
            }
        }
        i += 1;
    }
    if in_word {
        words.push(OsString::from_vec(word));
    }
    Ok(words)
}

/// [`split`] for text that is UTF-8 to begin with (config attributes).
pub fn split_str(text: &str) -> Result<Vec<String>, &'static str> {
    Ok(split(text.as_bytes())?
        .into_iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect())
}

/// Single-quotes a word for sh: everything is literal inside '...', and a quote
/// itself is written as '\''. Any byte, newline and invalid UTF-8 included, survives.
pub fn quote(word: &OsStr) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 2);
    out.push(b'\'');
    for &b in word.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Words as a person would type them: plain words bare, the others quoted.
pub fn display(words: &[OsString]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=./:@,+%".contains(b));
            if plain {
                w.to_string_lossy().into_owned()
            } else {
                String::from_utf8_lossy(&quote(w)).into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_like_sh_without_expansion() {
        assert_eq!(
            split_str(r#"-artuz --exclude='a b' "--chmod=D755" a\ b "x\y" "q\"" $HOME"#)
                .expect("splits"),
            [
                "-artuz",
                "--exclude=a b",
                "--chmod=D755",
                "a b",
                "x\\y",
                "q\"",
                "$HOME"
            ]
        );
        assert!(split_str("'open").is_err());
        assert!(split_str("\"open").is_err());
        assert_eq!(split_str("").expect("empty"), Vec::<String>::new());
        assert_eq!(split_str("''").expect("empty word"), [""]);
    }

    proptest! {
        /// Any bytes, quoted and split again, are the same single word.
        #[test]
        fn quote_then_split_is_identity(word in proptest::collection::vec(any::<u8>(), 0..60)) {
            let w = OsString::from_vec(word);
            let q = quote(&w);
            prop_assert_eq!(split(&q).expect("parses"), vec![w]);
        }
    }
}
