//! Splitting the kernel command line exactly as the kernel does
//! (lib/cmdline.c `next_arg` and kernel/params.c `parse_args`): words are
//! separated by white space, double quotes group (and are dropped at the
//! start of a value and at the end of a word), there are no other escapes,
//! and `--` ends the kernel's own parameters.

/// One `key` or `key=value` word. The kernel passes bytes, not text: a
/// word that is not valid UTF-8 is kept (lossily converted) and flagged, so
/// that it changes nothing unless it is one of cowroot's own keys, which
/// then refuse it by name (invariant 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
    /// False when the word held bytes that are not UTF-8.
    pub utf8: bool,
}

/// The kernel's `isspace`: ASCII white space including \v and \f, and
/// 0xA0 (Latin-1 no-break space, `_S|_SP` in lib/ctype.c).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | 0xA0)
}

/// Splits a command line into parameters, in order, duplicates kept.
pub fn split(cmdline: &str) -> Vec<Param> {
    split_bytes(cmdline.as_bytes())
}

/// Splits raw command-line bytes (as `/proc/cmdline` holds them).
pub fn split_bytes(bytes: &[u8]) -> Vec<Param> {
    split_with(bytes, Rules { double_dash_ends: true, comments: false })
}

/// Splits one line of a file of command-line words: the kernel's rules,
/// except that `--` is a word like any other (nothing follows it to hand
/// to init) and, with `comments`, a word that starts with `#` (outside
/// double quotes) begins a comment that runs to the end of the line.
pub fn split_line(line: &[u8], comments: bool) -> Vec<Param> {
    split_with(line, Rules { double_dash_ends: false, comments })
}

struct Rules {
    double_dash_ends: bool,
    comments: bool,
}

fn split_with(bytes: &[u8], rules: Rules) -> Vec<Param> {
    let mut params = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() || (rules.comments && bytes[pos] == b'#') {
            break;
        }
        let (param, next) = next_arg(bytes, pos);
        pos = next;
        if rules.double_dash_ends && param.key == "--" && param.value.is_none() {
            // Everything after `--` is handed to init, not to the kernel.
            break;
        }
        params.push(param);
    }
    params
}

/// Reads one word starting at `start`; returns it and where the next begins.
fn next_arg(bytes: &[u8], start: usize) -> (Param, usize) {
    let mut begin = start;
    let mut in_quote = false;
    let mut quoted = false;
    if bytes[begin] == b'"' {
        begin += 1;
        in_quote = true;
        quoted = true;
    }
    // `equals` is relative to `begin`; 0 means "none", as in the kernel, so a
    // word starting with '=' has no value.
    let mut equals = 0;
    let mut i = begin;
    while i < bytes.len() {
        let c = bytes[i];
        if is_space(c) && !in_quote {
            break;
        }
        if equals == 0 && c == b'=' {
            equals = i - begin;
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let end = i;
    // The kernel overwrites a trailing quote of the word with NUL.
    let mut word_end = end;
    let mut value = None;
    if equals != 0 {
        let mut vstart = begin + equals + 1;
        if vstart < end && bytes[vstart] == b'"' {
            vstart += 1;
            if end > begin && bytes[end - 1] == b'"' {
                word_end = end - 1;
            }
        }
        value = Some((vstart, word_end.max(vstart)));
    }
    if quoted && end > begin && bytes[end - 1] == b'"' {
        word_end = word_end.min(end - 1);
        if let Some((vs, _)) = value {
            value = Some((vs, word_end.max(vs)));
        }
    }
    let key_end = if equals != 0 { begin + equals } else { word_end.max(begin) };
    let text = |a: usize, b: usize| String::from_utf8_lossy(&bytes[a..b]).into_owned();
    let utf8 = std::str::from_utf8(&bytes[begin..word_end.max(begin)]).is_ok();
    let param = Param { key: text(begin, key_end), value: value.map(|(a, b)| text(a, b)), utf8 };
    let next = if end < bytes.len() { end + 1 } else { end };
    (param, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param { key: key.into(), value: value.map(Into::into), utf8: !value.unwrap_or("").contains('\u{FFFD}') }
    }

    #[test]
    fn splits_like_the_kernel() {
        let cases: &[(&str, Vec<Param>)] = &[
            ("", vec![]),
            ("   \n", vec![]),
            (
                "BOOT_IMAGE=/vmlinuz root=UUID=1234 ro quiet cowroot=/images/root.img\n",
                vec![
                    p("BOOT_IMAGE", Some("/vmlinuz")),
                    p("root", Some("UUID=1234")),
                    p("ro", None),
                    p("quiet", None),
                    p("cowroot", Some("/images/root.img")),
                ],
            ),
            // Tabs and other white space separate words too.
            (
                "a=1\tb=2\x0bc\x0cd\re",
                vec![p("a", Some("1")), p("b", Some("2")), p("c", None), p("d", None), p("e", None)],
            ),
            // Double quotes group, and are dropped around the value.
            ("cowroot=\"/my images/r.img\" x", vec![p("cowroot", Some("/my images/r.img")), p("x", None)]),
            // A quoted whole word.
            ("\"a=b c\" d", vec![p("a", Some("b c")), p("d", None)]),
            // A quote in the middle stays, and so does the closing one.
            ("k=a\"b c\"", vec![p("k", Some("a\"b c\""))]),
            // Single quotes and backslashes are ordinary characters.
            ("k='a b' j=c\\ d", vec![p("k", Some("'a")), p("b'", None), p("j", Some("c\\")), p("d", None)]),
            // Empty values.
            ("k= j=\"\"", vec![p("k", Some("")), p("j", Some(""))]),
            // Only the first '=' splits.
            ("root=LABEL=a=b", vec![p("root", Some("LABEL=a=b"))]),
            // A word starting with '=' has no value (kernel quirk).
            ("=x y", vec![p("=x", None), p("y", None)]),
            // Duplicates are all kept; the consumer takes the last.
            ("k=1 k=2", vec![p("k", Some("1")), p("k", Some("2"))]),
            // An unterminated quote runs to the end of the line.
            ("k=\"a b\n", vec![p("k", Some("a b\n"))]),
            // `--` ends the kernel's parameters.
            ("a=1 -- cowroot=/x", vec![p("a", Some("1"))]),
            ("a=1 --=3 b", vec![p("a", Some("1")), p("--", Some("3")), p("b", None)]),
            // Non-ASCII bytes pass through...
            ("k=é", vec![p("k", Some("é"))]),
            // ...but the kernel splits at byte 0xA0, even inside UTF-8
            // ("à" is C3 A0), leaving a lone C3 that is not valid UTF-8.
            ("k=voilà x", vec![p("k", Some("voil\u{FFFD}")), p("x", None)]),
        ];
        for (line, want) in cases {
            assert_eq!(&split(line), want, "cmdline {line:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_flagged_per_word() {
        let params = split_bytes(b"quiet x=\xff\xfe cowroot=/a\xc3.img cowpool=/dev/vdb\n");
        assert_eq!(params.len(), 4);
        assert!(params[0].utf8 && params[3].utf8);
        assert!(!params[1].utf8 && !params[2].utf8);
        assert_eq!(params[2].key, "cowroot");
        assert_eq!(params[3], p("cowpool", Some("/dev/vdb")));
    }

    #[test]
    fn lines_of_a_file_split_like_the_kernel_with_comments() {
        let line = |l: &str, comments| split_line(l.as_bytes(), comments);
        let cases: &[(&str, Vec<Param>)] = &[
            ("", vec![]),
            ("# a comment", vec![]),
            ("   # an indented comment cowroot=/x", vec![]),
            ("cowroot.reset=1   # keep it short", vec![p("cowroot.reset", Some("1"))]),
            ("cowroot.reset=1#not-a-comment", vec![p("cowroot.reset", Some("1#not-a-comment"))]),
            ("cowroot=/images/build#3.img", vec![p("cowroot", Some("/images/build#3.img"))]),
            ("cowroot=\"/my images/#1.img\" # the image", vec![p("cowroot", Some("/my images/#1.img"))]),
            ("\"#quoted\" x", vec![p("#quoted", None), p("x", None)]),
            ("a=1 -- b=2", vec![p("a", Some("1")), p("--", None), p("b", Some("2"))]),
            ("a=1\r", vec![p("a", Some("1"))]),
        ];
        for (l, want) in cases {
            assert_eq!(&line(l, true), want, "line {l:?}");
        }
        // Without comments (dracut's cmdline.d), `#` is an ordinary byte.
        assert_eq!(line("# x=1", false), vec![p("#", None), p("x", Some("1"))]);
        assert_eq!(line("a -- b", false), vec![p("a", None), p("--", None), p("b", None)]);
    }
}
